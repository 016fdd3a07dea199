//! One endpoint's wire: REST (HTTP/1.1, h2c, or HTTPS) or gRPC (plain or TLS), behind the
//! three calls the remote engine needs. An enum rather than a trait object, because there are
//! exactly two.

use super::error::UpstreamError;
use super::grpc::GrpcTransport;
use super::http::HttpTransport;
use super::metadata::Metadata;
use super::UpstreamSettings;
use super::{Call, Target};
use crate::config::{UpstreamHeaders, UpstreamUrl, Wire};
use crate::tensor::Tensor;
use std::time::Duration;

pub enum Transport {
    Http(HttpTransport),
    Grpc(GrpcTransport),
}

/// How an endpoint is reached beyond its URL.
pub struct Reach<'a> {
    pub connect_timeout: Duration,
    /// The CA bundle's PEM text for a TLS endpoint (`None`: the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    pub headers: &'a UpstreamHeaders,
}

impl Transport {
    /// Must be called inside the tokio runtime that will drive the connections.
    pub fn new(url: &UpstreamUrl, settings: &UpstreamSettings) -> Result<Transport, String> {
        let ca_pem = match (&settings.ca_path, url.tls) {
            (Some(path), true) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("upstream_ca_path {}: {e}", path.display()))?,
            ),
            _ => None,
        };
        let reach = Reach {
            connect_timeout: settings.connect_timeout,
            ca_pem,
            headers: &settings.headers,
        };
        Ok(match url.wire {
            Wire::Http1 | Wire::H2c => Transport::Http(HttpTransport::new(url, &reach)?),
            Wire::Grpc => Transport::Grpc(GrpcTransport::new(url, &reach)?),
        })
    }

    /// Runs one batch. `call.binary` picks the REST body encoding (gRPC always sends raw
    /// bytes); `call.timeout` is passed on where the protocol carries it, and the caller
    /// enforces it either way.
    pub async fn infer(&self, call: &Call<'_>) -> Result<Vec<Tensor>, UpstreamError> {
        match self {
            Transport::Http(http) => {
                http.infer(call.target, call.inputs, call.outputs, call.binary)
                    .await
            }
            Transport::Grpc(grpc) => {
                grpc.infer(call.target, call.inputs, call.outputs, call.timeout)
                    .await
            }
        }
    }

    pub async fn ready(&self, target: &Target) -> Result<bool, UpstreamError> {
        match self {
            Transport::Http(http) => http.ready(target).await,
            Transport::Grpc(grpc) => grpc.ready(target).await,
        }
    }

    pub async fn metadata(&self, target: &Target) -> Result<Metadata, UpstreamError> {
        match self {
            Transport::Http(http) => http.metadata(target).await,
            Transport::Grpc(grpc) => grpc.metadata(target).await,
        }
    }
}
