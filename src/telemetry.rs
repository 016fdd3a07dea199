//! Logs and metrics. Metric names live here, one constant each, so every layer records the same
//! series; the Prometheus text is rendered on our own HTTP port at `/metrics`.

use crate::shutdown::Shutdown;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

pub mod otlp;
pub mod stats;
pub mod trace;

pub const REQUESTS: &str = "tollgate_requests_total";
pub const REQUEST_DURATION: &str = "tollgate_request_duration_seconds";
pub const EXECUTIONS: &str = "tollgate_executions_total";
pub const INFERENCE_ROWS: &str = "tollgate_inference_rows_total";
pub const BATCH_SIZE: &str = "tollgate_batch_size";
pub const QUEUE_DEPTH: &str = "tollgate_queue_depth";
pub const INFLIGHT: &str = "tollgate_inflight_requests";
pub const MODEL_LOADED: &str = "tollgate_model_loaded";
pub const MODEL_INSTANCES: &str = "tollgate_model_instances";
pub const MODEL_READY: &str = "tollgate_model_ready";
pub const QUEUE_DURATION: &str = "tollgate_queue_duration_seconds";
pub const COMPUTE_DURATION: &str = "tollgate_compute_duration_seconds";
pub const REJECTIONS: &str = "tollgate_rejections_total";
pub const DEVICE_BUSY: &str = "tollgate_device_busy_seconds_total";
pub const DEVICE_UTILISATION: &str = "tollgate_device_utilization_ratio";
pub const CACHE_REQUESTS: &str = "tollgate_cache_requests_total";
pub const CACHE_ENTRIES: &str = "tollgate_cache_entries";
pub const CACHE_BYTES: &str = "tollgate_cache_bytes";
pub const CACHE_EVICTIONS: &str = "tollgate_cache_evictions_total";
pub const CACHE_NOT_ADMITTED: &str = "tollgate_cache_not_admitted_total";
pub const CACHE_RECALLED: &str = "tollgate_cache_recalled_total";
pub const CACHE_LOOKUP_DURATION: &str = "tollgate_cache_lookup_duration_seconds";
pub const CACHE_FILL_DURATION: &str = "tollgate_cache_fill_duration_seconds";
pub const CACHE_REDIS_REJECTED: &str = "tollgate_cache_redis_rejected_total";
pub const CACHE_REDIS_SKIPPED: &str = "tollgate_cache_redis_skipped_writes_total";
pub const REDIS_CALLS: &str = "tollgate_redis_calls_total";
pub const REDIS_CALL_DURATION: &str = "tollgate_redis_call_duration_seconds";
pub const REDIS_BREAKER_OPEN: &str = "tollgate_redis_breaker_open";
pub const FLEET_GRANTS: &str = "tollgate_fleet_budget_grants_total";
pub const FLEET_REPORTS: &str = "tollgate_fleet_budget_reports_total";
pub const MODEL_INFO: &str = "tollgate_model_info";
pub const ALERTS: &str = "tollgate_alerts_total";
pub const ALERT_DELIVERY_FAILURES: &str = "tollgate_alert_delivery_failures_total";
pub const COST: &str = "tollgate_cost_usd_total";
pub const SAVED: &str = "tollgate_saved_usd_total";
pub const IDLE_COST: &str = "tollgate_idle_cost_usd_total";
pub const DEVICE_IDLE: &str = "tollgate_device_idle_seconds_total";
pub const BUDGET_USED: &str = "tollgate_budget_used_ratio";
pub const CANCELLED: &str = "tollgate_cancelled_requests_total";
pub const UPSTREAM_REQUESTS: &str = "tollgate_upstream_requests_total";
pub const UPSTREAM_ERRORS: &str = "tollgate_upstream_errors_total";
pub const UPSTREAM_DURATION: &str = "tollgate_upstream_request_duration_seconds";
pub const UPSTREAM_RETRIES: &str = "tollgate_upstream_retries_total";
pub const UPSTREAM_BREAKER_STATE: &str = "tollgate_upstream_breaker_state";
pub const UPSTREAM_HEALTHY: &str = "tollgate_upstream_healthy";
pub const UPSTREAM_OUTSTANDING: &str = "tollgate_upstream_outstanding_requests";
pub const LEDGER_RECORDS: &str = "tollgate_ledger_records_total";
pub const LEDGER_COMMIT_DURATION: &str = "tollgate_ledger_commit_duration_seconds";
pub const LEDGER_PENDING: &str = "tollgate_ledger_pending_records";
pub const LEDGER_OVERFLOW: &str = "tollgate_ledger_overflow_records_total";
pub const LEDGER_DROPPED: &str = "tollgate_ledger_dropped_records_total";
pub const LEDGER_WRITE_ERRORS: &str = "tollgate_ledger_write_errors_total";
pub const DEFERRED_JOBS: &str = "tollgate_deferred_jobs";
pub const DEFERRED_ROWS: &str = "tollgate_deferred_rows";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    /// A sum that only grows but is not a whole number (money, seconds of device time). The
    /// `metrics` crate's counters are integers, so these are recorded with gauge increments
    /// and exposed as the counters they are (`render`).
    FloatCounter,
    Gauge,
    Histogram,
}

/// Every series with its type and help text, so the exposition carries `# HELP` for each and
/// `promtool check metrics` has nothing to say about it.
const DESCRIBED: &[(&str, Kind, &str)] = &[
    (
        REQUESTS,
        Kind::Counter,
        "Inference requests answered, by model, protocol and outcome.",
    ),
    (
        REQUEST_DURATION,
        Kind::Histogram,
        "Time from a request's arrival to its answer.",
    ),
    (
        EXECUTIONS,
        Kind::Counter,
        "Batches run by a model instance (or sent upstream).",
    ),
    (
        INFERENCE_ROWS,
        Kind::Counter,
        "Rows computed in those batches.",
    ),
    (BATCH_SIZE, Kind::Histogram, "Rows per batch run."),
    (
        QUEUE_DEPTH,
        Kind::Gauge,
        "Requests waiting in a model's batch queue.",
    ),
    (
        MODEL_READY,
        Kind::Gauge,
        "1 while a model can answer (an upstream model: while an upstream is ready), as /v2/models/{m}/ready says.",
    ),
    (
        MODEL_INSTANCES,
        Kind::Gauge,
        "Instances of a model taking batches now (they follow the load with max_instances).",
    ),
    (
        MODEL_LOADED,
        Kind::Gauge,
        "1 while a model's sessions are loaded, 0 after an idle unload (the next request loads them).",
    ),
    (
        INFLIGHT,
        Kind::Gauge,
        "Requests at a model (after the cache): queued or in a batch that runs, local or upstream.",
    ),
    (
        QUEUE_DURATION,
        Kind::Histogram,
        "Time a request waited in the batch queue.",
    ),
    (
        COMPUTE_DURATION,
        Kind::Histogram,
        "Time one batch took to run.",
    ),
    (
        REJECTIONS,
        Kind::Counter,
        "Requests refused or dropped before they ran, by reason.",
    ),
    (
        DEVICE_BUSY,
        Kind::FloatCounter,
        "Device time a model instance spent running batches.",
    ),
    (
        DEVICE_UTILISATION,
        Kind::Gauge,
        "Share of wall time a model instance was busy, over its last minute.",
    ),
    (
        CACHE_REQUESTS,
        Kind::Counter,
        "Cache lookups, by model and status (hit, miss, coalesced, bypass).",
    ),
    (
        CACHE_ENTRIES,
        Kind::Gauge,
        "Answers held in the memory tier.",
    ),
    (
        CACHE_BYTES,
        Kind::Gauge,
        "Bytes the memory tier's answers weigh.",
    ),
    (
        CACHE_EVICTIONS,
        Kind::Counter,
        "Answers that left the memory tier, by reason.",
    ),
    (
        CACHE_NOT_ADMITTED,
        Kind::Counter,
        "Computed answers the doorkeeper kept out of the cache.",
    ),
    (
        CACHE_RECALLED,
        Kind::Counter,
        "HTTP bodies answered from the body memo without decoding.",
    ),
    (
        CACHE_LOOKUP_DURATION,
        Kind::Histogram,
        "Time a cache lookup took (both tiers).",
    ),
    (
        CACHE_FILL_DURATION,
        Kind::Histogram,
        "Time storing an answer in the memory tier took.",
    ),
    (
        CACHE_REDIS_REJECTED,
        Kind::Counter,
        "Values read from Redis that failed their integrity check or did not decode; served as misses.",
    ),
    (
        CACHE_REDIS_SKIPPED,
        Kind::Counter,
        "Writes to the shared tier not made: refused by Redis, or over the bound of writes in flight.",
    ),
    (
        REDIS_CALLS,
        Kind::Counter,
        "Calls to Redis by role (cache, fleet), operation and outcome.",
    ),
    (
        REDIS_CALL_DURATION,
        Kind::Histogram,
        "Time one Redis call took, by role and operation.",
    ),
    (
        REDIS_BREAKER_OPEN,
        Kind::Gauge,
        "1 while the circuit breaker of a Redis role is open.",
    ),
    (
        FLEET_GRANTS,
        Kind::Counter,
        "Slices of fleet budgets this replica asked Redis for, by outcome.",
    ),
    (
        FLEET_REPORTS,
        Kind::Counter,
        "Spend reports (settlements) this replica sent to Redis, by outcome.",
    ),
    (
        MODEL_INFO,
        Kind::Gauge,
        "1 per loaded model, labelled with its version, device and provider.",
    ),
    (ALERTS, Kind::Counter, "Alerts raised, by kind."),
    (
        ALERT_DELIVERY_FAILURES,
        Kind::Counter,
        "Alerts the webhook did not accept after every retry.",
    ),
    (
        COST,
        Kind::FloatCounter,
        "Cost of the device time requests used, in the pricing currency.",
    ),
    (
        SAVED,
        Kind::FloatCounter,
        "Cost the cache saved: what the answers it served had cost to compute.",
    ),
    (
        IDLE_COST,
        Kind::FloatCounter,
        "Cost of model instances' idle device time, billed to nobody.",
    ),
    (
        DEVICE_IDLE,
        Kind::FloatCounter,
        "Device time a model instance spent idle.",
    ),
    (
        BUDGET_USED,
        Kind::Gauge,
        "Share of a tenant's budget spent in the current period.",
    ),
    (
        CANCELLED,
        Kind::Counter,
        "Requests whose caller left after their batch ran (their cost is not billed).",
    ),
    (
        UPSTREAM_REQUESTS,
        Kind::Counter,
        "Requests sent to upstream servers, by outcome.",
    ),
    (
        UPSTREAM_ERRORS,
        Kind::Counter,
        "Upstream failures, refusals without a send included, by kind.",
    ),
    (
        UPSTREAM_DURATION,
        Kind::Histogram,
        "Time one upstream request took.",
    ),
    (
        UPSTREAM_RETRIES,
        Kind::Counter,
        "Upstream requests retried.",
    ),
    (
        UPSTREAM_BREAKER_STATE,
        Kind::Gauge,
        "An upstream's circuit breaker: 0 closed, 1 half-open, 2 open.",
    ),
    (
        UPSTREAM_HEALTHY,
        Kind::Gauge,
        "1 while an upstream answers its readiness checks.",
    ),
    (
        UPSTREAM_OUTSTANDING,
        Kind::Gauge,
        "Requests in flight to an upstream.",
    ),
    (
        LEDGER_RECORDS,
        Kind::Counter,
        "Usage records committed to the ledger.",
    ),
    (
        LEDGER_COMMIT_DURATION,
        Kind::Histogram,
        "Time one group commit of the ledger took.",
    ),
    (
        LEDGER_PENDING,
        Kind::Gauge,
        "Usage records accepted and not yet committed.",
    ),
    (
        LEDGER_OVERFLOW,
        Kind::Counter,
        "Usage records that found the ledger's queue full (kept in its backlog if there was room).",
    ),
    (
        LEDGER_DROPPED,
        Kind::Counter,
        "Usage records given up without being committed.",
    ),
    (
        LEDGER_WRITE_ERRORS,
        Kind::Counter,
        "Failed ledger commit attempts.",
    ),
    (
        DEFERRED_JOBS,
        Kind::Gauge,
        "Deferred jobs kept, by status (queued, running, completed, cancelled).",
    ),
    (
        DEFERRED_ROWS,
        Kind::Gauge,
        "Rows of the deferred jobs kept, by state: queued (of unfinished jobs), completed, failed.",
    ),
];

fn describe() {
    for &(name, kind, help) in DESCRIBED {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::FloatCounter | Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// The front end a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Http, Protocol::Grpc];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }

    /// Position in `ALL`, for per-protocol arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

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
        describe();
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

/// Renders the Prometheus text exposition, with the float counters typed as counters.
pub fn render() -> String {
    let text = metrics_handle().render();
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split_once(' '))
        {
            Some((name, kind))
                if kind.trim_end() == "gauge"
                    && DESCRIBED
                        .iter()
                        .any(|&(n, k, _)| n == name && k == Kind::FloatCounter) =>
            {
                out.push_str("# TYPE ");
                out.push_str(name);
                out.push_str(" counter\n");
            }
            _ => out.push_str(line),
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: coloured only when stderr is a terminal (and `NO_COLOR` is unset), so a
    /// file or a log collector gets no escape codes.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Logs go to stderr. `RUST_LOG` wins; otherwise info, with ONNX Runtime's chatty logs held at
/// warn (`RUST_LOG=info,tollgate=debug` adds the request path's spans to each line). With `export`, request spans are sent to an OTLP collector as well; that needs the
/// tokio runtime to be entered.
pub fn init_logging(format: LogFormat, export: Option<&otlp::Export>) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    let lines = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .boxed(),
        // The current span's fields, not the whole list: a request's span holds them all.
        LogFormat::Json => lines
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .boxed(),
    };
    // Each layer filters for itself: the request path's spans are at debug level, so at the
    // default level the log lines never format them, while the exporter takes them all.
    let spans = export
        .map(|export| otlp::layer(export).map(|layer| layer.with_filter(otlp::filter())))
        .transpose()?;
    let _ = tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(spans)
        .try_init();
    Ok(())
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

    /// Prometheus's naming rules, which `promtool check metrics` also enforces on a live
    /// scrape (in the interop suite): `_total` on counters only, base units, one entry a name.
    #[test]
    fn described_series_follow_prometheus_naming() {
        let mut names = std::collections::HashSet::new();
        for &(name, kind, help) in DESCRIBED {
            assert!(names.insert(name), "{name} is described twice");
            assert!(name.starts_with("tollgate_"), "{name}");
            assert!(!help.is_empty(), "{name} has no help");
            let counter = matches!(kind, Kind::Counter | Kind::FloatCounter);
            assert_eq!(
                name.ends_with("_total"),
                counter,
                "{name}: `_total` is for counters"
            );
            for word in name.split('_') {
                assert!(
                    ![
                        "microseconds",
                        "milliseconds",
                        "ms",
                        "us",
                        "kilobytes",
                        "megabytes"
                    ]
                    .contains(&word),
                    "{name}: use base units (seconds, bytes)"
                );
            }
        }
    }

    #[test]
    fn float_counters_are_typed_as_counters() {
        metrics_handle();
        metrics::gauge!(COST, "tenant" => "t", "team" => "", "model" => "m").increment(0.5);
        metrics::gauge!(QUEUE_DEPTH, "model" => "m").set(1.0);
        let text = render();
        assert!(text.contains(&format!("# TYPE {COST} counter")), "{text}");
        assert!(
            text.contains(&format!("# TYPE {QUEUE_DEPTH} gauge")),
            "{text}"
        );
        assert!(text.contains(&format!("# HELP {COST} ")), "{text}");
    }

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
