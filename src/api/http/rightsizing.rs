//! `GET /v1/rightsizing`: per model and variant, what a row costs (measured over the last
//! week's ledger, shadow runs included: they are real runs of the variant), its median
//! compute time, and how often the variant's shadowed answers agree with the primary's; per
//! model, its idle share; and recommendations in plain words.

use super::{json_response, Body};
use crate::gateway::{Error, Gateway};
use crate::metering::clock;
use crate::metering::ledger::{CostQuery, GroupKey};
use crate::metering::record::IDLE_TENANT;
use crate::model::Model;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;

const WEEK_MS: i64 = 7 * 86_400_000;
/// Shadowed rows a variant needs before it is recommended (or not).
const ENOUGH_SAMPLES: u64 = 100;

/// What the ledger says of one model name over the week.
#[derive(Default, Clone, Copy)]
struct Week {
    requests: u64,
    rows: u64,
    cost_usd: f64,
    idle_usd: f64,
}

impl Week {
    fn per_1k_rows(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.cost_usd / self.rows as f64 * 1000.0)
    }
}

pub(super) async fn report(gateway: &Gateway) -> Result<Response<Body>, Error> {
    let to_ms = clock::now_ms();
    let query = CostQuery {
        from_ms: to_ms - WEEK_MS,
        to_ms,
        group_by: vec![GroupKey::Model, GroupKey::Tenant],
    };
    let ledger = gateway.metering.ledger.clone();
    let rows = tokio::task::spawn_blocking(move || ledger.costs(&query))
        .await
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?;
    let mut weeks: HashMap<String, Week> = HashMap::new();
    for row in rows {
        let value = |key: &str| {
            row.group
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let (Some(model), Some(tenant)) = (value("model"), value("tenant")) else {
            continue;
        };
        let week = weeks.entry(model).or_default();
        if tenant == IDLE_TENANT {
            week.idle_usd += row.cost_usd;
        } else {
            week.requests += row.requests;
            week.rows += row.rows;
            week.cost_usd += row.cost_usd;
        }
    }
    let snapshot = gateway.models.snapshot();
    let models: Vec<Value> = snapshot
        .all()
        .map(|model| describe(model, &weeks))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"models": models})))
}

fn describe(model: &Model, weeks: &HashMap<String, Week>) -> Value {
    let week = |m: &Model| weeks.get(&m.name).copied().unwrap_or_default();
    let primary = week(model);
    let mut variants = vec![json!({
        "name": crate::config::PRIMARY_VARIANT,
        "cost_per_1k_rows_usd": primary.per_1k_rows(),
        "p50_compute_us": model.measured.p50_us(),
        "rows": primary.rows,
        "samples": Value::Null,
        "agreement": Value::Null,
    })];
    let mut recommendations = Vec::new();
    for variant in &model.variants {
        let name = variant.variant.as_ref().map_or("?", |v| v.name.as_str());
        let own = week(variant);
        let shadow = variant.shadow.snapshot();
        variants.push(json!({
            "name": name,
            "cost_per_1k_rows_usd": own.per_1k_rows(),
            "p50_compute_us": variant.measured.p50_us(),
            "rows": own.rows,
            "samples": shadow.samples,
            "agreement": shadow.ratio(),
            "max_abs_error": shadow.max_abs_error,
            "max_rel_error": shadow.max_rel_error,
            "mean_cosine": shadow.mean_cosine(),
        }));
        let (Some(agreement), true) = (shadow.ratio(), shadow.samples >= ENOUGH_SAMPLES) else {
            continue;
        };
        let saving = match (primary.per_1k_rows(), own.per_1k_rows()) {
            (Some(p), Some(v)) if p > 0.0 && v <= p => {
                format!("costs {:.0} % less", (1.0 - v / p) * 100.0)
            }
            (Some(p), Some(v)) if p > 0.0 => format!("costs {:.0} % more", (v / p - 1.0) * 100.0),
            _ => "has no measured cost yet".to_string(),
        };
        recommendations.push(format!(
            "{name} agrees on {:.1} % of {} rows and {saving}",
            agreement * 100.0,
            shadow.samples
        ));
    }
    let device = primary.cost_usd + primary.idle_usd;
    let idle_share = (device > 0.0).then(|| primary.idle_usd / device);
    if primary.requests == 0 {
        recommendations.push(format!("model {} had no request in 7 days", model.name));
    } else if let Some(share) = idle_share.filter(|s| *s >= 0.5) {
        recommendations.push(format!(
            "model {} was idle {:.0} % of its device time over the last 7 days",
            model.name,
            share * 100.0
        ));
    }
    // Since the model loaded: rows per batch against the batch's limit, and the mean wait in
    // the queue of a computed request.
    let stats = &model.stats;
    let executions = stats
        .execution_count
        .load(std::sync::atomic::Ordering::Relaxed);
    let computed = stats
        .inference_count
        .load(std::sync::atomic::Ordering::Relaxed);
    let batch_fill = (executions > 0 && model.max_batch_size > 1)
        .then(|| computed as f64 / executions as f64 / model.max_batch_size as f64);
    let (queued, queue_ns) = stats.queue.read();
    json!({
        "model": model.name,
        "version": model.version,
        "variants": variants,
        "instances": {
            "count": model.batcher.busy_counters().len(),
            "utilization": idle_share.map(|idle| 1.0 - idle),
            "idle_cost_share": idle_share,
            "batch_fill": batch_fill,
            "mean_queue_us": (queued > 0).then(|| queue_ns / queued / 1000),
            "requests": primary.requests,
        },
        "recommendations": recommendations,
    })
}
