//! The response of an answered request: the outputs asked for, cut from the cached value, and
//! what serving it cost or saved (a hit saves what its computation cost).

use crate::cache::value::CachedValue;
use crate::model::Model;
use crate::request::{CacheStatus, InferResponse, Outputs, Served};
use smol_str::SmolStr;
use std::sync::Arc;

/// An answer, and where it came from, before it becomes a response.
pub(super) struct Answered<'a> {
    pub value: Arc<CachedValue>,
    pub status: CacheStatus,
    pub rows: usize,
    /// The outputs asked for (`None`: all of the model's).
    pub outputs: Option<&'a [String]>,
}

pub(super) fn answer(
    model: &Model,
    answered: Answered<'_>,
    id: Option<String>,
    request_id: String,
) -> InferResponse {
    let Answered {
        value,
        status,
        rows,
        outputs,
    } = answered;
    let computed_here = matches!(status, CacheStatus::Miss | CacheStatus::Bypass);
    let served = Served {
        request_id,
        cache: status,
        rows,
        batch_rows: if computed_here {
            value.batch_rows as usize
        } else {
            0
        },
        queue_us: if computed_here { value.queue_us } else { 0 },
        compute_us: if computed_here { value.compute_us } else { 0 },
        cost_usd: if computed_here { value.cost_usd } else { 0.0 },
        saved_usd: if computed_here { 0.0 } else { value.cost_usd },
        cold_start_us: if computed_here {
            value.cold_start_us
        } else {
            0
        },
        device: model.text.device.clone(),
        variant: match &model.variant {
            Some(of) => Some(of.name.clone()),
            None => (!model.variants.is_empty())
                .then(|| SmolStr::new_static(crate::config::PRIMARY_VARIANT)),
        },
    };
    let outputs = match outputs {
        Some(named) => Outputs::pick(value.outputs.clone(), named.iter().map(String::as_str)),
        None => Outputs::pick(
            value.outputs.clone(),
            model.spec.outputs.iter().map(|o| o.name.as_str()),
        ),
    };
    InferResponse {
        // A variant answers under its primary's name; `served.variant` says which it was.
        model: model
            .variant
            .as_ref()
            .map_or_else(|| model.name.clone(), |of| of.primary.clone()),
        version: model.version.clone(),
        id,
        outputs,
        served,
    }
}
