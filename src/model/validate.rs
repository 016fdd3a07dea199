//! Checks a decoded request against the model's own spec and turns it into a batch job. Every
//! message names the field and what was expected, because it goes straight back to the caller.

use super::{Model, RequestError};
use crate::batch::{BatchGroup, Job};
use crate::config::PRIORITY_LEVELS;
use crate::request::InferRequest;
use crate::tensor::{DataType, Tensor};
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
        check_tensor(&spec.inputs[slot], &tensor)?;
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

fn check_tensor(spec: &crate::spec::TensorSpec, tensor: &Tensor) -> Result<(), RequestError> {
    let field = |what: &str| format!("inputs[`{}`].{what}", tensor.name);
    if tensor.dtype == DataType::Bytes {
        return Err(RequestError::invalid(
            field("datatype"),
            "BYTES (string) tensors are not supported yet",
        ));
    }
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
    let element_size = spec.dtype.element_size().unwrap_or(1);
    let expected = Tensor::element_count(&tensor.shape)
        .and_then(|n| n.checked_mul(element_size))
        .ok_or_else(|| mismatch("too many elements".to_string()))?;
    if tensor.data.len() != expected {
        return Err(RequestError::invalid(
            field("data"),
            format!(
                "shape {:?} of {} needs {expected} bytes, got {}",
                tensor.shape,
                tensor.dtype,
                tensor.data.len()
            ),
        ));
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
