//! Turns merged run statistics into the final figures: a human table on stdout and the same numbers as JSON.

use crate::metrics_scrape::ServerDelta;
use crate::stats::{CacheCounts, Stats};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// Describes the run itself, echoed into the report so a JSON file stands on its own.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub target: String,
    pub model: String,
    pub model_version: Option<String>,
    pub protocol: String,
    pub mode: String,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub arrivals: Option<String>,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub max_requests: Option<u64>,
    pub distinct: usize,
    pub zipf: f64,
    /// Bodies sent in order rather than picked.
    pub sequential: bool,
    pub seed: u64,
    pub rows_per_request: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyMs {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheReport {
    pub hit: u64,
    pub miss: u64,
    pub coalesced: u64,
    pub bypass: u64,
    pub other: u64,
    /// hit / all responses that carried a cache status.
    pub hit_ratio: Option<f64>,
    /// (hit + coalesced) / the same denominator: responses that needed no model run of their own.
    pub no_execution_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub run: RunInfo,
    pub elapsed_s: f64,
    pub ok: u64,
    pub errors_total: u64,
    pub requests_per_s: f64,
    pub rows_per_s: f64,
    pub latency_ms: LatencyMs,
    pub errors: BTreeMap<String, u64>,
    pub cache: CacheReport,
    pub cost_usd: f64,
    pub saved_usd: f64,
    pub verified: Option<u64>,
    pub server_metrics: Option<ServerDelta>,
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn latency(h: &Histogram<u64>) -> LatencyMs {
    if h.is_empty() {
        return LatencyMs {
            count: 0,
            min: 0.0,
            mean: 0.0,
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            p999: 0.0,
            max: 0.0,
        };
    }
    let q = |x: f64| us_to_ms(h.value_at_quantile(x));
    LatencyMs {
        count: h.len(),
        min: us_to_ms(h.min()),
        mean: h.mean() / 1000.0,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: us_to_ms(h.max()),
    }
}

pub fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

fn cache_report(c: &CacheCounts) -> CacheReport {
    CacheReport {
        hit: c.hit,
        miss: c.miss,
        coalesced: c.coalesced,
        bypass: c.bypass,
        other: c.other,
        hit_ratio: ratio(c.hit, c.total()),
        no_execution_ratio: ratio(c.hit + c.coalesced, c.total()),
    }
}

pub fn summarize(
    run: RunInfo,
    stats: &Stats,
    elapsed: Duration,
    verifying: bool,
    server_metrics: Option<ServerDelta>,
) -> Summary {
    Summary {
        run,
        elapsed_s: elapsed.as_secs_f64(),
        ok: stats.ok,
        errors_total: stats.error_total(),
        requests_per_s: per_second(stats.ok, elapsed),
        rows_per_s: per_second(stats.rows, elapsed),
        latency_ms: latency(&stats.latency_us),
        errors: stats.errors.clone(),
        cache: cache_report(&stats.cache),
        cost_usd: stats.cost_usd,
        saved_usd: stats.saved_usd,
        verified: verifying.then_some(stats.verified),
        server_metrics,
    }
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

/// The human-readable table; `writeln!` into a String cannot fail, so results are ignored.
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let r = &s.run;
    let load = match (r.concurrency, r.rate) {
        (Some(c), _) => format!("closed loop, concurrency {c}"),
        (_, Some(rate)) => format!(
            "open loop, {rate} req/s {}",
            r.arrivals.as_deref().unwrap_or("")
        ),
        _ => r.mode.clone(),
    };
    let _ = writeln!(
        o,
        "target      {} model {} via {}",
        r.target, r.model, r.protocol
    );
    let _ = writeln!(
        o,
        "load        {load}; {} distinct, {}, seed {}",
        r.distinct,
        if r.sequential {
            "in order".to_string()
        } else {
            format!("zipf {}", r.zipf)
        },
        r.seed
    );
    let _ = writeln!(
        o,
        "measured    {:.2}s after {:.1}s warm-up",
        s.elapsed_s, r.warmup_s
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "requests    {} ok, {} errors", s.ok, s.errors_total);
    let _ = writeln!(
        o,
        "throughput  {:.1} req/s, {:.1} rows/s",
        s.requests_per_s, s.rows_per_s
    );
    let l = &s.latency_ms;
    let _ = writeln!(
        o,
        "latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    );
    if !s.errors.is_empty() {
        let list: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(o, "errors      {}", list.join(", "));
    }
    let c = &s.cache;
    if c.hit + c.miss + c.coalesced + c.bypass + c.other > 0 {
        let _ = writeln!(o, "cache       hit {} miss {} coalesced {} bypass {} other {}; hit ratio {}, no-execution {}",
            c.hit, c.miss, c.coalesced, c.bypass, c.other, pct(c.hit_ratio), pct(c.no_execution_ratio));
    }
    if s.cost_usd != 0.0 || s.saved_usd != 0.0 {
        let answered = s.ok.max(1) as f64;
        let _ = writeln!(
            o,
            "cost        {} spent, {} saved; per 1,000 requests {} spent, {} saved",
            money(s.cost_usd),
            money(s.saved_usd),
            money(s.cost_usd / answered * 1000.0),
            money(s.saved_usd / answered * 1000.0),
        );
    }
    if let Some(v) = s.verified {
        let bad = s.errors.get("mismatch").copied().unwrap_or(0);
        let _ = writeln!(o, "verify      {v} checked ok, {bad} mismatches");
    }
    if let Some(m) = &s.server_metrics {
        let mut parts = Vec::new();
        if let Some(v) = m.requests_total {
            parts.push(format!("requests {v}"));
        }
        for (status, v) in &m.cache_requests_by_status {
            parts.push(format!("cache_{status} {v}"));
        }
        if let Some(v) = m.executions_total {
            parts.push(format!("executions {v}"));
        }
        if let Some(v) = m.inference_rows_total {
            parts.push(format!("rows {v}"));
        }
        if let Some(v) = m.mean_batch_size {
            parts.push(format!("mean batch {v:.2}"));
        }
        if !parts.is_empty() {
            let _ = writeln!(o, "server Δ    {}", parts.join(", "));
        }
    }
    o
}

/// Dollars as a person reads them: cents for amounts of a cent or more, four significant
/// digits in scientific form below (a request often costs a few billionths of a dollar).
fn money(usd: f64) -> String {
    if usd == 0.0 {
        "$0".into()
    } else if usd.abs() >= 0.01 {
        format!("${usd:.2}")
    } else {
        format!("${usd:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_keeps_small_amounts_readable() {
        for (usd, want) in [
            (0.0, "$0"),
            (12.345, "$12.35"),
            (0.01, "$0.01"),
            (1.5111e-8, "$1.511e-8"),
            (0.000999, "$9.990e-4"),
        ] {
            assert_eq!(money(usd), want);
        }
    }
    use crate::stats::ReplyInfo;

    #[test]
    fn percentiles_from_known_values() {
        let mut s = Stats::new();
        // 1..=1000 ms, one each: pN is N% of the way up.
        for ms in 1..=1000u64 {
            s.record_latency(Duration::from_millis(ms));
        }
        let l = latency(&s.latency_us);
        let near = |got: f64, want: f64| (got - want).abs() / want < 0.002;
        assert_eq!(l.count, 1000);
        assert!(near(l.p50, 500.0), "{}", l.p50);
        assert!(near(l.p90, 900.0), "{}", l.p90);
        assert!(near(l.p99, 990.0), "{}", l.p99);
        assert!(near(l.p999, 999.0), "{}", l.p999);
        assert!(near(l.max, 1000.0) && near(l.min, 1.0));
        assert!(near(l.mean, 500.5));
        assert_eq!(latency(&Stats::new().latency_us).count, 0);
    }

    #[test]
    fn ratios_and_throughput() {
        assert_eq!(ratio(3, 4), Some(0.75));
        assert_eq!(ratio(0, 0), None);
        assert_eq!(per_second(1000, Duration::from_secs(2)), 500.0);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
        let c = CacheCounts {
            hit: 6,
            miss: 2,
            coalesced: 2,
            bypass: 0,
            other: 0,
        };
        let r = cache_report(&c);
        assert_eq!(r.hit_ratio, Some(0.6));
        assert_eq!(r.no_execution_ratio, Some(0.8));
    }

    #[test]
    fn summary_counts_rows_and_renders() {
        let mut s = Stats::new();
        let info = ReplyInfo {
            cost_usd: Some(0.25),
            ..Default::default()
        };
        for _ in 0..40 {
            s.record_ok(Duration::from_millis(3), 4, &info);
        }
        s.record_error("http_429");
        let run = RunInfo {
            target: "h:1".into(),
            model: "m".into(),
            model_version: None,
            protocol: "http".into(),
            mode: "closed".into(),
            concurrency: Some(2),
            rate: None,
            arrivals: None,
            warmup_s: 0.0,
            duration_s: 2.0,
            max_requests: None,
            distinct: 10,
            zipf: 0.0,
            sequential: false,
            seed: 1,
            rows_per_request: 4,
        };
        let sum = summarize(run, &s, Duration::from_secs(2), false, None);
        assert_eq!(sum.requests_per_s, 20.0);
        assert_eq!(sum.rows_per_s, 80.0);
        assert_eq!(sum.errors_total, 1);
        assert_eq!(sum.cost_usd, 10.0);
        let text = render(&sum);
        assert!(
            text.contains("http_429 1") && text.contains("20.0 req/s"),
            "{text}"
        );
        let json = serde_json::to_value(&sum).unwrap();
        assert_eq!(json["latency_ms"]["count"], 40);
        assert_eq!(json["errors"]["http_429"], 1);
    }
}
