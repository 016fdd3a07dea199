//! The KServe V2 REST front end on hyper (HTTP/1.1 keep-alive and h2c on one port), plus
//! `/metrics` and the admin endpoints under `/v1`.

mod admin;
mod batches;
mod dashboard;
pub mod infer;
pub mod memo;
mod models;
mod reader;
mod rightsizing;

use crate::api::limits::{self, BodyBudget, BodyShare, Limits};
use crate::api::tls::Tls;
use crate::api::{metadata, status};
use crate::gateway::Error;
use crate::gateway::{Credentials, Gateway, Protocol};
use crate::request::InferResponse;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use memo::{BodyId, BodyMemo};
use serde_json::json;
use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub(super) type Body = Full<Bytes>;

const INFERENCE_HEADER: &str = "inference-header-content-length";

/// Accepts connections until shutdown, then lets open requests finish within the grace period.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: Shutdown,
    tls: Option<Arc<Tls>>,
) {
    let limits = Limits::of(&gateway.config.server);
    let builder = connection_builder(&limits);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let grace = Duration::from_millis(gateway.config.server.shutdown_grace_ms);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    let memo = gateway
        .cache
        .as_ref()
        .and_then(|_| BodyMemo::new(gateway.config.cache.body_memo_entries))
        .map(Arc::new);
    let budget = Arc::new(BodyBudget::new(
        gateway.config.server.max_body_bytes_in_flight.as_usize(),
    ));
    loop {
        let accepted = tokio::select! {
            accepted = limits::accept(&listener, &open) => accepted,
            _ = &mut stop => break,
        };
        let stream = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // Running out of file descriptors must not end the server; back off briefly.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let gateway = gateway.clone();
        let memo = memo.clone();
        let budget = budget.clone();
        let service = hyper::service::service_fn(move |request| {
            let gateway = gateway.clone();
            let memo = memo.clone();
            let budget = budget.clone();
            async move {
                let front = Front {
                    gateway: &gateway,
                    memo: memo.as_deref(),
                    budget: &budget,
                };
                Ok::<_, Infallible>(route(front, request).await)
            }
        });
        let Some(tls) = &tls else {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection.into_owned());
            tokio::spawn(async move {
                let _ = connection.await;
            });
            continue;
        };
        // The handshake runs on the connection's own task, bounded like a request head, so a
        // client that stalls in it holds nothing but its permit until then.
        let acceptor = tls.acceptor();
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let handshake_limit = limits.header_read_timeout;
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_limit, acceptor.accept(stream)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let _ = watcher.watch(connection.into_owned()).await;
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the grace period; closing them");
    }
}

/// HTTP/1.1 and h2c on one port, with `[server]`'s timers and HTTP/2 settings. The header
/// timer runs whenever a connection waits for a request head, so it also closes idle
/// keep-alive connections.
fn connection_builder(limits: &Limits) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits::MAX_HEADER_LIST_BYTES)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits::KEEPALIVE_TIMEOUT);
    builder
}

/// Paths are at most this many segments deep; a longer one matches no route.
const MAX_SEGMENTS: usize = 8;

/// What every request on the HTTP port shares.
struct Front<'a> {
    gateway: &'a Gateway,
    memo: Option<&'a BodyMemo>,
    budget: &'a BodyBudget,
}

async fn route(front: Front<'_>, request: Request<Incoming>) -> Response<Body> {
    let Front {
        gateway,
        memo,
        budget,
    } = front;
    // Split, so the path can be borrowed while the body moves on to the handler.
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    // Segments are percent-decoded (`my%20model` names `my model`); one that does not decode
    // to UTF-8 names nothing we serve.
    let mut decoded: [Cow<'_, str>; MAX_SEGMENTS] = Default::default();
    let mut depth = 0;
    for segment in path.trim_matches('/').split('/') {
        if depth == MAX_SEGMENTS {
            return not_found(path);
        }
        match percent_encoding::percent_decode_str(segment).decode_utf8() {
            Ok(text) => decoded[depth] = text,
            Err(_) => return not_found(path),
        }
        depth += 1;
    }
    let segments: [&str; MAX_SEGMENTS] = std::array::from_fn(|i| decoded[i].as_ref());
    let method = &parts.method;
    match (&segments[..depth], method) {
        (["v2", "health", "live"], &Method::GET) => {
            json_response(StatusCode::OK, &json!({"live": true}))
        }
        (["v2", "health", "ready"], &Method::GET) => {
            json_response(StatusCode::OK, &json!({"ready": true}))
        }
        (["v2"], &Method::GET) => json_response(
            StatusCode::OK,
            &json!({"name": metadata::SERVER_NAME, "version": metadata::SERVER_VERSION, "extensions": metadata::EXTENSIONS}),
        ),
        // Every model's statistics, as Triton answers them (a model named "stats" keeps its
        // own routes below it).
        (["v2", "models", "stats"], &Method::GET) => models::statistics(gateway, "", None),
        (["v2", "models", model, rest @ ..], _) => {
            let (version, action) = match rest {
                ["versions", version, action @ ..] => (Some(*version), action),
                action => (None, action),
            };
            match (action, method) {
                ([], &Method::GET) => models::metadata(gateway, model, version),
                (["stats"], &Method::GET) => models::statistics(gateway, model, version),
                (["ready"], &Method::GET) => models::ready(gateway, model, version),
                (["infer"], &Method::POST) => {
                    let route = InferRoute {
                        budget,
                        gateway,
                        memo,
                        model,
                        version,
                    };
                    infer(route, &parts, body).await
                }
                ([] | ["ready"] | ["stats"], _) => method_not_allowed(method, &Method::GET),
                (["infer"], _) => method_not_allowed(method, &Method::POST),
                _ => not_found(path),
            }
        }
        (["metrics"], &Method::GET) => {
            if let Some(cache) = &gateway.cache {
                cache.report();
            }
            gateway.models.snapshot().report();
            let mut response = Response::new(Body::from(crate::telemetry::render()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        (["dashboard", rest @ ..], &Method::GET) => {
            dashboard::serve(gateway, rest).unwrap_or_else(|| not_found(path))
        }
        (["v1", "batches", rest @ ..], _) => {
            let route = batches::BatchRoute {
                gateway,
                budget,
                rest,
            };
            batches::route(route, &parts, body).await
        }
        (["v1", rest @ ..], _) => {
            let credentials = credentials(&parts.headers);
            match admin::route(gateway, method, rest, parts.uri.query(), &credentials).await {
                Some(response) => response,
                None => not_found(path),
            }
        }
        (["v2", "health", "live" | "ready"] | ["v2"] | ["metrics"] | ["dashboard", ..], _) => {
            method_not_allowed(method, &Method::GET)
        }
        _ => not_found(path),
    }
}

/// Where an infer request goes: the model and version from its path, and what serves it.
struct InferRoute<'a> {
    budget: &'a BodyBudget,
    gateway: &'a Gateway,
    memo: Option<&'a BodyMemo>,
    model: &'a str,
    version: Option<&'a str>,
}

async fn infer(
    route: InferRoute<'_>,
    parts: &hyper::http::request::Parts,
    body: Incoming,
) -> Response<Body> {
    let http1 = parts.version < hyper::Version::HTTP_2;
    match infer_inner(route, parts, body).await {
        Ok(response) => response,
        Err(error) => {
            let mut response = error_response(&error);
            // A body refused for its size, or for want of budget, is left unread; the
            // connection cannot carry another request.
            if http1
                && matches!(
                    error,
                    Error::BodyTooLarge { .. } | Error::BodiesInFlight { .. }
                )
            {
                response
                    .headers_mut()
                    .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}

/// Reads a body within `limit`, holding its share of the budget from before the first byte
/// (its declared length) or frame by frame (none declared), until the caller drops the share.
async fn read_body(
    body: Incoming,
    declared: Option<u64>,
    limit: usize,
    budget: &BodyBudget,
) -> Result<(Bytes, BodyShare), Error> {
    let refused = || Error::BodiesInFlight {
        limit: budget.limit(),
    };
    let mut share = budget.share();
    if !budget.cover(&mut share, declared.unwrap_or(0)) {
        return Err(refused());
    }
    let mut body = Limited::new(body, limit);
    // Most bodies come in one frame, kept as it came; more are copied together.
    let mut first: Option<Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    let mut length = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Error::BodyTooLarge { limit }
            } else {
                Error::Decode(format!("body: could not be read: {error}"))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        length += data.len();
        if !budget.cover(&mut share, length as u64) {
            return Err(refused());
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(earlier) => {
                joined.reserve(length);
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
        }
    }
    let body = match first {
        Some(only) => only,
        None => joined.freeze(),
    };
    Ok((body, share))
}

async fn infer_inner(
    route: InferRoute<'_>,
    parts: &hyper::http::request::Parts,
    body: Incoming,
) -> Result<Response<Body>, Error> {
    let InferRoute {
        gateway,
        memo,
        budget: route_budget,
        model,
        version,
    } = route;
    let limit = gateway.config.server.max_body_bytes.as_usize();
    let headers = &parts.headers;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    let header_length = match headers.get(HeaderName::from_static(INFERENCE_HEADER)) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    Error::Decode("Inference-Header-Content-Length: must be a byte count".into())
                })?,
        ),
    };
    let cache_control = cache_control(headers);
    let credentials = credentials(headers);
    let (body, _share) = read_body(body, declared, limit, route_budget).await?;
    // A client's cache directives change what the cache may do: such a request takes the
    // whole path, and neither uses nor leaves a memo entry.
    let body_id = BodyId {
        model,
        version,
        header_length,
        body: &body,
    };
    let memo = memo
        .filter(|_| cache_control.is_none())
        .map(|memo| (memo, memo.fingerprint(&body_id)));
    if let Some((memo, fingerprint)) = memo {
        if let Some(remembered) = memo.find(fingerprint, &body_id) {
            let recalled = gateway
                .infer_recalled(&remembered.recall, Protocol::Http, &credentials)
                .await;
            if let Some(result) = recalled {
                return Ok(infer_response(&result?.response, &remembered.encoding));
            }
        }
    }
    let decoded = infer::decode(model, version, &body, header_length);
    if decoded.is_err() {
        // A body that cannot be read for a model that does not exist: the model is the
        // first thing wrong with it.
        gateway.model(model, version)?;
    }
    let (mut core_request, encoding) = decoded?;
    if let Some((lookup, store)) = cache_control {
        core_request.options.cache.lookup &= lookup;
        core_request.options.cache.store &= store;
    }
    core_request.options.recall = memo.is_some();
    let response = gateway
        .infer(core_request, Protocol::Http, &credentials)
        .await?;
    let http = infer_response(&response.response, &encoding);
    if let (Some((memo, fingerprint)), Some(recall)) = (memo, response.recall) {
        memo.remember(fingerprint, &body_id, recall, encoding);
    }
    Ok(http)
}

fn infer_response(response: &InferResponse, encoding: &infer::OutputEncoding) -> Response<Body> {
    let (body, json_length) = infer::encode(response, encoding);
    let mut http = Response::new(Body::from(body));
    let headers = http.headers_mut();
    // Sized once for the content type, its length header and the seven served headers.
    headers.reserve(9);
    match json_length {
        Some(length) => {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(
                HeaderName::from_static(INFERENCE_HEADER),
                HeaderValue::from(length),
            );
        }
        None => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    served_headers(headers, response);
    http
}

/// What a request says of its caller besides `Authorization`: tags and W3C trace context.
static CALLER_NAMES: [HeaderName; 3] = [
    HeaderName::from_static("x-tollgate-tags"),
    HeaderName::from_static(crate::telemetry::trace::TRACEPARENT),
    HeaderName::from_static(crate::telemetry::trace::TRACESTATE),
];

fn credentials(headers: &hyper::HeaderMap) -> Credentials {
    // Typed names, made once: a `&str` name is parsed and validated again on every lookup.
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let [tags, traceparent, tracestate] = &CALLER_NAMES;
    let mut credentials =
        crate::api::params::credentials(text(&hyper::header::AUTHORIZATION), text(tags));
    credentials.trace = crate::api::params::trace(text(traceparent), text(tracestate));
    credentials
}

/// `Cache-Control: no-cache` skips the lookup, `no-store` the store (as (lookup, store)).
fn cache_control(headers: &hyper::HeaderMap) -> Option<(bool, bool)> {
    let value = headers.get(hyper::header::CACHE_CONTROL)?.to_str().ok()?;
    let directives: Vec<String> = value
        .split(',')
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    Some((
        !directives.iter().any(|d| d == "no-cache"),
        !directives.iter().any(|d| d == "no-store"),
    ))
}

/// Built at compile time: `from_static` at run time validates the name on every response.
static SERVED_NAMES: [HeaderName; 7] = [
    HeaderName::from_static("x-tollgate-cache"),
    HeaderName::from_static("x-tollgate-request-id"),
    HeaderName::from_static("x-tollgate-batch-size"),
    HeaderName::from_static("x-tollgate-queue-us"),
    HeaderName::from_static("x-tollgate-compute-us"),
    HeaderName::from_static("x-tollgate-cost-usd"),
    HeaderName::from_static("x-tollgate-saved-usd"),
];

fn served_headers(headers: &mut hyper::HeaderMap, response: &InferResponse) {
    let served = &response.served;
    headers.insert(
        SERVED_NAMES[0].clone(),
        HeaderValue::from_static(served.cache.as_str()),
    );
    // The other six values are written into one buffer that their headers then share: one
    // allocation instead of one per header, on every response.
    let mut text = Vec::with_capacity(96);
    let mut ends = [0; 6];
    text.extend_from_slice(served.request_id.as_bytes());
    ends[0] = text.len();
    for (end, count) in
        ends[1..4]
            .iter_mut()
            .zip([served.batch_rows as u64, served.queue_us, served.compute_us])
    {
        let _ = serde_json::to_writer(&mut text, &count);
        *end = text.len();
    }
    for (end, usd) in ends[4..]
        .iter_mut()
        .zip([served.cost_usd, served.saved_usd])
    {
        // Prices are finite by construction; a non-finite one would be written as `null`.
        if usd.is_finite() {
            let _ = serde_json::to_writer(&mut text, &usd);
        }
        *end = text.len();
    }
    let text = Bytes::from(text);
    let mut start = 0;
    for (name, end) in SERVED_NAMES[1..].iter().zip(ends) {
        // A value that cannot be a header leaves its header out rather than failing the answer.
        if end > start {
            if let Ok(value) = HeaderValue::from_maybe_shared(text.slice(start..end)) {
                headers.insert(name.clone(), value);
            }
        }
        start = end;
    }
    // Only on the rare answer that had to load its model again.
    if served.cold_start_us > 0 {
        headers.insert(
            HeaderName::from_static("x-tollgate-cold-start-us"),
            HeaderValue::from(served.cold_start_us),
        );
    }
    if let Some(value) = served
        .variant
        .as_ref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(HeaderName::from_static("x-tollgate-variant"), value);
    }
}

pub(super) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn error_response(error: &Error) -> Response<Body> {
    let mut response = json_response(
        status::http_status(error),
        &json!({"error": error.to_string()}),
    );
    if let Some(seconds) = status::retry_after_seconds(error) {
        response
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn not_found(path: &str) -> Response<Body> {
    error_response(&Error::NotFound(format!("no such endpoint: {path}")))
}

/// A 405 names the method it does answer, in `Allow` as the protocol wants.
fn method_not_allowed(method: &Method, allowed: &Method) -> Response<Body> {
    let mut response = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": format!("{method} is not allowed here; use {allowed}")}),
    );
    if let Ok(value) = HeaderValue::from_str(allowed.as_str()) {
        response.headers_mut().insert(hyper::header::ALLOW, value);
    }
    response
}
