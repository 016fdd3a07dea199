//! `/v1/batches`: deferred jobs over HTTP. A tenant submits with its API key as for inference
//! and sees its own jobs; the admin token sees and cancels every job.

use super::limits::BodyBudget;
use super::{credentials, error_response, json_response, method_not_allowed, read_body, Body};
use crate::api::deferred;
use crate::gateway::{Error, Gateway};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};

/// What a `/v1/batches` request needs of the front end.
pub(super) struct BatchRoute<'a> {
    pub gateway: &'a Gateway,
    pub budget: &'a BodyBudget,
    /// The path below `/v1/batches`.
    pub rest: &'a [&'a str],
}

pub(super) async fn route(
    route: BatchRoute<'_>,
    parts: &hyper::http::request::Parts,
    body: Incoming,
) -> Response<Body> {
    let method = &parts.method;
    let gateway = route.gateway;
    // The job store blocks; this worker thread lets the runtime know.
    use tokio::task::block_in_place as blocking;
    let answer = match (route.rest, method) {
        ([], &Method::POST) => submit(&route, parts, body).await,
        ([], _) => return method_not_allowed(method, &Method::POST),
        ([id], &Method::GET) => {
            blocking(|| reader(&route, parts, id).map(|job| ok(deferred::view(&job))))
        }
        ([id], &Method::DELETE) => blocking(|| {
            reader(&route, parts, id)
                .and_then(|job| deferred::cancel(gateway, &job))
                .map(|job| ok(deferred::view(&job)))
        }),
        ([_], _) => return method_not_allowed(method, &Method::GET),
        ([id, "results"], &Method::GET) => blocking(|| {
            reader(&route, parts, id)
                .and_then(|job| deferred::results(gateway, &job))
                .map(ndjson)
        }),
        ([_, "results"], _) => return method_not_allowed(method, &Method::GET),
        _ => Err(Error::NotFound(format!(
            "no such endpoint: /v1/batches/{}",
            route.rest.join("/")
        ))),
    };
    answer.unwrap_or_else(|error| error_response(&error))
}

async fn submit(
    route: &BatchRoute<'_>,
    parts: &hyper::http::request::Parts,
    body: Incoming,
) -> Result<Response<Body>, Error> {
    let gateway = route.gateway;
    // Submitted as its tenant, exactly as an inference call would be.
    let caller = gateway.caller(&credentials(&parts.headers), None)?;
    let limit = gateway.config.server.max_body_bytes.as_usize();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    let (body, _share) = read_body(body, declared, limit, route.budget).await?;
    let job = tokio::task::block_in_place(|| deferred::submit(gateway, &caller, &body))?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({"id": job.id, "status": job.status, "total": job.total}),
    ))
}

/// The job `id` as the caller may read it: the admin token, or the key of the job's tenant.
fn reader(
    route: &BatchRoute<'_>,
    parts: &hyper::http::request::Parts,
    id: &str,
) -> Result<crate::metering::ledger::jobs::Job, Error> {
    let credentials = credentials(&parts.headers);
    let identities = route.gateway.metering.identities();
    let caller = identities.admin_caller(credentials.bearer.as_deref())?;
    deferred::find(route.gateway, &caller, id)
}

fn ok(value: serde_json::Value) -> Response<Body> {
    json_response(StatusCode::OK, &value)
}

fn ndjson(body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}
