//! What a model's own runs measured, for right-sizing: the compute times of its recent
//! batches (a ring of the last `KEPT`, for the median) and the cost per row of everything it
//! computed (which `budget_action = "downgrade"` picks the cheapest variant by). Written on
//! the miss path only.

use std::collections::VecDeque;
use std::sync::Mutex;

const KEPT: usize = 1024;

#[derive(Debug, Default)]
pub struct Measured {
    recent: Mutex<VecDeque<u64>>,
    /// Cost and rows of every computed request.
    cost: Mutex<(f64, u64)>,
}

impl Measured {
    pub fn add_cost(&self, cost_usd: f64, rows: u64) {
        let mut cost = self
            .cost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cost.0 += cost_usd;
        cost.1 += rows;
    }

    /// `None` until a row was computed.
    pub fn cost_per_row(&self) -> Option<f64> {
        let (cost, rows) = *self
            .cost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (rows > 0).then(|| cost / rows as f64)
    }

    pub fn push(&self, compute_us: u64) {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(compute_us);
    }

    /// The median of the kept batches' compute time; `None` before any batch ran.
    pub fn p50_us(&self) -> Option<u64> {
        let mut times: Vec<u64> = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
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
            times.push(t);
        }
        assert_eq!(times.p50_us(), Some(5));
        for _ in 0..KEPT {
            times.push(100);
        }
        assert_eq!(times.p50_us(), Some(100), "the oldest fell out");
    }
}
