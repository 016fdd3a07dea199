//! A circuit breaker for one Redis: a dead or slow Redis costs a caller at most one timeout
//! while it is closed, and nothing at all while it is open.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker, and how long it then stays open.
const FAILURES_TO_OPEN: u32 = 3;
const OPEN_FOR: Duration = Duration::from_secs(5);

/// Closed → open after `FAILURES_TO_OPEN` consecutive failures; after `OPEN_FOR` one call is
/// let through (half-open), and its success closes the breaker again.
pub struct Breaker {
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    open: AtomicBool,
    epoch: Instant,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            open: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn allows(&self) -> bool {
        if !self.open.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_ms();
        let until = self.open_until_ms.load(Ordering::Acquire);
        // One caller wins the half-open probe by pushing the deadline forward.
        now >= until
            && self
                .open_until_ms
                .compare_exchange(
                    until,
                    now + OPEN_FOR.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Returns true when this success closed an open breaker (so the caller logs once).
    pub fn succeeded(&self) -> bool {
        self.failures.store(0, Ordering::Release);
        self.open.load(Ordering::Acquire) && self.open.swap(false, Ordering::AcqRel)
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Returns true when this failure opened the breaker (so the caller logs once).
    pub fn failed(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        self.open_until_ms.store(
            self.now_ms() + OPEN_FOR.as_millis() as u64,
            Ordering::Release,
        );
        failures >= FAILURES_TO_OPEN && !self.open.swap(true, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_closes_on_success() {
        let breaker = Breaker::default();
        assert!(breaker.allows());
        assert!(!breaker.failed());
        assert!(!breaker.failed());
        assert!(breaker.failed(), "the third failure opens it");
        assert!(!breaker.allows(), "open: calls are skipped");
        assert!(breaker.is_open());
        assert!(breaker.succeeded(), "a success closes it, once");
        assert!(!breaker.succeeded());
        assert!(breaker.allows());
    }
}
