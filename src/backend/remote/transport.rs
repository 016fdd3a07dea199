//! One endpoint's wire: REST (HTTP/1.1 or h2c) or gRPC, behind the three calls the remote
//! engine needs. An enum rather than a trait object, because there are exactly two.

use super::error::UpstreamError;
use super::grpc::GrpcTransport;
use super::http::HttpTransport;
use super::metadata::Metadata;
use super::{Call, Target};
use crate::config::{UpstreamUrl, Wire};
use crate::tensor::Tensor;
use std::time::Duration;

pub enum Transport {
    Http(HttpTransport),
    Grpc(GrpcTransport),
}

impl Transport {
    /// Must be called inside the tokio runtime that will drive the connections.
    pub fn new(url: &UpstreamUrl, connect_timeout: Duration) -> Result<Transport, String> {
        Ok(match url.wire {
            Wire::Http1 | Wire::H2c => Transport::Http(HttpTransport::new(url, connect_timeout)),
            Wire::Grpc => Transport::Grpc(GrpcTransport::new(url, connect_timeout)?),
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
