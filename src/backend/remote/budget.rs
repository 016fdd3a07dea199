//! The retry budget of one upstream model: retries may add at most a fixed share of the requests
//! (plus a small floor per second, so a quiet model can still retry), so a struggling upstream
//! never sees a retry storm multiply its load.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

// Budgets are counted in thousandths of a retry so that shares add up exactly.
const ONE_RETRY: u64 = 1000;
/// Each request earns this share of one retry (a fifth).
const PER_REQUEST: u64 = 200;
/// Retries per second allowed regardless of traffic.
const FLOOR_PER_SECOND: u64 = 10;
/// Saved-up retries never exceed this, so a long quiet spell cannot fund a burst.
const MAX_SAVED: u64 = 100 * ONE_RETRY;

#[derive(Debug)]
pub struct RetryBudget {
    state: Mutex<Tokens>,
}

#[derive(Debug)]
struct Tokens {
    available: u64,
    refilled: Instant,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            state: Mutex::new(Tokens {
                available: FLOOR_PER_SECOND * ONE_RETRY,
                refilled: Instant::now(),
            }),
        }
    }
}

impl RetryBudget {
    /// Called once per request (not per attempt).
    pub fn deposit(&self) {
        if let Ok(mut tokens) = self.state.lock() {
            tokens.available = (tokens.available + PER_REQUEST).min(MAX_SAVED);
        }
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        let Ok(mut tokens) = self.state.lock() else {
            return false;
        };
        let now = Instant::now();
        let elapsed_us = now.duration_since(tokens.refilled).as_micros() as u64;
        let earned = elapsed_us.saturating_mul(FLOOR_PER_SECOND * ONE_RETRY) / 1_000_000;
        if earned > 0 {
            // The mark only moves once something was earned, so frequent calls cannot round
            // every step down to nothing.
            tokens.refilled = now;
            tokens.available = (tokens.available + earned).min(MAX_SAVED);
        }
        if tokens.available >= ONE_RETRY {
            tokens.available -= ONE_RETRY;
            true
        } else {
            false
        }
    }
}

/// Pause before retrying the same endpoint, so a refused connection is not hammered.
pub const SAME_ENDPOINT_BACKOFF: Duration = Duration::from_millis(25);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_limited_to_a_share_of_requests_plus_a_floor() {
        let budget = RetryBudget::default();
        let mut granted = 0;
        while budget.withdraw() {
            granted += 1;
        }
        assert_eq!(
            granted, FLOOR_PER_SECOND as usize,
            "the floor funds the first retries"
        );
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.withdraw(), "ten requests earn two retries");
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(
            budget.withdraw(),
            "a tenth of a second refills one retry of the floor"
        );
        assert!(!budget.withdraw());
    }
}
