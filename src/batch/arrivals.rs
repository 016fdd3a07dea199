//! What the adaptive batch wait knows about a model's traffic: how many requests are in flight
//! (submitted and not yet answered), how many were at most in recent batches' time, and how
//! far apart requests arrive when nothing they wait for has finished in between.

use super::policy::Load;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Requests of one model from submission to answer, shared by its handles and its actor; it is
/// also what `tollgate_inflight_requests` shows.
pub(crate) struct Flow {
    inflight: AtomicUsize,
    /// Answers given so far: an arrival after one may be a caller coming back, not a new one.
    finished: AtomicU64,
    gauge: metrics::Gauge,
}

impl Flow {
    pub(crate) fn new(model: &str) -> Flow {
        Flow {
            inflight: AtomicUsize::new(0),
            finished: AtomicU64::new(0),
            gauge: metrics::gauge!(crate::telemetry::INFLIGHT, "model" => model.to_string()),
        }
    }

    /// Counts a request in until the guard is dropped (answered, failed, or its caller left).
    pub(crate) fn enter(&self) -> InFlight<'_> {
        let now = self.inflight.fetch_add(1, Ordering::AcqRel) + 1;
        self.gauge.set(now as f64);
        InFlight(self)
    }

    pub(crate) fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    pub(crate) fn finished(&self) -> u64 {
        self.finished.load(Ordering::Acquire)
    }
}

pub(crate) struct InFlight<'a>(&'a Flow);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
        let now = self.0.inflight.fetch_sub(1, Ordering::AcqRel) - 1;
        self.0.gauge.set(now as f64);
    }
}

/// How long the recent peak of callers is remembered: at least one whole period, at most two.
const PERIOD: Duration = Duration::from_secs(1);

/// The actor's record of arrivals, from which each decision's `Load` is made.
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    last: Option<Instant>,
    /// `Flow::finished` at the last arrival.
    finished_at_last: u64,
    /// Mean gap between arrivals with no answer in between, weighted to the recent ones.
    gap: Option<Duration>,
    /// Most requests in flight at an arrival since the last batch left.
    cycle_peak: usize,
    /// (start, most in flight) of the current period and of the one before it, over the cycles
    /// that ended in them.
    current: Option<(Instant, usize)>,
    previous: usize,
}

impl Arrivals {
    /// Notes an arrival. A gap is measured only when no answer went out since the last
    /// arrival: in a closed loop, arrivals after answers come from callers coming back, whose
    /// timing is our own doing, and would hide that the others have stopped. Gaps longer than
    /// `bound` count as `bound`: beyond it the batch has left anyway.
    pub(crate) fn arrived(&mut self, now: Instant, flow: &Flow, bound: Duration) {
        let finished = flow.finished();
        if let Some(last) = self.last {
            if finished == self.finished_at_last {
                let gap = now.saturating_duration_since(last).min(bound);
                self.gap = Some(match self.gap {
                    None => gap,
                    Some(mean) => (mean * 7 + gap) / 8,
                });
            }
        }
        self.last = Some(now);
        self.finished_at_last = finished;
        self.cycle_peak = self.cycle_peak.max(flow.inflight());
    }

    /// Closes the forming batch's cycle: its peak joins the recent peak only now, so a batch
    /// never waits for a peak it is itself setting.
    pub(crate) fn dispatched(&mut self, now: Instant) {
        self.roll(now);
        if let Some((_, peak)) = &mut self.current {
            *peak = (*peak).max(self.cycle_peak);
        }
        self.cycle_peak = 0;
    }

    fn roll(&mut self, now: Instant) {
        match self.current {
            Some((start, peak)) if now >= start + PERIOD => {
                self.previous = if now < start + 2 * PERIOD { peak } else { 0 };
                self.current = Some((now, 0));
            }
            Some(_) => {}
            None => self.current = Some((now, 0)),
        }
    }

    pub(crate) fn load(&mut self, now: Instant, flow: &Flow) -> Load {
        self.roll(now);
        let recent = self.current.map_or(0, |(_, peak)| peak).max(self.previous);
        Load {
            inflight: flow.inflight(),
            recent_peak: (recent > 0).then_some(recent),
            last_arrival: self.last,
            gap: self.gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn gaps_skip_answers_and_the_peak_waits_for_the_cycle_to_end() {
        let flow = Flow::new("arrivals-test");
        let mut arrivals = Arrivals::default();
        let bound = Duration::from_millis(2);
        let step = |us| tokio::time::advance(Duration::from_micros(us));
        let first = flow.enter();
        arrivals.arrived(Instant::now(), &flow, bound);
        step(100).await;
        let second = flow.enter();
        arrivals.arrived(Instant::now(), &flow, bound);
        let load = arrivals.load(Instant::now(), &flow);
        assert_eq!(load.gap, Some(Duration::from_micros(100)));
        assert_eq!(load.inflight, 2);
        assert_eq!(
            load.recent_peak, None,
            "the forming batch sets no peak for itself"
        );
        arrivals.dispatched(Instant::now());
        assert_eq!(arrivals.load(Instant::now(), &flow).recent_peak, Some(2));
        // Both answered; a caller back 5 ms later is not a gap in the arrivals.
        drop((first, second));
        step(5000).await;
        let _third = flow.enter();
        arrivals.arrived(Instant::now(), &flow, bound);
        assert_eq!(
            arrivals.load(Instant::now(), &flow).gap,
            Some(Duration::from_micros(100))
        );
        // With no answer in between, a long gap counts up to the bound.
        step(9000).await;
        let _fourth = flow.enter();
        arrivals.arrived(Instant::now(), &flow, bound);
        let mean = (Duration::from_micros(100) * 7 + bound) / 8;
        assert_eq!(arrivals.load(Instant::now(), &flow).gap, Some(mean));
        // The peak is forgotten after two quiet periods.
        step(2_500_000).await;
        arrivals.dispatched(Instant::now());
        assert_eq!(arrivals.load(Instant::now(), &flow).recent_peak, Some(2));
        step(2_100_000).await;
        assert_eq!(arrivals.load(Instant::now(), &flow).recent_peak, None);
    }
}
