//! A circuit breaker per upstream endpoint. After `threshold` consecutive failures it opens and
//! every request is refused at once for `cooldown`, so an outage costs callers nothing but a
//! 503; then it lets exactly one probe through (half-open), whose outcome closes it or opens it
//! for another cooldown. Time is tokio's clock, so tests pause and advance it.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    HalfOpen,
    Open,
}

impl State {
    /// The value of the breaker-state gauge.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open => 2.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half-open",
            State::Open => "open",
        }
    }
}

/// What the breaker let through: an ordinary request, or the single probe of a half-open breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    Normal,
    Probe,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    consecutive_failures: u32,
    /// Set while open; once it has passed the breaker is half-open.
    open_until: Option<Instant>,
    probe_in_flight: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            consecutive_failures: 0,
            open_until: None,
            probe_in_flight: false,
        }
    }

    pub fn state(&self, now: Instant) -> State {
        match self.open_until {
            None => State::Closed,
            Some(until) if now < until => State::Open,
            Some(_) => State::HalfOpen,
        }
    }

    /// Whether a request could be let through now, without taking the probe slot.
    pub fn admits(&self, now: Instant) -> bool {
        match self.state(now) {
            State::Closed => true,
            State::HalfOpen => !self.probe_in_flight,
            State::Open => false,
        }
    }

    /// Lets a request through if the breaker allows one now.
    pub fn try_acquire(&mut self, now: Instant) -> Option<Ticket> {
        match self.state(now) {
            State::Closed => Some(Ticket::Normal),
            State::HalfOpen if !self.probe_in_flight => {
                self.probe_in_flight = true;
                Some(Ticket::Probe)
            }
            State::HalfOpen | State::Open => None,
        }
    }

    /// Records how a request that was let through ended. Returns the new state when it changed.
    pub fn record(&mut self, ticket: Ticket, success: bool, now: Instant) -> Option<State> {
        let before = self.state(now);
        if ticket == Ticket::Probe {
            self.probe_in_flight = false;
        }
        if success {
            self.consecutive_failures = 0;
            self.open_until = None;
        } else if before != State::Closed {
            // A failed probe (or a late failure while open) starts a fresh cooldown.
            self.open_until = Some(now + self.cooldown);
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.consecutive_failures >= self.threshold {
                self.open_until = Some(now + self.cooldown);
            }
        }
        let after = self.state(now);
        (after != before).then_some(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_refuses_until_the_cooldown_ends() {
        let cooldown = Duration::from_secs(5);
        let mut breaker = Breaker::new(3, cooldown);
        let now = Instant::now;
        for _ in 0..2 {
            let ticket = breaker.try_acquire(now()).unwrap();
            assert_eq!(breaker.record(ticket, false, now()), None);
        }
        // A success in between resets the count.
        breaker.record(Ticket::Normal, true, now());
        for _ in 0..2 {
            breaker.record(Ticket::Normal, false, now());
        }
        assert_eq!(breaker.state(now()), State::Closed);
        assert_eq!(
            breaker.record(Ticket::Normal, false, now()),
            Some(State::Open)
        );
        assert_eq!(breaker.try_acquire(now()), None);
        tokio::time::advance(cooldown - Duration::from_millis(1)).await;
        assert!(
            !breaker.admits(now()),
            "still open just before the cooldown ends"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(breaker.state(now()), State::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_probe_through_whose_outcome_decides() {
        let cooldown = Duration::from_millis(200);
        let mut breaker = Breaker::new(1, cooldown);
        let now = Instant::now;
        breaker.record(Ticket::Normal, false, now());
        assert_eq!(breaker.state(now()), State::Open);
        tokio::time::advance(cooldown).await;
        assert_eq!(breaker.try_acquire(now()), Some(Ticket::Probe));
        assert_eq!(breaker.try_acquire(now()), None, "only one probe at a time");
        assert!(!breaker.admits(now()));
        // The probe fails: open again for a whole cooldown.
        assert_eq!(
            breaker.record(Ticket::Probe, false, now()),
            Some(State::Open)
        );
        tokio::time::advance(cooldown / 2).await;
        assert_eq!(breaker.try_acquire(now()), None);
        tokio::time::advance(cooldown / 2).await;
        let probe = breaker.try_acquire(now()).unwrap();
        assert_eq!(breaker.record(probe, true, now()), Some(State::Closed));
        assert_eq!(breaker.try_acquire(now()), Some(Ticket::Normal));
    }

    #[test]
    fn gauge_values_are_stable() {
        let values: Vec<f64> = [State::Closed, State::HalfOpen, State::Open]
            .iter()
            .map(|s| s.gauge())
            .collect();
        assert_eq!(values, vec![0.0, 1.0, 2.0]);
    }
}
