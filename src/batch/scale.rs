//! Instances that follow the load (`min_instances`, `max_instances`): a model has a thread per
//! possible instance, of which the first `active` take batches. One is added while the queue
//! stays deep with every active instance busy, and the last one is stopped (its session
//! unloaded, so its device time is not billed) once the load would fit in one fewer.

use super::arrivals::Flow;
use super::instance::Instance;
use crate::telemetry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How many of a model's instance threads may take batches.
pub(crate) struct Scale {
    state: Mutex<Gate>,
    changed: Condvar,
    gauge: metrics::Gauge,
}

struct Gate {
    active: usize,
    /// Set when the batcher is gone: waiting threads end.
    closed: bool,
}

impl Scale {
    pub(crate) fn new(model: &str, active: usize) -> Scale {
        let gauge = metrics::gauge!(telemetry::MODEL_INSTANCES, "model" => model.to_string());
        gauge.set(active as f64);
        Scale {
            state: Mutex::new(Gate {
                active,
                closed: false,
            }),
            changed: Condvar::new(),
            gauge,
        }
    }

    pub(crate) fn active(&self) -> usize {
        self.lock().active
    }

    /// Whether instance `index` may take batches now.
    pub(crate) fn is_active(&self, index: usize) -> bool {
        index < self.active()
    }

    /// Blocks the instance's thread until it may take batches; false once the batcher is gone.
    pub(crate) fn wait_until_active(&self, index: usize) -> bool {
        let mut gate = self.lock();
        while index >= gate.active && !gate.closed {
            gate = self
                .changed
                .wait(gate)
                .unwrap_or_else(PoisonError::into_inner);
        }
        !gate.closed
    }

    fn set(&self, active: usize) {
        self.lock().active = active;
        self.gauge.set(active as f64);
        self.changed.notify_all();
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the follower sees at each look.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub at: Instant,
    pub queued: usize,
    /// Busy time of the active instances since the previous sample.
    pub busy: Duration,
}

/// How often the follower looks.
pub(crate) const LOOK_EVERY: Duration = Duration::from_millis(100);
/// An instance is added after the queue was never empty for this long with every active
/// instance at least `BUSY_TO_GROW` busy.
const GROW_AFTER: Duration = Duration::from_millis(500);
const BUSY_TO_GROW: f64 = 0.75;
/// One is removed once, for this long, the load would have kept one fewer instance at most
/// `BUSY_TO_SHRINK` busy.
const SHRINK_AFTER: Duration = Duration::from_secs(5);
const BUSY_TO_SHRINK: f64 = 0.5;

#[derive(Debug, PartialEq)]
pub(crate) enum Change {
    Grow,
    Shrink,
    Keep,
}

/// The follower's memory: recent samples, and when the count last changed (each change starts
/// a fresh window, so one surge adds one instance at a time).
#[derive(Debug)]
pub(crate) struct Follow {
    min: usize,
    max: usize,
    samples: Vec<Sample>,
}

impl Follow {
    pub(crate) fn new(min: usize, max: usize) -> Follow {
        Follow {
            min: min.max(1),
            max,
            samples: Vec::new(),
        }
    }

    pub(crate) fn observe(&mut self, sample: Sample, active: usize) -> Change {
        self.samples.push(sample);
        let oldest = sample.at.checked_sub(SHRINK_AFTER).unwrap_or(sample.at);
        self.samples.retain(|s| s.at > oldest);
        let span = |samples: &[Sample]| samples.len() as u32 * LOOK_EVERY;
        let busy = |samples: &[Sample]| samples.iter().map(|s| s.busy).sum::<Duration>();
        let grow_from = sample.at.checked_sub(GROW_AFTER).unwrap_or(sample.at);
        let recent: Vec<Sample> = self
            .samples
            .iter()
            .copied()
            .filter(|s| s.at > grow_from)
            .collect();
        let recent_full = span(&recent) >= GROW_AFTER;
        if active < self.max
            && recent_full
            && recent.iter().all(|s| s.queued > 0)
            && busy(&recent).as_secs_f64()
                >= BUSY_TO_GROW * (span(&recent) * active as u32).as_secs_f64()
        {
            self.samples.clear();
            return Change::Grow;
        }
        let window_full = span(&self.samples) >= SHRINK_AFTER;
        if active > self.min
            && window_full
            && busy(&self.samples).as_secs_f64()
                <= BUSY_TO_SHRINK * (span(&self.samples) * (active as u32 - 1)).as_secs_f64()
        {
            self.samples.clear();
            return Change::Shrink;
        }
        Change::Keep
    }
}

/// Follows one model's load until its batcher is gone.
pub(crate) async fn follow(
    scale: Arc<Scale>,
    mut follower: Follow,
    flow: Weak<Flow>,
    queued: Weak<AtomicUsize>,
    instances: Vec<Arc<Instance>>,
    model: String,
) {
    let mut busy_seen: Vec<u64> = instances
        .iter()
        .map(|i| i.busy_us().load(Ordering::Acquire))
        .collect();
    let mut ticker = tokio::time::interval(LOOK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (Some(_flow), Some(queued)) = (flow.upgrade(), queued.upgrade()) else {
            scale.close();
            return;
        };
        let active = scale.active();
        let mut busy = Duration::ZERO;
        for (index, instance) in instances.iter().enumerate() {
            let now = instance.busy_us().load(Ordering::Acquire);
            if index < active {
                busy += Duration::from_micros(now.saturating_sub(busy_seen[index]));
            }
            busy_seen[index] = now;
        }
        let sample = Sample {
            at: Instant::now(),
            queued: queued.load(Ordering::Acquire),
            busy,
        };
        match follower.observe(sample, active) {
            Change::Grow => {
                tracing::info!(model = %model, instances = active + 1, "an instance added: the queue stays deep");
                scale.set(active + 1);
            }
            Change::Shrink => {
                tracing::info!(model = %model, instances = active - 1, "an instance stopped: the load fits in fewer");
                scale.set(active - 1);
            }
            Change::Keep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `ticks` samples of (queued, busy fraction of `active` instances) and returns the
    /// first change and after how many ticks.
    fn run(
        follow: &mut Follow,
        t0: Instant,
        start: u32,
        ticks: u32,
        queued: usize,
        busy: f64,
        active: usize,
    ) -> Option<(Change, u32)> {
        for tick in start..start + ticks {
            let sample = Sample {
                at: t0 + LOOK_EVERY * tick,
                queued,
                busy: LOOK_EVERY.mul_f64(busy * active as f64),
            };
            match follow.observe(sample, active) {
                Change::Keep => {}
                change => return Some((change, tick - start + 1)),
            }
        }
        None
    }

    #[tokio::test(start_paused = true)]
    async fn instances_grow_under_a_deep_queue_and_shrink_once_the_load_fits_in_fewer() {
        let t0 = Instant::now();
        let mut follow = Follow::new(1, 3);
        // A deep queue with every instance busy: one more after half a second, not before.
        assert_eq!(
            run(&mut follow, t0, 0, 20, 4, 0.9, 1),
            Some((Change::Grow, 5))
        );
        // The window starts again: another one needs another half second of it.
        assert_eq!(
            run(&mut follow, t0, 100, 20, 4, 0.9, 2),
            Some((Change::Grow, 5))
        );
        // Never above max.
        assert_eq!(run(&mut follow, t0, 200, 20, 4, 0.9, 3), None);
        // A queue that empties now and then does not grow.
        let mut calm = Follow::new(1, 3);
        for tick in 0..20 {
            let sample = Sample {
                at: t0 + LOOK_EVERY * tick,
                queued: (tick % 2) as usize,
                busy: LOOK_EVERY,
            };
            assert_eq!(calm.observe(sample, 1), Change::Keep, "tick {tick}");
        }
        // Busy instances whose queue stays short do not grow either (batches form while busy).
        assert_eq!(run(&mut Follow::new(1, 3), t0, 0, 20, 4, 0.5, 1), None);
        // Three at 40 %: the load (1.2 instances) fits in two at 60 %, not under 50 %: kept.
        assert_eq!(run(&mut follow, t0, 300, 80, 0, 0.4, 3), None);
        // Three at 30 % fit in two at 45 %: one goes after five seconds.
        assert_eq!(
            run(&mut follow, t0, 400, 80, 0, 0.3, 3),
            Some((Change::Shrink, 50))
        );
        // Never below min.
        assert_eq!(run(&mut follow, t0, 500, 80, 0, 0.0, 1), None);
    }
}
