//! Shadow runs: a sampled share (`shadow_sample_ratio`) of a model's answered requests is run
//! again on each of its variants, in a task of its own and in the deferred lane (idle capacity,
//! never ahead of a real-time request), and each answer is compared with the primary's. A
//! shadow run is billed to the internal tenant `__shadow__`, so that a variant's busy and idle
//! time still add up to its device time; it is what evaluating the variant costs.

use super::access::Sampler;
use crate::batch::{BatchGroup, Job};
use crate::config::DEFERRED_LANE;
use crate::metering::clock;
use crate::metering::cost;
use crate::metering::meter::Metering;
use crate::metering::record::{self, UsageRecord};
use crate::model::{shadow, Model};
use crate::tensor::Tensor;
use smol_str::SmolStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The tenant shadow runs are billed to.
pub const SHADOW_TENANT: &str = "__shadow__";
/// Their lane in the usage records.
const LANE_SHADOW: &str = "shadow";

/// What a shadowed request leaves for its shadow runs.
pub(super) struct Shadowed {
    inputs: Vec<Tensor>,
    group: BatchGroup,
    rows: usize,
}

/// Shadow runs' record ids: `shadow.` and the variant's name before the usual counter and time,
/// unique per variant.
fn shadow_prefix(variant: &Model) -> String {
    format!("shadow.{}", variant.text.name)
}

/// Whether this request of `model` is shadowed: a primary with variants, picked by its share.
pub(super) fn pick(model: &Model, job: &Job) -> Option<Shadowed> {
    let ratio = model.config.shadow_sample_ratio;
    if model.variants.is_empty() || ratio <= 0.0 {
        return None;
    }
    let seen = model.shadow_seen.fetch_add(1, Ordering::Relaxed);
    Sampler::new(ratio).picks(seen).then(|| Shadowed {
        inputs: job.inputs.clone(),
        group: job.group.clone(),
        rows: job.rows,
    })
}

/// Runs the shadowed request on every variant of `model`, after the primary answered with
/// `outputs`; returns at once.
pub(super) fn launch(
    metering: &Arc<Metering>,
    model: &Model,
    shadowed: Shadowed,
    outputs: Arc<[Tensor]>,
) {
    for variant in &model.variants {
        let (variant, metering) = (variant.clone(), metering.clone());
        let job = Job {
            inputs: shadowed.inputs.clone(),
            rows: shadowed.rows,
            group: shadowed.group.clone(),
            priority: DEFERRED_LANE,
            deadline: None,
        };
        let outputs = outputs.clone();
        tokio::spawn(async move {
            let arrived_ms = clock::now_ms();
            let rows = job.rows;
            // A variant that cannot take the request (full, failing) is not compared.
            let Ok(ran) = variant.batcher.submit(job).await else {
                return;
            };
            if let Some(compared) = shadow::compare(&outputs, &ran.outputs, rows) {
                variant.shadow.record(&compared);
            }
            let cost =
                cost::share_of_batch(ran.compute_us, rows, ran.batch_rows, variant.price_per_hour);
            // Shadow runs measure the variant as its own traffic would.
            variant.measured.record(ran.compute_us, cost, rows as u64);
            let counter = variant.shadow_seen.fetch_add(1, Ordering::Relaxed);
            let record = UsageRecord {
                request_id: record::request_id(&shadow_prefix(&variant), counter, arrived_ms)
                    .into(),
                time_ms: arrived_ms,
                tenant: SmolStr::new_static(SHADOW_TENANT),
                model: variant.text.name.clone(),
                version: variant.text.version.clone(),
                protocol: SmolStr::new_static("internal"),
                cache: SmolStr::new_static("bypass"),
                rows: rows as u32,
                batch_size: ran.batch_rows as u32,
                queue_us: ran.queue_us,
                compute_us: ran.compute_us,
                cost_usd: cost,
                outcome: SmolStr::new_static("success"),
                device: variant.text.device.clone(),
                lane: SmolStr::new_static(LANE_SHADOW),
                ..UsageRecord::default()
            };
            if let Err(error) = metering.settle(record).await {
                tracing::warn!(%error, model = %variant.text.name, "shadow run not recorded");
            }
        });
    }
}
