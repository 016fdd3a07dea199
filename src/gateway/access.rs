//! The access log: one structured line for a sampled share of requests
//! (`telemetry.access_log_sample_ratio`), written from the request's usage record so that it
//! says exactly what the ledger keeps, plus the trace it belongs to.

use crate::metering::record::UsageRecord;
use crate::telemetry::trace::TraceContext;

/// Which requests are logged: decided from the request counter, so the share holds exactly
/// over any run of requests and no random number is drawn per request.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    threshold: u64,
    every: bool,
}

impl Sampler {
    pub fn new(ratio: f64) -> Sampler {
        Sampler {
            threshold: (ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            every: ratio >= 1.0,
        }
    }

    /// Whether the request numbered `counter` is logged; counters are spread by a mixing
    /// function first so that a share is not every n-th request.
    pub fn picks(&self, counter: u64) -> bool {
        if self.every {
            return true;
        }
        let mut z = counter.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) < self.threshold
    }
}

/// Writes the line. Its target is `tollgate::access`, so `RUST_LOG=tollgate::access=off`
/// silences it without touching the sampling.
pub fn log(record: &UsageRecord, trace: Option<&TraceContext>) {
    let trace_id = trace.map(TraceContext::trace_id_hex);
    let span_id = trace.map(TraceContext::span_id_hex);
    let parent_id = trace.and_then(TraceContext::parent_id_hex);
    tracing::info!(
        target: "tollgate::access",
        request_id = %record.request_id,
        trace_id = trace_id.as_deref().unwrap_or(""),
        span_id = span_id.as_deref().unwrap_or(""),
        parent_id = parent_id.as_deref().unwrap_or(""),
        tenant = %record.tenant,
        team = %record.team,
        model = %record.model,
        version = %record.version,
        protocol = %record.protocol,
        outcome = %record.outcome,
        cache = %record.cache,
        lane = %record.lane,
        rows = record.rows,
        batch_size = record.batch_size,
        queue_us = record.queue_us,
        compute_us = record.compute_us,
        latency_us = record.latency_us,
        cost_usd = record.cost_usd,
        saved_usd = record.saved_usd,
        "access"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_logged_is_the_share_asked_for() {
        let cases: &[(f64, std::ops::RangeInclusive<usize>)] = &[
            (0.0, 0..=0),
            (0.01, 850..=1150),
            (0.25, 24_000..=26_000),
            (0.5, 49_000..=51_000),
            (1.0, 100_000..=100_000),
        ];
        for (ratio, want) in cases {
            let sampler = Sampler::new(*ratio);
            let picked = (0..100_000u64).filter(|&n| sampler.picks(n)).count();
            assert!(want.contains(&picked), "{ratio}: {picked}");
        }
    }
}
