//! The batching loop of one model: keeps the queue in service order, asks `policy` what to do,
//! and hands whole batches to the workers when one of them can take it.

use super::arrivals::{Arrivals, Flow};
use super::inline::{self, Local};
use super::policy::{self, Candidate, Decision};
use super::timer::PreciseSleep;
use super::{BatchError, BatcherSettings, Pending};
use crate::config::DEFERRED_LANE;
use crate::telemetry;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

/// A batch on its way to a worker: members in batch order.
pub(crate) struct Batch {
    pub members: Vec<Pending>,
}

struct Queue {
    /// Sorted by (priority, sequence): the order requests are served in.
    pending: Vec<Pending>,
    next_sequence: u64,
    /// `pending` as the policy sees it, rebuilt in place for every decision.
    view: Vec<Candidate>,
    arrivals: Arrivals,
    flow: Arc<Flow>,
    /// Gaps between arrivals are measured up to this (the policy's delay bound).
    bound: std::time::Duration,
}

impl Queue {
    fn push(&mut self, mut pending: Pending) {
        self.arrivals
            .arrived(Instant::now(), &self.flow, self.bound);
        pending.sequence = self.next_sequence;
        self.next_sequence += 1;
        // New arrivals go behind everything of their own or a higher lane.
        let at = self
            .pending
            .partition_point(|p| p.job.priority <= pending.job.priority);
        self.pending.insert(at, pending);
    }

    /// Asks the policy about the queue as it stands. The view's buffer is kept: the actor
    /// decides on every wake-up, and most answers are "wait".
    fn decide(&mut self, policy: &policy::Policy, now: Instant) -> Decision {
        self.view.clear();
        self.view.extend(self.pending.iter().map(|p| Candidate {
            rows: p.job.rows,
            group: p.job.group.clone(),
            enqueued: p.enqueued,
            deadline: p.job.deadline,
            deferred: p.job.priority == DEFERRED_LANE,
        }));
        let load = self.arrivals.load(now, &self.flow);
        policy::next_batch(policy, &self.view, &load, now)
    }

    /// Removes the given positions (ascending or not) and returns them in the given order.
    fn take(&mut self, positions: &[usize]) -> Vec<Pending> {
        self.arrivals.dispatched(Instant::now());
        // Usually the batch is the head of the queue, in order: no need to rebuild the rest.
        if positions.iter().enumerate().all(|(i, &p)| i == p) {
            return self.pending.drain(..positions.len()).collect();
        }
        let mut slots: Vec<Option<Pending>> = self.pending.drain(..).map(Some).collect();
        let taken = positions.iter().filter_map(|&i| slots[i].take()).collect();
        self.pending = slots.into_iter().flatten().collect();
        taken
    }
}

/// Where the actor sends a batch it has formed.
pub(crate) struct Outlets {
    /// The instance threads (or tasks), through a channel of one.
    pub workers: mpsc::Sender<Batch>,
    /// A short batch's way to run on the actor's own task (`inline`).
    pub local: Local,
}

pub(crate) async fn run(
    settings: Arc<BatcherSettings>,
    mut arrivals: mpsc::UnboundedReceiver<Pending>,
    outlets: Outlets,
    queued: Arc<AtomicUsize>,
    flow: Arc<Flow>,
) {
    let Outlets { workers, local } = outlets;
    let model = settings.model.clone();
    let depth = metrics::gauge!(telemetry::QUEUE_DEPTH, "model" => model.clone());
    let mut queue = Queue {
        pending: Vec::new(),
        next_sequence: 0,
        view: Vec::new(),
        arrivals: Arrivals::default(),
        flow,
        bound: settings.policy.max_queue_delay,
    };
    let mut open = true;
    // The precise wake-up for the deadline the actor waits for, kept while that deadline
    // stands (arrivals wake the actor many times per batch) and spent once it has fired.
    let mut precise: Option<(Instant, Option<PreciseSleep>)> = None;
    loop {
        let now = Instant::now();
        reap(&settings, &mut queue, &queued, now);
        depth.set(queue.pending.len() as f64);
        if !open && queue.pending.is_empty() {
            break;
        }
        let decision = queue.decide(&settings.policy, now);
        match decision {
            Decision::Idle => match arrivals.recv().await {
                Some(pending) => queue.push(pending),
                None => open = false,
            },
            Decision::WaitUntil(at) => {
                if precise.as_ref().map(|(deadline, _)| *deadline) != Some(at) {
                    precise = Some((at, Some(PreciseSleep::until(at.into_std()))));
                }
                let mut fired = false;
                let sleep = precise.as_mut().and_then(|(_, sleep)| sleep.as_mut());
                tokio::select! {
                    arrival = arrivals.recv(), if open => match arrival {
                        Some(pending) => queue.push(pending),
                        None => open = false,
                    },
                    _ = sleep_until(at) => {}
                    _ = async move {
                        match sleep {
                            Some(sleep) => sleep.await,
                            None => std::future::pending().await,
                        }
                    } => fired = true,
                }
                if fired {
                    if let Some((_, sleep)) = precise.as_mut() {
                        *sleep = None;
                    }
                }
            }
            Decision::Dispatch(positions) => {
                // A deferred batch is handed over only to an idle instance: one queued for a
                // busy instance would run before a real-time request that comes meanwhile.
                let deferred = positions
                    .first()
                    .is_some_and(|&p| queue.pending[p].job.priority == DEFERRED_LANE);
                let bytes = inline::input_bytes(
                    positions
                        .iter()
                        .map(|&p| queue.pending[p].job.inputs.as_slice()),
                );
                // The claim (a lock guard) must end before any await below.
                let ran_here = match local.claim(bytes) {
                    Some(claimed) => {
                        let members = queue.take(&positions);
                        queued.fetch_sub(members.len(), Ordering::AcqRel);
                        super::worker::run_batch(
                            &settings,
                            claimed,
                            Batch { members },
                            super::worker::Source::Inline,
                        );
                        true
                    }
                    None => false,
                };
                let instances = settings.instances.start.max(1);
                if !ran_here && deferred && local.runs().short().outstanding() >= instances {
                    tokio::select! {
                        _ = local.runs().short().freed() => {}
                        arrival = arrivals.recv(), if open => match arrival {
                            Some(pending) => queue.push(pending),
                            None => open = false,
                        },
                    }
                } else if !ran_here {
                    let next_deadline = queue.pending.iter().filter_map(|p| p.job.deadline).min();
                    tokio::select! {
                        permit = workers.reserve() => {
                            let Ok(permit) = permit else { break };
                            // Decide again: requests may have arrived or expired while we waited,
                            // and a late high-priority arrival must get this slot.
                            while let Ok(pending) = arrivals.try_recv() {
                                queue.push(pending);
                            }
                            let now = Instant::now();
                            reap(&settings, &mut queue, &queued, now);
                            if let Decision::Dispatch(positions) = queue.decide(&settings.policy, now) {
                                let members = queue.take(&positions);
                                queued.fetch_sub(members.len(), Ordering::AcqRel);
                                local.runs().short().handing_over();
                                permit.send(Batch { members });
                            }
                        }
                        arrival = arrivals.recv(), if open => match arrival {
                            Some(pending) => queue.push(pending),
                            None => open = false,
                        },
                        _ = sleep_until(next_deadline.unwrap_or(now + std::time::Duration::from_secs(3600))), if next_deadline.is_some() => {}
                    }
                }
            }
        }
        // Take everything already waiting in one go so the next decision sees it all.
        while let Ok(pending) = arrivals.try_recv() {
            queue.push(pending);
        }
    }
    let error = BatchError::Closed {
        model: model.clone(),
    };
    for pending in queue.pending.drain(..) {
        let _ = pending.reply.send(Err(error.clone()));
    }
}

/// Answers expired requests with a timeout and forgets callers who already left, so neither
/// takes a place in a batch.
fn reap(settings: &BatcherSettings, queue: &mut Queue, queued: &AtomicUsize, now: Instant) {
    let leaving = |p: &Pending| p.reply.is_closed() || p.job.deadline.is_some_and(|d| d <= now);
    // The common case, nobody leaving, costs one scan and no new queue.
    if !queue.pending.iter().any(leaving) {
        return;
    }
    let before = queue.pending.len();
    let mut kept = Vec::with_capacity(before);
    for pending in queue.pending.drain(..) {
        if pending.reply.is_closed() {
            metrics::counter!(telemetry::REJECTIONS, "model" => settings.model.clone(), "reason" => "client_gone").increment(1);
            continue;
        }
        if pending.job.deadline.is_some_and(|d| d <= now) {
            let waited_us = now.duration_since(pending.enqueued).as_micros() as u64;
            metrics::counter!(telemetry::REJECTIONS, "model" => settings.model.clone(), "reason" => "timeout").increment(1);
            let _ = pending.reply.send(Err(BatchError::TimedOut {
                model: settings.model.clone(),
                waited_us,
            }));
            continue;
        }
        kept.push(pending);
    }
    queued.fetch_sub(before - kept.len(), Ordering::AcqRel);
    queue.pending = kept;
}
