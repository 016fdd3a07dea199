//! Request spans exported over OTLP/gRPC when `telemetry.otlp_endpoint` is set. Without it the
//! OpenTelemetry layer is not installed at all, so serving pays nothing for it.

use super::trace::TraceContext;
use opentelemetry::trace::{
    SpanContext, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// How long one export may take before the collector is given up on for that batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

pub type Layer<S> = tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>;

/// Where spans go and which traces are kept (`[telemetry]`, validated).
#[derive(Debug, Clone)]
pub struct Export {
    /// `http://host:port` of an OTLP/gRPC collector.
    pub endpoint: String,
    /// Share of new traces exported; a caller's sampled flag is followed.
    pub sample_ratio: f64,
    pub service_name: String,
}

/// The layer that turns request spans into OTLP spans. Must be called inside the tokio
/// runtime: the gRPC channel lives on it.
pub fn layer<S>(config: &Export) -> Result<Layer<S>, String>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let endpoint = config.endpoint.trim();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("tollgate");
    let _ = PROVIDER.set(provider);
    ENABLED.store(true, Ordering::Release);
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// What the exporter takes: every span of the gateway's own (the request path's are at debug
/// level), and its events from info up, which become events of the span they happen in.
pub fn filter() -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("tollgate")
            && (meta.is_span() || *meta.level() <= tracing::Level::INFO)
    })
}

/// Makes `span` the request's span in its trace: a child of `incoming` when the caller sent
/// one. Returns the request's context as exported (its own span id), or `None` when export
/// is off and the caller builds it instead.
pub fn adopt(span: &tracing::Span, incoming: Option<&TraceContext>) -> Option<TraceContext> {
    if !ENABLED.load(Ordering::Acquire) {
        return None;
    }
    if let Some(parent) = incoming {
        let flags = if parent.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(
            TraceId::from(parent.trace_id),
            opentelemetry::trace::SpanId::from(parent.span_id),
            flags,
            true,
            TraceState::default(),
        );
        let context = opentelemetry::Context::new().with_remote_span_context(remote);
        // Fails only for a span no layer records (filtered out): it then has no ids to give.
        span.set_parent(context).ok()?;
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    own.is_valid().then(|| TraceContext {
        trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(own.span_id().to_bytes()),
        parent_id: incoming.map_or(0, |t| t.span_id),
        sampled: own.is_sampled(),
        state: incoming.and_then(|t| t.state.clone()),
    })
}

/// The exported span the current task is in, when export is on: the parent an upstream
/// request names, so the upstream's spans hang below the gateway's.
pub fn current_span_id() -> Option<u64> {
    if !ENABLED.load(Ordering::Acquire) {
        return None;
    }
    let context = tracing::Span::current().context();
    let span = context.span().span_context().clone();
    span.is_valid()
        .then(|| u64::from_be_bytes(span.span_id().to_bytes()))
}

/// Sends the spans still buffered; called once at shutdown.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(error) = provider.shutdown() {
            tracing::warn!(%error, "spans not exported at shutdown");
        }
    }
}
