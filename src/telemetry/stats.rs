//! Per-model counts in the shape of Triton's statistics extension, so that programs written
//! for Triton (`get_inference_statistics`) read them unchanged. Counted beside the Prometheus
//! series, from the same events: an answered request, a batch run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// A count and the nanoseconds it took altogether (Triton's `StatisticDuration`).
#[derive(Debug, Default)]
pub struct Tally {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Tally {
    fn add(&self, ns: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// (count, ns) as read now.
    pub fn read(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.ns.load(Ordering::Relaxed),
        )
    }
}

/// How one answered request was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// From the cache: no queue and no compute of its own.
    Hit,
    /// Computed (a batch ran for it, or it joined another caller's flight).
    Computed {
        queue: Duration,
        compute: Duration,
        /// Whether the cache was asked first (and missed).
        looked_up: bool,
    },
}

/// One model's statistics since it loaded.
#[derive(Debug, Default)]
pub struct ModelStats {
    pub success: Tally,
    pub fail: Tally,
    pub queue: Tally,
    pub compute_infer: Tally,
    pub cache_hit: Tally,
    pub cache_miss: Tally,
    /// Rows computed (Triton: inferences performed; cache hits are not among them).
    pub inference_count: AtomicU64,
    /// Batches run.
    pub execution_count: AtomicU64,
    /// Milliseconds since the epoch of the last request answered or failed; 0 before any.
    pub last_inference_ms: AtomicU64,
    /// Runs and their compute ns by rows in the batch; locked once per batch, not per request.
    batches: Mutex<BTreeMap<u64, (u64, u64)>>,
}

/// A batch size's line of `batch_stats`: (batch size, runs, compute ns).
pub type BatchLine = (u64, u64, u64);

impl ModelStats {
    /// A request answered, `took` from arrival to answer.
    pub fn answered(&self, answered: Service, took: Duration, now_ms: u64) {
        let took = nanos(took);
        self.success.add(took);
        match answered {
            // Triton times a hit as its lookup; here a hit's whole service is the cache's.
            Service::Hit => self.cache_hit.add(took),
            Service::Computed {
                queue,
                compute,
                looked_up,
            } => {
                self.queue.add(nanos(queue));
                self.compute_infer.add(nanos(compute));
                if looked_up {
                    // The lookup's own time is not measured apart: a miss is timed as 0 ns.
                    self.cache_miss.add(0);
                }
            }
        }
        self.last_inference_ms.store(now_ms, Ordering::Relaxed);
    }

    /// A request of this model that failed.
    pub fn failed(&self, took: Duration, now_ms: u64) {
        self.fail.add(nanos(took));
        self.last_inference_ms.store(now_ms, Ordering::Relaxed);
    }

    /// A batch of `rows` rows ran for `compute`.
    pub fn executed(&self, rows: usize, compute: Duration) {
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.inference_count
            .fetch_add(rows as u64, Ordering::Relaxed);
        let mut batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        let line = batches.entry(rows as u64).or_default();
        line.0 += 1;
        line.1 = line.1.saturating_add(nanos(compute));
    }

    /// Batch sizes that ran at least once, smallest first.
    pub fn batch_lines(&self) -> Vec<BatchLine> {
        let batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        batches
            .iter()
            .map(|(&size, &(count, ns))| (size, count, ns))
            .collect()
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_runs_land_where_triton_puts_them() {
        let stats = ModelStats::default();
        let ms = Duration::from_millis;
        let computed = |looked_up| Service::Computed {
            queue: ms(2),
            compute: ms(3),
            looked_up,
        };
        stats.answered(computed(true), ms(6), 10);
        stats.answered(computed(false), ms(6), 11);
        stats.answered(Service::Hit, Duration::from_micros(50), 12);
        stats.failed(ms(1), 13);
        stats.executed(1, ms(3));
        stats.executed(3, ms(4));
        stats.executed(9, ms(5));
        let cases: &[(&str, &Tally, (u64, u64))] = &[
            ("success", &stats.success, (3, 12_050_000)),
            ("fail", &stats.fail, (1, 1_000_000)),
            ("queue", &stats.queue, (2, 4_000_000)),
            ("compute_infer", &stats.compute_infer, (2, 6_000_000)),
            ("cache_hit", &stats.cache_hit, (1, 50_000)),
            ("cache_miss", &stats.cache_miss, (1, 0)),
        ];
        for (name, tally, want) in cases {
            assert_eq!(tally.read(), *want, "{name}");
        }
        assert_eq!(stats.inference_count.load(Ordering::Relaxed), 13);
        assert_eq!(stats.execution_count.load(Ordering::Relaxed), 3);
        assert_eq!(stats.last_inference_ms.load(Ordering::Relaxed), 13);
        stats.executed(3, ms(1));
        assert_eq!(
            stats.batch_lines(),
            vec![(1, 1, 3_000_000), (3, 2, 5_000_000), (9, 1, 5_000_000)]
        );
    }
}
