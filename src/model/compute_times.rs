//! The compute times of a model's recent batches, for right-sizing's p50: a ring of the last
//! `KEPT` batches, written on the miss path only.

use std::collections::VecDeque;
use std::sync::Mutex;

const KEPT: usize = 1024;

#[derive(Debug, Default)]
pub struct ComputeTimes {
    recent: Mutex<VecDeque<u64>>,
}

impl ComputeTimes {
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
        let times = ComputeTimes::default();
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
