//! The model routes of the REST front end: metadata, Triton's statistics extension, readiness.

use super::{error_response, json_response, Body};
use crate::api::{metadata, statistics};
use crate::gateway::Gateway;
use hyper::{Response, StatusCode};
use serde_json::json;

pub(super) fn metadata(gateway: &Gateway, name: &str, version: Option<&str>) -> Response<Body> {
    let model = match gateway.model(name, version) {
        Ok(model) => model,
        Err(error) => return error_response(&error),
    };
    let describe = |tensors: Vec<metadata::TensorMetadata>| {
        tensors
            .into_iter()
            .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
            .collect::<Vec<_>>()
    };
    json_response(
        StatusCode::OK,
        &json!({
            "name": model.name,
            "versions": gateway.models.snapshot().versions(&model.name),
            "platform": metadata::PLATFORM,
            "inputs": describe(metadata::inputs(&model)),
            "outputs": describe(metadata::outputs(&model)),
            "parameters": {
                "execution_provider": model.provider,
                "device": model.device.to_string(),
                "max_batch_size": model.max_batch_size,
                "batching": model.batching,
            },
        }),
    )
}

pub(super) fn statistics(gateway: &Gateway, name: &str, version: Option<&str>) -> Response<Body> {
    match statistics::collect(gateway, name, version) {
        Ok(answer) => json_response(StatusCode::OK, &statistics::to_json(&answer)),
        Err(error) => error_response(&error),
    }
}

pub(super) fn ready(gateway: &Gateway, name: &str, version: Option<&str>) -> Response<Body> {
    match gateway.model(name, version) {
        Ok(model) if model.is_ready() => {
            json_response(StatusCode::OK, &json!({"name": model.name, "ready": true}))
        }
        // Any non-200 means not ready; 503 says it may come back.
        Ok(model) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"name": model.name, "ready": false}),
        ),
        Err(error) => error_response(&error),
    }
}
