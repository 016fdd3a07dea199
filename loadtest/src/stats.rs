//! Per-worker result accumulators (HDR latency histogram plus counters) that merge losslessly at the end of a run.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::Duration;

/// Latencies are kept in microseconds up to an hour, 3 significant figures.
const HIST_MAX_US: u64 = 3_600_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Coalesced,
    Bypass,
    Other,
}

impl CacheStatus {
    pub fn parse(s: &str) -> CacheStatus {
        match s.trim().to_ascii_lowercase().as_str() {
            "hit" => CacheStatus::Hit,
            "miss" => CacheStatus::Miss,
            "coalesced" => CacheStatus::Coalesced,
            "bypass" => CacheStatus::Bypass,
            _ => CacheStatus::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    pub hit: u64,
    pub miss: u64,
    pub coalesced: u64,
    pub bypass: u64,
    pub other: u64,
}

impl CacheCounts {
    pub fn add(&mut self, s: CacheStatus) {
        match s {
            CacheStatus::Hit => self.hit += 1,
            CacheStatus::Miss => self.miss += 1,
            CacheStatus::Coalesced => self.coalesced += 1,
            CacheStatus::Bypass => self.bypass += 1,
            CacheStatus::Other => self.other += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.hit + self.miss + self.coalesced + self.bypass + self.other
    }
}

/// What a successful response told us beyond its latency.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplyInfo {
    pub cache: Option<CacheStatus>,
    pub cost_usd: Option<f64>,
    pub saved_usd: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Stats {
    pub latency_us: Histogram<u64>,
    pub ok: u64,
    pub rows: u64,
    pub errors: BTreeMap<String, u64>,
    pub cache: CacheCounts,
    pub cost_usd: f64,
    pub saved_usd: f64,
    pub verified: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            // Bounds are constants known to be valid, so creation cannot fail.
            latency_us: Histogram::new_with_bounds(1, HIST_MAX_US, 3)
                .unwrap_or_else(|_| unreachable!("valid histogram bounds")),
            ok: 0,
            rows: 0,
            errors: BTreeMap::new(),
            cache: CacheCounts::default(),
            cost_usd: 0.0,
            saved_usd: 0.0,
            verified: 0,
        }
    }

    pub fn record_latency(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.saturating_record(us);
    }

    pub fn record_ok(&mut self, latency: Duration, rows: u64, info: &ReplyInfo) {
        self.record_latency(latency);
        self.ok += 1;
        self.rows += rows;
        self.record_info(info);
    }

    /// Cache and cost headers count even on failed checks: the server did the work.
    pub fn record_info(&mut self, info: &ReplyInfo) {
        if let Some(c) = info.cache {
            self.cache.add(c);
        }
        self.cost_usd += info.cost_usd.unwrap_or(0.0);
        self.saved_usd += info.saved_usd.unwrap_or(0.0);
    }

    pub fn record_error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn merge(&mut self, other: &Stats) {
        // Both histograms share the same bounds, so adding cannot fail; saturate defensively anyway.
        if self.latency_us.add(&other.latency_us).is_err() {
            for v in other.latency_us.iter_recorded() {
                self.latency_us
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.ok += other.ok;
        self.rows += other.rows;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
        self.cache.hit += other.cache.hit;
        self.cache.miss += other.cache.miss;
        self.cache.coalesced += other.cache.coalesced;
        self.cache.bypass += other.cache.bypass;
        self.cache.other += other.cache.other;
        self.cost_usd += other.cost_usd;
        self.saved_usd += other.saved_usd;
        self.verified += other.verified;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn merged_worker_histograms_equal_one_histogram() {
        let mut rng = Rng::new(5);
        let mut all = Stats::new();
        let mut workers: Vec<Stats> = (0..4).map(|_| Stats::new()).collect();
        for i in 0..20_000 {
            let us = 50 + rng.below(200_000);
            let d = Duration::from_micros(us);
            let info = ReplyInfo {
                cache: Some(if i % 3 == 0 {
                    CacheStatus::Hit
                } else {
                    CacheStatus::Miss
                }),
                cost_usd: Some(0.5),
                saved_usd: None,
            };
            all.record_ok(d, 2, &info);
            workers[i % 4].record_ok(d, 2, &info);
            if i % 1000 == 0 {
                all.record_error("http_503");
                workers[i % 4].record_error("http_503");
            }
        }
        let mut merged = Stats::new();
        for w in &workers {
            merged.merge(w);
        }
        assert_eq!(merged.latency_us, all.latency_us);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.latency_us.value_at_quantile(q),
                all.latency_us.value_at_quantile(q)
            );
        }
        assert_eq!((merged.ok, merged.rows), (all.ok, all.rows));
        assert_eq!(merged.errors, all.errors);
        assert_eq!(merged.cache, all.cache);
        assert!((merged.cost_usd - all.cost_usd).abs() < 1e-9);
    }

    #[test]
    fn cache_status_parsing() {
        assert_eq!(CacheStatus::parse("HIT"), CacheStatus::Hit);
        assert_eq!(CacheStatus::parse(" coalesced"), CacheStatus::Coalesced);
        assert_eq!(CacheStatus::parse("stale"), CacheStatus::Other);
    }

    #[test]
    fn huge_latency_saturates() {
        let mut s = Stats::new();
        s.record_latency(Duration::from_secs(100_000));
        assert_eq!(s.latency_us.len(), 1);
    }
}
