//! W3C trace context: the `traceparent` a request arrives with, the ids of the gateway's own
//! span for it, and the header an upstream request carries, so one trace id follows a request
//! through every hop whether or not spans are exported.
//!
//! The context of the request being served travels as a task-local: the request task sets it,
//! the batcher keeps it with each queued job (as it keeps the caller's tracing span), and the
//! task that calls an upstream for a batch takes its first member's.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use tracing::field::Empty;
use tracing::Span;

/// The W3C header names, as HTTP headers and gRPC metadata keys alike.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// What a trace state may carry (the W3C limit is 512 characters).
const MAX_STATE: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The id of the span this context names: the caller's in an incoming header, the
    /// gateway's request span once adopted.
    pub span_id: u64,
    /// The span that called this one (0: none, the root of its trace).
    pub parent_id: u64,
    pub sampled: bool,
    /// The caller's `tracestate`, passed on unread.
    pub state: Option<Arc<str>>,
}

impl TraceContext {
    /// A `traceparent` value: `version-traceid-parentid-flags` in lowercase hex. Versions
    /// above 00 are read as 00 (their first four fields keep their meaning); `ff` and all-zero
    /// ids are invalid, and an invalid header starts a new trace rather than failing a request.
    pub fn parse(header: &str, state: Option<&str>) -> Option<TraceContext> {
        let bytes = header.trim().as_bytes();
        if bytes.len() < 55 || !bytes[..55].is_ascii() {
            return None;
        }
        let text = std::str::from_utf8(&bytes[..55]).ok()?;
        let (version, rest) = text.split_at(2);
        let version = hex_value(version)? as u8;
        // Version 00 is exactly 55 characters; later versions may add fields after a dash.
        let tail_ok = match version {
            0 => bytes.len() == 55,
            0xff => false,
            _ => bytes.len() == 55 || bytes[55] == b'-',
        };
        let fields: Vec<&str> = rest.split('-').collect();
        let ["", trace, parent, flags] = fields.as_slice() else {
            return None;
        };
        if !tail_ok || trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id = hex_value(trace)?;
        let span_id = hex_value(parent)? as u64;
        let flags = hex_value(flags)? as u8;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        let state = state
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_STATE && s.is_ascii())
            .map(Arc::from);
        Some(TraceContext {
            trace_id,
            span_id,
            parent_id: 0,
            sampled: flags & 1 == 1,
            state,
        })
    }

    /// The first span of a new trace.
    pub fn root() -> TraceContext {
        let high = u128::from(random_id());
        TraceContext {
            trace_id: (high << 64) | u128::from(random_id()),
            span_id: random_id(),
            parent_id: 0,
            sampled: true,
            state: None,
        }
    }

    /// The same trace under a new span of ours.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: random_id(),
            parent_id: self.span_id,
            ..self.clone()
        }
    }

    pub fn header(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    pub fn parent_id_hex(&self) -> Option<String> {
        (self.parent_id != 0).then(|| format!("{:016x}", self.parent_id))
    }
}

/// Lowercase hex only, as the header's grammar says.
fn hex_value(text: &str) -> Option<u128> {
    if text.is_empty() || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(text, 16).ok()
}

thread_local! {
    static STATE: Cell<u64> = Cell::new({
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        hasher.finish()
    });
}

/// A non-zero 64-bit id from a per-thread splitmix64 stream seeded at random.
fn random_id() -> u64 {
    STATE.with(|state| loop {
        let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        if z != 0 {
            return z;
        }
    })
}

tokio::task_local! {
    static CURRENT: Option<TraceContext>;
}

/// Runs `work` with `trace` as the request's context.
pub async fn scope<F: Future>(trace: Option<TraceContext>, work: F) -> F::Output {
    CURRENT.scope(trace, work).await
}

/// The context of the request this task serves, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(Clone::clone).ok().flatten()
}

/// Runs one request's `work` in its span and with its trace context as the task's.
pub async fn serve<F: Future>(
    protocol: &'static str,
    incoming: Option<&TraceContext>,
    work: F,
) -> F::Output {
    let (span, trace) = request_span(protocol, incoming);
    scope(Some(trace), tracing::Instrument::instrument(work, span)).await
}

/// The span of one request, with its trace context: a child of the caller's when it sent
/// one, the root of a new trace otherwise. Model, tenant and request id are filled in by
/// `describe` once known.
fn request_span(protocol: &'static str, incoming: Option<&TraceContext>) -> (Span, TraceContext) {
    // At debug level: formatting its fields for the log lines is a measurable share of a
    // cache hit (BENCHMARKS.md). The exporter and `RUST_LOG=info,tollgate=debug`
    // still see it.
    let span = tracing::debug_span!(
        "request",
        protocol,
        model = Empty,
        tenant = Empty,
        request_id = Empty,
        trace_id = Empty,
        cache = Empty,
    );
    let trace = super::otlp::adopt(&span, incoming).unwrap_or_else(|| match incoming {
        Some(parent) => parent.child(),
        None => TraceContext::root(),
    });
    span.record("trace_id", tracing::field::display(Hex(trace.trace_id)));
    (span, trace)
}

/// Names the current request span's request id, tenant and model.
pub fn describe(request_id: &str, tenant: &str, model: &str) {
    let span = Span::current();
    span.record("request_id", request_id);
    span.record("tenant", tenant);
    span.record("model", model);
}

/// A trace id as the header writes it, formatted only when a log line is.
struct Hex(u128);

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The `traceparent` and `tracestate` an upstream request carries: the request's trace, with
/// the gateway's span as the parent.
pub fn outgoing() -> Option<(String, Option<Arc<str>>)> {
    let trace = current()?;
    let span = super::otlp::current_span_id().unwrap_or(trace.span_id);
    let header = TraceContext {
        span_id: span,
        ..trace.clone()
    }
    .header();
    Some((header, trace.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: u128 = 0x4bf92f3577b34da6a3ce929d0e0e4736;

    /// trace id, parent id, sampled
    type Ids = (u128, u64, bool);
    const PARENT: u64 = 0x00f067aa0ba902b7;

    #[test]
    fn headers_are_read_as_the_recommendation_says() {
        let cases: &[(&str, Option<Ids>)] = &[
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Some((TRACE, PARENT, true)),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                Some((TRACE, PARENT, false)),
            ),
            (
                " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
                Some((TRACE, PARENT, true)),
            ),
            // A later version may add fields; its first four keep their meaning.
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-extra",
                Some((TRACE, PARENT, true)),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                None,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                None,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bé-01",
                None,
            ),
            ("", None),
        ];
        for (header, want) in cases {
            let got = TraceContext::parse(header, None).map(|t| (t.trace_id, t.span_id, t.sampled));
            assert_eq!(got, *want, "{header:?}");
        }
    }

    #[test]
    fn the_header_round_trips_and_children_keep_the_trace() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = TraceContext::parse(incoming, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(trace.header(), incoming);
        assert_eq!(trace.state.as_deref(), Some("congo=t61rcWkgMzE"));
        let child = trace.child();
        assert_eq!((child.trace_id, child.sampled), (TRACE, true));
        assert_ne!(child.span_id, PARENT);
        assert_eq!(child.parent_id, PARENT);
        assert_eq!(child.state, trace.state);
        let root = TraceContext::root();
        assert_ne!(root.trace_id, TraceContext::root().trace_id);
        assert_eq!(TraceContext::parse(&root.header(), None), Some(root));
        let long = "a=".to_string() + &"b".repeat(MAX_STATE);
        assert_eq!(
            TraceContext::parse(incoming, Some(&long)).unwrap().state,
            None
        );
    }

    #[tokio::test]
    async fn the_context_is_current_inside_its_scope_only() {
        assert_eq!(current(), None);
        let trace = TraceContext::root();
        let seen = scope(Some(trace.clone()), async { current() }).await;
        assert_eq!(seen, Some(trace.clone()));
        let sent = scope(Some(trace.clone()), async { outgoing() }).await;
        assert_eq!(sent.map(|(header, _)| header), Some(trace.header()));
        assert_eq!(outgoing(), None);
    }
}
