//! Idle unload: a model that has had no request for `idle_unload_after_s` lets go of its
//! sessions (their device memory), and the next batch loads them again on its instance. The
//! model stays ready meanwhile: it can always answer, only later. `tollgate_model_loaded` is
//! read from the instances' presence at each scrape, so it is never behind.

use super::arrivals::Flow;
use super::instance::Instance;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Watches one model until its batcher is gone.
pub(crate) async fn watch(
    model: String,
    after: Duration,
    flow: Weak<Flow>,
    instances: Vec<Arc<Instance>>,
) {
    let check = (after / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut quiet = Quiet::new(Instant::now());
    loop {
        tokio::time::sleep(check).await;
        let Some(flow) = flow.upgrade() else { return };
        let now = Instant::now();
        let any_loaded = instances.iter().any(|i| i.presence().is_loaded());
        if quiet.observe(now, flow.inflight(), flow.finished()) >= after && any_loaded {
            for instance in &instances {
                let instance = instance.clone();
                // Dropping a session frees device memory, which may take a while: off the
                // runtime's threads. A busy instance is skipped; it is not idle.
                let unloaded = tokio::task::spawn_blocking(move || {
                    instance
                        .try_claim()
                        .is_some_and(|mut claimed| claimed.unload())
                })
                .await
                .unwrap_or(false);
                if unloaded {
                    tracing::info!(model = %model, idle_s = after.as_secs(), "session unloaded after idling");
                }
            }
        }
    }
}

/// How long a model has had nothing in flight and answered nothing new.
struct Quiet {
    since: Instant,
    finished: u64,
}

impl Quiet {
    fn new(now: Instant) -> Quiet {
        Quiet {
            since: now,
            finished: 0,
        }
    }

    fn observe(&mut self, now: Instant, inflight: usize, finished: u64) -> Duration {
        if inflight > 0 || finished != self.finished {
            self.since = now;
            self.finished = finished;
        }
        now.saturating_duration_since(self.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn quiet_time_restarts_with_every_request() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut quiet = Quiet::new(t0);
        // (time s, in flight, answered so far, quiet s)
        let steps = [
            (1, 0, 0, 1),
            (2, 1, 0, 0),
            (3, 0, 1, 0),
            (5, 0, 1, 2),
            (6, 0, 2, 0),
            (9, 0, 2, 3),
        ];
        for (time, inflight, finished, want) in steps {
            let got = quiet.observe(at(time), inflight, finished);
            assert_eq!(got, Duration::from_secs(want), "at {time} s");
        }
    }
}
