//! What a model's own runs measured, for right-sizing: the compute times of its recent
//! batches (a ring of the last `KEPT`, for the median) and the cost per row of everything it
//! computed (which `budget_action = "downgrade"` picks the cheapest variant by). Written on
//! the miss path only.

use std::collections::VecDeque;
use std::sync::Mutex;

const KEPT: usize = 1024;

#[derive(Debug, Default)]
pub struct Measured {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<u64>,
    /// Cost and rows of every computed request.
    cost_usd: f64,
    rows: u64,
}

impl Measured {
    /// One computed request: its batch's compute time, and its cost for its rows.
    pub fn record(&self, compute_us: u64, cost_usd: f64, rows: u64) {
        let mut inner = self.lock();
        if inner.recent.len() == KEPT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(compute_us);
        inner.cost_usd += cost_usd;
        inner.rows += rows;
    }

    /// `None` until a row was computed.
    pub fn cost_per_row(&self) -> Option<f64> {
        let inner = self.lock();
        (inner.rows > 0).then(|| inner.cost_usd / inner.rows as f64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The median of the kept batches' compute time; `None` before any batch ran.
    pub fn p50_us(&self) -> Option<u64> {
        let mut times: Vec<u64> = self.lock().recent.iter().copied().collect();
        if times.is_empty() {
            return None;
        }
        let middle = times.len() / 2;
        Some(*times.select_nth_unstable(middle).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_of_the_last_batches_only() {
        let times = Measured::default();
        assert_eq!(times.p50_us(), None);
        for t in [5, 1, 9] {
            times.record(t, 0.0, 0);
        }
        assert_eq!(times.p50_us(), Some(5));
        for _ in 0..KEPT {
            times.record(100, 0.0, 0);
        }
        assert_eq!(times.p50_us(), Some(100), "the oldest fell out");
    }
}
