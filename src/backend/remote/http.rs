//! The REST transport: one pooled hyper-util client per endpoint (HTTP/1.1 keep-alive, or h2c
//! with prior knowledge), so connections are reused across batches and instances.

use super::error::{describe, http_status_class, never_reached, UpstreamError};
use super::http_codec::{self, HEADER_LENGTH};
use super::metadata::Metadata;
use super::transport::Reach;
use super::url::path_segment;
use super::Target;
use crate::backend::BatchInput;
use crate::config::{UpstreamUrl, Wire};
use crate::telemetry::trace;
use crate::tensor::Tensor;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

/// An upstream answer larger than this is refused rather than buffered.
const MAX_RESPONSE_BYTES: usize = 1 << 30;
/// Idle pooled connections are closed after this, before most servers would drop them.
const POOL_IDLE: Duration = Duration::from_secs(50);

pub struct HttpTransport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    /// `upstream_headers`, parsed once.
    headers: Vec<(HeaderName, HeaderValue)>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl HttpTransport {
    pub fn new(url: &UpstreamUrl, reach: &Reach<'_>) -> Result<HttpTransport, String> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(reach.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(30)));
        // https:// reaches TLS with ALPN (h2 when the server offers it); plain URLs pass through.
        connector.enforce_http(false);
        let tls = super::tls::client_config(reach.ca_pem.as_deref())
            .map_err(|e| format!("`{}`: {e}", url.label))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .http2_only(url.wire == Wire::H2c)
            .build(connector);
        let headers = reach
            .headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("upstream_headers: `{name}` is not a header name"))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|_| format!("upstream_headers.{name}: not a header value"))?;
                Ok((name, value))
            })
            .collect::<Result<_, String>>()?;
        Ok(HttpTransport {
            client,
            base: url.base.clone(),
            headers,
        })
    }

    pub async fn infer(
        &self,
        target: &Target,
        inputs: &[BatchInput],
        outputs: &[String],
        binary: bool,
    ) -> Result<Vec<Tensor>, UpstreamError> {
        let body =
            http_codec::encode_request(inputs, outputs, binary).map_err(UpstreamError::Protocol)?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.model_path(target, Some("infer")));
        let request = match body.header_length {
            Some(length) => request
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )
                .header(HEADER_LENGTH, length),
            None => request.header(CONTENT_TYPE, HeaderValue::from_static("application/json")),
        };
        let answer = self.send(request, body.bytes).await?;
        if !answer.status.is_success() {
            return Err(status_error(&answer));
        }
        let header_length = match answer.headers.get(HEADER_LENGTH) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| {
                        UpstreamError::Protocol(format!("{HEADER_LENGTH} is not a byte count"))
                    })?,
            ),
        };
        http_codec::decode_response(&answer.body, header_length).map_err(UpstreamError::Protocol)
    }

    /// The model's readiness: any 2xx is ready, anything else is not.
    pub async fn ready(&self, target: &Target) -> Result<bool, UpstreamError> {
        let request = Request::builder().uri(self.model_path(target, Some("ready")));
        Ok(self.send(request, Bytes::new()).await?.status.is_success())
    }

    pub async fn metadata(&self, target: &Target) -> Result<Metadata, UpstreamError> {
        let request = Request::builder().uri(self.model_path(target, None));
        let answer = self.send(request, Bytes::new()).await?;
        if !answer.status.is_success() {
            return Err(status_error(&answer));
        }
        http_codec::decode_metadata(&answer.body).map_err(UpstreamError::Protocol)
    }

    fn model_path(&self, target: &Target, action: Option<&str>) -> String {
        let mut path = format!("{}/v2/models/{}", self.base, path_segment(&target.model));
        if let Some(version) = &target.version {
            path.push_str("/versions/");
            path.push_str(&path_segment(version));
        }
        if let Some(action) = action {
            path.push('/');
            path.push_str(action);
        }
        path
    }

    async fn send(
        &self,
        request: hyper::http::request::Builder,
        body: Bytes,
    ) -> Result<Answer, UpstreamError> {
        let mut request = request;
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        // The request's trace goes on, replacing any fixed value from `upstream_headers`.
        if let (Some((parent, state)), Some(headers)) = (trace::outgoing(), request.headers_mut()) {
            if let Ok(value) = HeaderValue::from_str(&parent) {
                headers.insert(HeaderName::from_static(trace::TRACEPARENT), value);
            }
            if let Some(value) = state.and_then(|s| HeaderValue::from_str(&s).ok()) {
                headers.insert(HeaderName::from_static(trace::TRACESTATE), value);
            }
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Protocol(format!("cannot build the request: {e}")))?;
        let response = self.client.request(request).await.map_err(|error| {
            if never_reached(&error) {
                UpstreamError::NotSent(describe(&error))
            } else {
                UpstreamError::Transport(describe(&error))
            }
        })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                UpstreamError::Transport(format!("reading the answer: {}", describe(&*e)))
            })?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

fn status_error(answer: &Answer) -> UpstreamError {
    UpstreamError::Status {
        class: http_status_class(answer.status.as_u16()),
        code: answer.status.as_u16().to_string(),
        message: http_codec::error_message(&answer.body),
    }
}
