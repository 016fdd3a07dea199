//! Checks a decoded request against the model's own spec and turns it into a batch job. Every
//! message names the field and what was expected, because it goes straight back to the caller.

use super::{Model, RequestError};
use crate::batch::{BatchGroup, Job};
use crate::config::{Wire, DEFERRED_LANE, PRIORITY_LEVELS};
use crate::request::InferRequest;
use crate::tensor::{strings, DataType, Tensor};
use std::time::Duration;
use tokio::time::Instant;

/// A request that passed every check, ready for the cache and the batcher.
#[derive(Debug)]
pub struct Prepared {
    pub job: Job,
    /// Output names the caller asked for, in its order; `None`: all, in the model's order.
    pub outputs: Option<Vec<String>>,
}

pub fn prepare(model: &Model, request: InferRequest) -> Result<Prepared, RequestError> {
    let spec = &model.spec;
    let mut ordered: Vec<Option<Tensor>> = vec![None; spec.inputs.len()];
    for (index, tensor) in request.inputs.into_iter().enumerate() {
        let Some(slot) = spec.inputs.iter().position(|s| s.name == tensor.name) else {
            return Err(RequestError::invalid(
                format!("inputs[{index}].name"),
                format!(
                    "model `{}` has no input `{}`; its inputs are: {}",
                    model.name,
                    tensor.name,
                    names(spec.inputs.iter().map(|s| s.name.as_str()))
                ),
            ));
        };
        if ordered[slot].is_some() {
            return Err(RequestError::invalid(
                format!("inputs[{index}].name"),
                format!("input `{}` is given twice", tensor.name),
            ));
        }
        check_tensor(model, &spec.inputs[slot], &tensor)?;
        ordered[slot] = Some(tensor);
    }
    let mut inputs = Vec::with_capacity(ordered.len());
    for (slot, tensor) in ordered.into_iter().enumerate() {
        let wanted = &spec.inputs[slot];
        inputs.push(tensor.ok_or_else(|| {
            RequestError::invalid(
                "inputs",
                format!(
                    "missing input `{}` ({} {:?})",
                    wanted.name, wanted.dtype, wanted.shape
                ),
            )
        })?);
    }
    let rows = batch_rows(model, &inputs)?;
    let outputs = requested_outputs(model, request.outputs)?;
    let priority = match request.options.priority {
        // Set by the gateway for a job's row, never read off the wire.
        _ if request.options.deferred => DEFERRED_LANE,
        None => model.default_priority,
        Some(p) if (1..=PRIORITY_LEVELS).contains(&p) => p,
        Some(p) => {
            return Err(RequestError::invalid(
                "parameters.priority",
                format!("{p} is not a lane; use 1 (highest) to {PRIORITY_LEVELS}"),
            ))
        }
    };
    let timeout_us = match (model.default_timeout_us, request.options.timeout_us) {
        (0, requested) => requested,
        (default, Some(requested)) => Some(requested.min(default)),
        (default, None) => Some(default),
    };
    let deadline = timeout_us.map(|us| Instant::now() + Duration::from_micros(us));
    let group = batch_group(model, &inputs);
    Ok(Prepared {
        job: Job {
            inputs,
            rows,
            group,
            priority,
            deadline,
        },
        outputs,
    })
}

fn check_tensor(
    model: &Model,
    spec: &crate::spec::TensorSpec,
    tensor: &Tensor,
) -> Result<(), RequestError> {
    let field = |what: &str| format!("inputs[`{}`].{what}", tensor.name);
    if tensor.dtype != spec.dtype {
        return Err(RequestError::invalid(
            field("datatype"),
            format!("got {}, the model expects {}", tensor.dtype, spec.dtype),
        ));
    }
    let mismatch = |detail: String| {
        RequestError::invalid(
            field("shape"),
            format!(
                "{:?} does not match the model's {:?}: {detail}",
                tensor.shape, spec.shape
            ),
        )
    };
    if tensor.shape.len() != spec.shape.len() {
        return Err(mismatch(format!(
            "expected {} dimensions",
            spec.shape.len()
        )));
    }
    for (index, (&got, &want)) in tensor.shape.iter().zip(&spec.shape).enumerate() {
        if got == 0 {
            return Err(mismatch(format!("dimension {index} is 0")));
        }
        if want >= 0 && got as i64 != want {
            return Err(mismatch(format!("dimension {index} must be {want}")));
        }
    }
    let count = Tensor::element_count(&tensor.shape)
        .ok_or_else(|| mismatch("too many elements".to_string()))?;
    if tensor.dtype == DataType::Bytes {
        return check_strings(model, tensor, count)
            .map_err(|why| RequestError::invalid(field("data"), why));
    }
    Tensor::check_data(tensor.dtype, &tensor.shape, &tensor.data)
        .map_err(|why| RequestError::invalid(field("data"), why))
}

/// BYTES elements: whole, within the element limit, and text where the model's engine needs
/// text: ONNX Runtime's string tensors are NUL-terminated UTF-8, and a REST upstream sent JSON
/// gets JSON strings. Checked here, per request, because an element the engine refused would
/// fail every request of its batch.
fn check_strings(model: &Model, tensor: &Tensor, count: usize) -> Result<(), String> {
    strings::check(&tensor.data, count, model.max_element_bytes)?;
    let config = &model.config;
    let (text, no_nul) = match &model.upstream {
        None => (true, true),
        Some(_) => {
            let json = !config.upstream_binary
                && config.upstreams.iter().any(|url| url.wire != Wire::Grpc);
            (json, false)
        }
    };
    if !text {
        return Ok(());
    }
    let engine = if no_nul {
        "an ONNX string tensor"
    } else {
        "JSON to the upstream"
    };
    for (index, element) in strings::elements(&tensor.data).enumerate() {
        let element = element?;
        if std::str::from_utf8(element).is_err() {
            return Err(format!(
                "element {index} is not UTF-8, which {engine} needs"
            ));
        }
        if no_nul && element.contains(&0) {
            return Err(format!(
                "element {index} holds a NUL byte, which {engine} cannot"
            ));
        }
    }
    Ok(())
}

/// Rows this request brings to a batch: the shared first dimension when batching, else 1.
fn batch_rows(model: &Model, inputs: &[Tensor]) -> Result<usize, RequestError> {
    if !model.batching {
        return Ok(1);
    }
    let rows = inputs.first().map_or(1, |t| t.shape[0]);
    if let Some(other) = inputs.iter().find(|t| t.shape[0] != rows) {
        return Err(RequestError::invalid(
            format!("inputs[`{}`].shape", other.name),
            format!(
                "first dimension {} differs from the other inputs' {rows}; it is the batch dimension",
                other.shape[0]
            ),
        ));
    }
    if rows > model.max_batch_size {
        return Err(RequestError::invalid(
            "inputs.shape",
            format!(
                "{rows} rows exceed the model's max_batch_size of {}",
                model.max_batch_size
            ),
        ));
    }
    Ok(rows)
}

fn requested_outputs(
    model: &Model,
    requested: Vec<String>,
) -> Result<Option<Vec<String>>, RequestError> {
    if requested.is_empty() {
        return Ok(None);
    }
    for (index, name) in requested.iter().enumerate() {
        if model.spec.output(name).is_none() {
            return Err(RequestError::invalid(
                format!("outputs[{index}].name"),
                format!(
                    "model `{}` has no output `{name}`; its outputs are: {}",
                    model.name,
                    names(model.spec.outputs.iter().map(|o| o.name.as_str()))
                ),
            ));
        }
    }
    Ok(Some(requested))
}

/// Requests batch together only if everything but the first dimension agrees. Datatypes, ranks
/// and fixed dimensions are the spec's, already checked; only the dimensions the model leaves
/// open can differ, so those are the group, compared exactly.
fn batch_group(model: &Model, inputs: &[Tensor]) -> BatchGroup {
    let open: Vec<usize> = model
        .spec
        .inputs
        .iter()
        .zip(inputs)
        .flat_map(|(spec, tensor)| {
            spec.shape
                .iter()
                .zip(&tensor.shape)
                .skip(1)
                .filter(|(declared, _)| **declared == -1)
                .map(|(_, &dim)| dim)
        })
        .collect();
    BatchGroup::of_open_dims(open)
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}
