//! Whether an engine's session is on its device: time spent unloaded (after an idle unload) is
//! neither busy nor idle device time, so nobody is billed for it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct Presence {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Unloaded time of stretches that have ended.
    away: Duration,
    /// Since when the session is unloaded, if it is.
    left: Option<Instant>,
}

impl Presence {
    /// The session was dropped at `now`.
    pub fn leave(&self, now: Instant) {
        let mut state = self.lock();
        if state.left.is_none() {
            state.left = Some(now);
        }
    }

    /// The session is loaded again from `now` on.
    pub fn arrive(&self, now: Instant) {
        let mut state = self.lock();
        if let Some(left) = state.left.take() {
            state.away += now.saturating_duration_since(left);
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.lock().left.is_none()
    }

    /// All unloaded time up to `now`, the stretch still going included.
    pub fn away(&self, now: Instant) -> Duration {
        let state = self.lock();
        state.away
            + state
                .left
                .map_or(Duration::ZERO, |left| now.saturating_duration_since(left))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn away_time_counts_every_unloaded_stretch() {
        let presence = Presence::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(presence.is_loaded());
        presence.leave(at(100));
        presence.leave(at(150)); // leaving twice keeps the first time
        assert!(!presence.is_loaded());
        assert_eq!(presence.away(at(400)), Duration::from_millis(300));
        presence.arrive(at(500));
        presence.arrive(at(600)); // arriving while loaded changes nothing
        assert_eq!(presence.away(at(900)), Duration::from_millis(400));
        presence.leave(at(1000));
        assert_eq!(presence.away(at(1100)), Duration::from_millis(500));
    }
}
