//! Logs and metrics. Metric names live here, one constant each, so every layer records the same
//! series; the Prometheus text is rendered on our own HTTP port at `/metrics`.

use crate::request::Protocol;
use crate::shutdown::Shutdown;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

pub const REQUESTS: &str = "tollgate_requests_total";
pub const REQUEST_DURATION: &str = "tollgate_request_duration_seconds";
pub const EXECUTIONS: &str = "tollgate_executions_total";
pub const INFERENCE_ROWS: &str = "tollgate_inference_rows_total";
pub const BATCH_SIZE: &str = "tollgate_batch_size";
pub const QUEUE_DEPTH: &str = "tollgate_queue_depth";
pub const QUEUE_DURATION: &str = "tollgate_queue_duration_seconds";
pub const COMPUTE_DURATION: &str = "tollgate_compute_duration_seconds";
pub const REJECTIONS: &str = "tollgate_rejections_total";
pub const DEVICE_BUSY: &str = "tollgate_device_busy_microseconds_total";
pub const DEVICE_UTILISATION: &str = "tollgate_device_utilization_ratio";
pub const CACHE_REQUESTS: &str = "tollgate_cache_requests_total";
pub const CACHE_ENTRIES: &str = "tollgate_cache_entries";
pub const CACHE_BYTES: &str = "tollgate_cache_bytes";
pub const CACHE_EVICTIONS: &str = "tollgate_cache_evictions_total";
pub const CACHE_NOT_ADMITTED: &str = "tollgate_cache_not_admitted_total";
pub const CACHE_RECALLED: &str = "tollgate_cache_recalled_total";
pub const CACHE_LOOKUP_DURATION: &str = "tollgate_cache_lookup_duration_seconds";
pub const CACHE_FILL_DURATION: &str = "tollgate_cache_fill_duration_seconds";
pub const CACHE_REDIS_ERRORS: &str = "tollgate_cache_redis_errors_total";
pub const CACHE_REDIS_BREAKER_OPEN: &str = "tollgate_cache_redis_breaker_open";
pub const MODEL_INFO: &str = "tollgate_model_info";
pub const ALERTS: &str = "tollgate_alerts_total";
pub const ALERT_DELIVERY_FAILURES: &str = "tollgate_alert_delivery_failures_total";
pub const COST: &str = "tollgate_cost_usd_total";
pub const SAVED: &str = "tollgate_saved_usd_total";
pub const IDLE_COST: &str = "tollgate_idle_cost_usd_total";
pub const DEVICE_IDLE: &str = "tollgate_device_idle_microseconds_total";
pub const BUDGET_USED: &str = "tollgate_budget_used_ratio";
pub const CANCELLED: &str = "tollgate_cancelled_requests_total";
/// Upstream model servers, labelled by model and upstream URL. Requests count attempts actually
/// sent (`outcome` is "success" or an error kind); errors also count refusals without a send.
pub const UPSTREAM_REQUESTS: &str = "tollgate_upstream_requests_total";
pub const UPSTREAM_ERRORS: &str = "tollgate_upstream_errors_total";
pub const UPSTREAM_DURATION: &str = "tollgate_upstream_request_duration_seconds";
pub const UPSTREAM_RETRIES: &str = "tollgate_upstream_retries_total";
/// 0 closed, 1 half-open, 2 open.
pub const UPSTREAM_BREAKER_STATE: &str = "tollgate_upstream_breaker_state";
pub const UPSTREAM_HEALTHY: &str = "tollgate_upstream_healthy";
pub const UPSTREAM_OUTSTANDING: &str = "tollgate_upstream_outstanding_requests";

/// Latency buckets from 50 µs to 30 s: cache hits sit at the bottom, heavy models at the top.
const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];
/// Batch sizes in rows, powers of two up to the largest max_batch_size worth having.
const ROWS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide metrics recorder once; later calls (tests starting several
/// servers in one process) share it.
pub fn metrics_handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), ROWS_BUCKETS));
        let recorder = match builder {
            Ok(builder) => builder.build_recorder(),
            // Only reachable with an empty bucket list, which the constants above are not.
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        handle
    })
}

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// The recorder keeps every histogram sample until it is folded into buckets, which a scrape
/// does; with nobody scraping, that is several words a request without bound (gigabytes an
/// hour at tens of thousands of requests a second). Folding them on a timer bounds the memory
/// to a second's worth and keeps it warm.
pub fn start_upkeep(shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
    let handle = metrics_handle();
    tokio::spawn(async move {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => handle.run_upkeep(),
            }
        }
    })
}

/// Renders the Prometheus text exposition.
pub fn render() -> String {
    metrics_handle().render()
}

/// Logs go to stderr. `RUST_LOG` wins; otherwise info, with ONNX Runtime's chatty logs held at
/// warn.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The series every successful request of one model touches, registered when the model loads.
/// Looking a labelled series up in the registry hashes and clones its labels, which cost more
/// than the rest of a cache hit's bookkeeping; failures are rarer and go through the macros.
#[derive(Clone)]
pub struct RequestSeries {
    /// Indexed by `Protocol::index`.
    successes: [(Counter, Histogram); Protocol::ALL.len()],
}

impl RequestSeries {
    /// Needs the recorder installed first (`metrics_handle`), or the handles record nothing.
    pub fn new(model: &str) -> RequestSeries {
        let series = |protocol: Protocol| {
            let labels = request_labels(model, protocol, "success");
            (
                metrics::counter!(REQUESTS, &labels),
                metrics::histogram!(REQUEST_DURATION, &labels),
            )
        };
        RequestSeries {
            successes: Protocol::ALL.map(series),
        }
    }

    pub fn record_success(&self, protocol: Protocol, seconds: f64) {
        let (count, duration) = &self.successes[protocol.index()];
        count.increment(1);
        duration.record(seconds);
    }
}

/// Records a request that did not succeed (or whose model is unknown) under `model`.
pub fn record_request(model: &str, protocol: Protocol, outcome: &'static str, seconds: f64) {
    let labels = request_labels(model, protocol, outcome);
    metrics::counter!(REQUESTS, &labels).increment(1);
    metrics::histogram!(REQUEST_DURATION, &labels).record(seconds);
}

fn request_labels(
    model: &str,
    protocol: Protocol,
    outcome: &'static str,
) -> [(&'static str, String); 3] {
    [
        ("model", model.to_string()),
        ("protocol", protocol.as_str().to_string()),
        ("outcome", outcome.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn upkeep_runs_on_its_timer_until_shutdown() {
        let (trigger, shutdown) = crate::shutdown::channel();
        let upkeep = start_upkeep(shutdown);
        metrics::histogram!(REQUEST_DURATION).record(0.001);
        tokio::time::sleep(UPKEEP_EVERY * 3).await;
        assert!(!upkeep.is_finished(), "still running before shutdown");
        trigger.trigger();
        let stopped = tokio::time::timeout(UPKEEP_EVERY * 10, upkeep).await;
        assert!(matches!(stopped, Ok(Ok(()))), "stops at shutdown");
    }
}
