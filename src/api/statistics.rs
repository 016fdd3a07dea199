//! Triton's statistics extension for both front ends: one model's counts (or every model's)
//! in Triton's protobuf shape, and the same as Triton's JSON.

use crate::gateway::{Error, Gateway};
use crate::kserve::proto;
use crate::model::Model;
use crate::telemetry::stats::Tally;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// The statistics of `name` (at `version`, or the one it resolves to), or of every model when
/// `name` is empty, as Triton answers.
pub fn collect(
    gateway: &Gateway,
    name: &str,
    version: Option<&str>,
) -> Result<proto::ModelStatisticsResponse, Error> {
    let model_stats = if name.is_empty() {
        let registry = gateway.models.snapshot();
        let mut models: Vec<&std::sync::Arc<Model>> = registry.all().collect();
        models.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        models.into_iter().map(|m| of_model(m)).collect()
    } else {
        let model = gateway.model(name, version)?;
        vec![of_model(&model)]
    };
    Ok(proto::ModelStatisticsResponse { model_stats })
}

fn of_model(model: &Model) -> proto::ModelStatistics {
    let stats = &model.stats;
    let zero = proto::StatisticDuration::default;
    proto::ModelStatistics {
        name: model.name.clone(),
        version: model.version.clone(),
        last_inference: stats.last_inference_ms.load(Ordering::Relaxed),
        inference_count: stats.inference_count.load(Ordering::Relaxed),
        execution_count: stats.execution_count.load(Ordering::Relaxed),
        inference_stats: Some(proto::InferStatistics {
            success: Some(duration(&stats.success)),
            fail: Some(duration(&stats.fail)),
            queue: Some(duration(&stats.queue)),
            // Tensors are copied into and out of the runtime inside the timed run: all of it
            // is `compute_infer`.
            compute_input: Some(zero()),
            compute_infer: Some(duration(&stats.compute_infer)),
            compute_output: Some(zero()),
            cache_hit: Some(duration(&stats.cache_hit)),
            cache_miss: Some(duration(&stats.cache_miss)),
        }),
        batch_stats: stats
            .batch_lines()
            .into_iter()
            .map(|(batch_size, count, ns)| proto::InferBatchStatistics {
                batch_size,
                compute_input: Some(proto::StatisticDuration { count, ns: 0 }),
                compute_infer: Some(proto::StatisticDuration { count, ns }),
                compute_output: Some(proto::StatisticDuration { count, ns: 0 }),
            })
            .collect(),
    }
}

fn duration(tally: &Tally) -> proto::StatisticDuration {
    let (count, ns) = tally.read();
    proto::StatisticDuration { count, ns }
}

/// Triton's JSON for the same answer (`GET /v2/models[/{m}[/versions/{v}]]/stats`).
pub fn to_json(response: &proto::ModelStatisticsResponse) -> Value {
    let duration = |d: &Option<proto::StatisticDuration>| {
        let d = d.unwrap_or_default();
        json!({"count": d.count, "ns": d.ns})
    };
    let models: Vec<Value> = response
        .model_stats
        .iter()
        .map(|m| {
            let s = m.inference_stats.unwrap_or_default();
            json!({
                "name": m.name,
                "version": m.version,
                "last_inference": m.last_inference,
                "inference_count": m.inference_count,
                "execution_count": m.execution_count,
                "inference_stats": {
                    "success": duration(&s.success),
                    "fail": duration(&s.fail),
                    "queue": duration(&s.queue),
                    "compute_input": duration(&s.compute_input),
                    "compute_infer": duration(&s.compute_infer),
                    "compute_output": duration(&s.compute_output),
                    "cache_hit": duration(&s.cache_hit),
                    "cache_miss": duration(&s.cache_miss),
                },
                "batch_stats": m.batch_stats.iter().map(|b| json!({
                    "batch_size": b.batch_size,
                    "compute_input": duration(&b.compute_input),
                    "compute_infer": duration(&b.compute_infer),
                    "compute_output": duration(&b.compute_output),
                })).collect::<Vec<_>>(),
                "memory_usage": [],
            })
        })
        .collect();
    json!({ "model_stats": models })
}
