//! The batching decision, as a pure function of the policy, the queue, what is known of the
//! traffic and the clock, so the rules (Triton's dynamic batcher semantics, and the adaptive
//! wait) are tested as a table without threads or sleeps.

use super::BatchGroup;
use crate::config::BatchWait;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Largest batch in rows; 1 turns batching off (every request runs alone).
    pub max_batch_rows: usize,
    /// How long the oldest request may wait for company before its batch is sent anyway.
    pub max_queue_delay: Duration,
    /// Batch sizes worth sending at once, ascending.
    pub preferred_sizes: Vec<usize>,
    pub wait: BatchWait,
    /// Largest batch of deferred rows (`deferred.batch_rows`): a real-time request that comes
    /// while one runs waits for no more than that.
    pub deferred_rows: usize,
}

/// What the actor knows of the model's traffic when it decides (see `arrivals`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// Requests submitted and not yet answered: queued, or in a batch that runs.
    pub inflight: usize,
    /// The most that were in flight in recent batches' time; `None` before any batch.
    pub recent_peak: Option<usize>,
    pub last_arrival: Option<Instant>,
    /// The usual gap between arrivals that no answer preceded; `None` until two arrived.
    pub gap: Option<Duration>,
}

/// How many usual gaps without an arrival mean arrivals have stopped. With arrivals at random
/// (Poisson) the chance that one gap is this long by chance is e^-6, a quarter of a percent.
pub const STOPPED_AFTER_GAPS: u32 = 6;

/// The least a usual gap is taken to be: requests that arrive together (a burst, or in the same
/// instant of a test clock) must still leave the next one of the burst a moment to arrive.
pub const MIN_GAP: Duration = Duration::from_micros(10);

/// The part of a queued request the decision needs. Queues hand these over in service order:
/// highest priority first, then arrival order.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub rows: usize,
    /// Requests batch together only when their group matches (same non-batch dims and dtypes).
    pub group: BatchGroup,
    pub enqueued: Instant,
    pub deadline: Option<Instant>,
    /// A row of a deferred job: it leads a batch only when no real-time request is queued
    /// (the queue puts its lane last), and never joins a real-time one.
    pub deferred: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing queued.
    Idle,
    /// Nothing to send yet; look again at this instant (or when a request arrives).
    WaitUntil(Instant),
    /// Send these queue positions as one batch, in this order.
    Dispatch(Vec<usize>),
}

/// Decides what to do with the queue now. Expired requests must have been removed first (the
/// actor's `reap` answers them with a timeout).
///
/// The batch is led by the first request in service order and takes the following requests of
/// its group, in order, while they fit. It is sent at once when it is full or when it reaches a
/// preferred size. Otherwise, with the fixed wait, it waits until the leader has waited
/// `max_queue_delay`; with the adaptive wait it also leaves as soon as waiting cannot add rows:
/// when as many requests are in flight as recently were at most (every caller is already
/// waiting), or when no request arrived for `STOPPED_AFTER_GAPS` usual gaps.
pub fn next_batch(policy: &Policy, queue: &[Candidate], load: &Load, now: Instant) -> Decision {
    let Some(leader) = queue.first() else {
        return Decision::Idle;
    };
    let max_rows = if leader.deferred {
        policy.max_batch_rows.min(policy.deferred_rows).max(1)
    } else {
        policy.max_batch_rows.max(1)
    };
    let in_group = |c: &&Candidate| c.group == leader.group && c.deferred == leader.deferred;
    // One pass that allocates nothing: how many of the leader's group would join, whether they
    // fill the batch, and the longest prefix whose rows are a preferred size. The actor asks
    // on every wake-up, and most answers are "wait".
    let mut joined = 0;
    let mut rows = 0;
    let mut full = false;
    let mut preferred_prefix = None;
    for candidate in queue.iter().filter(in_group) {
        if joined > 0 && rows + candidate.rows > max_rows {
            full = true;
            break;
        }
        joined += 1;
        rows += candidate.rows;
        if policy.preferred_sizes.contains(&rows) {
            preferred_prefix = Some(joined);
        }
        if rows >= max_rows {
            full = true;
            break;
        }
    }
    let bound = leader.enqueued + policy.max_queue_delay;
    let stopped_at = match policy.wait {
        BatchWait::Fixed => None,
        BatchWait::Adaptive => load
            .last_arrival
            .zip(load.gap)
            .map(|(last, gap)| last + gap.max(MIN_GAP) * STOPPED_AFTER_GAPS),
    };
    let everyone_waits = policy.wait == BatchWait::Adaptive
        && load.recent_peak.is_some_and(|peak| load.inflight >= peak);
    let send = if full {
        Some(joined)
    } else if preferred_prefix.is_some() {
        preferred_prefix
    } else if now >= bound || everyone_waits || stopped_at.is_some_and(|at| now >= at) {
        Some(joined)
    } else {
        None
    };
    if let Some(members) = send {
        let positions = queue
            .iter()
            .enumerate()
            .filter(|(_, c)| in_group(c))
            .map(|(position, _)| position)
            .take(members)
            .collect();
        return Decision::Dispatch(positions);
    }
    // Wake early enough to time out whoever expires first rather than let it overstay.
    let send_at = stopped_at.map_or(bound, |at| at.min(bound));
    let earliest_deadline = queue.iter().filter_map(|c| c.deadline).min();
    Decision::WaitUntil(earliest_deadline.map_or(send_at, |d| d.min(send_at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: usize, delay_us: u64, preferred: &[usize]) -> Policy {
        Policy {
            max_batch_rows: max,
            max_queue_delay: Duration::from_micros(delay_us),
            preferred_sizes: preferred.to_vec(),
            wait: BatchWait::Fixed,
            deferred_rows: 4,
        }
    }

    #[test]
    fn groups_compare_their_dims_exactly() {
        let group = BatchGroup::of_open_dims;
        assert_eq!(group(vec![]), BatchGroup::default());
        assert_eq!(group(vec![12, 3]), group(vec![12, 3]));
        for (a, b) in [
            (vec![12, 3], vec![1, 23]),
            (vec![3], vec![3, 0]),
            (vec![], vec![0]),
        ] {
            assert_ne!(group(a.clone()), group(b.clone()), "{a:?} vs {b:?}");
        }
    }

    /// (rows, group, enqueued µs after t0, deadline µs after t0)
    type Spec = (usize, u64, u64, Option<u64>);

    fn queue(t0: Instant, specs: &[Spec]) -> Vec<Candidate> {
        specs
            .iter()
            .map(|&(rows, group, at, deadline)| Candidate {
                rows,
                // Group 0 stands for a model with no open dimension; others for one open
                // dimension of that size.
                group: BatchGroup::of_open_dims(if group == 0 {
                    vec![]
                } else {
                    vec![group as usize]
                }),
                enqueued: t0 + Duration::from_micros(at),
                deadline: deadline.map(|d| t0 + Duration::from_micros(d)),
                deferred: false,
            })
            .collect()
    }

    enum Want {
        Idle,
        WaitUntilUs(u64),
        Dispatch(&'static [usize]),
    }

    #[test]
    fn decision_table() {
        let cases: &[(&str, Policy, &[Spec], u64, Want)] = &[
            ("empty queue", policy(8, 1000, &[]), &[], 0, Want::Idle),
            (
                "batching off sends each request alone",
                policy(1, 1000, &[]),
                &[(1, 0, 0, None), (1, 0, 0, None)],
                0,
                Want::Dispatch(&[0]),
            ),
            (
                "a lone request waits for the queue delay",
                policy(8, 1000, &[]),
                &[(1, 0, 0, None)],
                10,
                Want::WaitUntilUs(1000),
            ),
            (
                "the delay is bounded by the oldest request's wait",
                policy(8, 1000, &[]),
                &[(1, 0, 0, None), (1, 0, 900, None)],
                1000,
                Want::Dispatch(&[0, 1]),
            ),
            (
                "zero delay sends at once",
                policy(8, 0, &[]),
                &[(1, 0, 0, None), (1, 0, 0, None)],
                0,
                Want::Dispatch(&[0, 1]),
            ),
            (
                "a full batch is sent at once",
                policy(4, 1000, &[]),
                &[
                    (1, 0, 0, None),
                    (2, 0, 0, None),
                    (1, 0, 0, None),
                    (1, 0, 0, None),
                ],
                0,
                Want::Dispatch(&[0, 1, 2]),
            ),
            (
                "a request that does not fit ends the batch",
                policy(4, 1000, &[]),
                &[(3, 0, 0, None), (2, 0, 0, None)],
                0,
                Want::Dispatch(&[0]),
            ),
            (
                "an oversize leader still goes alone",
                policy(4, 1000, &[]),
                &[(6, 0, 0, None)],
                0,
                Want::Dispatch(&[0]),
            ),
            (
                "a preferred size is sent at once",
                policy(16, 1000, &[2, 4]),
                &[(1, 0, 0, None), (1, 0, 0, None), (1, 0, 0, None)],
                0,
                Want::Dispatch(&[0, 1]),
            ),
            (
                "the largest preferred prefix wins",
                policy(16, 1000, &[2, 4]),
                &[
                    (1, 0, 0, None),
                    (1, 0, 0, None),
                    (2, 0, 0, None),
                    (1, 0, 0, None),
                ],
                0,
                Want::Dispatch(&[0, 1, 2]),
            ),
            (
                "no preferred prefix waits for the delay",
                policy(16, 1000, &[4]),
                &[(1, 0, 0, None), (2, 0, 0, None)],
                0,
                Want::WaitUntilUs(1000),
            ),
            (
                "other groups are skipped, not mixed in",
                policy(8, 0, &[]),
                &[(1, 7, 0, None), (1, 9, 0, None), (1, 7, 0, None)],
                0,
                Want::Dispatch(&[0, 2]),
            ),
            (
                "the leader is the first in service order (priority first)",
                policy(8, 0, &[]),
                &[(1, 9, 50, None), (1, 7, 0, None), (1, 9, 60, None)],
                100,
                Want::Dispatch(&[0, 2]),
            ),
            (
                "an early deadline shortens the wait",
                policy(8, 1000, &[]),
                &[(1, 0, 0, None), (1, 0, 10, Some(300))],
                20,
                Want::WaitUntilUs(300),
            ),
        ];
        for (name, policy, specs, now_us, want) in cases {
            let t0 = Instant::now();
            let now = t0 + Duration::from_micros(*now_us);
            let got = next_batch(policy, &queue(t0, specs), &Load::default(), now);
            let expected = match want {
                Want::Idle => Decision::Idle,
                Want::WaitUntilUs(us) => Decision::WaitUntil(t0 + Duration::from_micros(*us)),
                Want::Dispatch(members) => Decision::Dispatch(members.to_vec()),
            };
            assert_eq!(got, expected, "case: {name}");
        }
    }

    /// The adaptive wait: (name, wait, queue, load as (inflight, peak, last arrival µs, gap
    /// µs), now µs, decision); max 64 rows, a 20 ms bound.
    #[tokio::test(start_paused = true)]
    async fn adaptive_decision_table() {
        type LoadSpec = (usize, Option<usize>, Option<u64>, Option<u64>);
        type Case<'a> = (&'a str, BatchWait, &'a [Spec], LoadSpec, u64, Want);
        let eight: &[Spec] = &[(1, 0, 0, None); 8];
        let five: &[Spec] = &[(1, 0, 0, None); 5];
        let two: &[Spec] = &[(1, 0, 0, None), (1, 0, 0, None)];
        let with_deadline: &[Spec] = &[(1, 0, 0, None), (1, 0, 10, Some(200))];
        let cases: &[Case] = &[
            (
                "every recent caller is waiting: send now",
                BatchWait::Adaptive,
                eight,
                (8, Some(8), Some(700), Some(50)),
                710,
                Want::Dispatch(&[0, 1, 2, 3, 4, 5, 6, 7]),
            ),
            (
                "callers in a running batch count as waiting",
                BatchWait::Adaptive,
                two,
                (8, Some(8), Some(700), Some(50)),
                710,
                Want::Dispatch(&[0, 1]),
            ),
            (
                "callers still to come: wait, until arrivals would have stopped",
                BatchWait::Adaptive,
                five,
                (5, Some(8), Some(500), Some(50)),
                510,
                Want::WaitUntilUs(800),
            ),
            (
                "arrivals stopped: send",
                BatchWait::Adaptive,
                five,
                (5, Some(8), Some(500), Some(50)),
                800,
                Want::Dispatch(&[0, 1, 2, 3, 4]),
            ),
            (
                "steady arrivals: wait for the next",
                BatchWait::Adaptive,
                five,
                (5, None, Some(4000), Some(1000)),
                4500,
                Want::WaitUntilUs(10_000),
            ),
            (
                "more in flight than the recent peak: send",
                BatchWait::Adaptive,
                five,
                (5, Some(3), Some(4000), Some(1000)),
                4500,
                Want::Dispatch(&[0, 1, 2, 3, 4]),
            ),
            (
                "rare arrivals: the bound holds",
                BatchWait::Adaptive,
                five,
                (5, Some(8), Some(15_000), Some(10_000)),
                19_000,
                Want::WaitUntilUs(20_000),
            ),
            (
                "and at the bound the batch leaves",
                BatchWait::Adaptive,
                five,
                (5, Some(8), Some(15_000), Some(10_000)),
                20_000,
                Want::Dispatch(&[0, 1, 2, 3, 4]),
            ),
            (
                "nothing known yet: Triton's wait",
                BatchWait::Adaptive,
                five,
                (5, None, Some(0), None),
                100,
                Want::WaitUntilUs(20_000),
            ),
            (
                "an early deadline still wakes first",
                BatchWait::Adaptive,
                with_deadline,
                (2, Some(8), Some(10), Some(100)),
                20,
                Want::WaitUntilUs(200),
            ),
            (
                "fixed ignores what is known",
                BatchWait::Fixed,
                eight,
                (8, Some(8), Some(700), Some(50)),
                710,
                Want::WaitUntilUs(20_000),
            ),
        ];
        for (name, wait, specs, (inflight, peak, last, gap), now_us, want) in cases {
            let t0 = Instant::now();
            let at = |us: u64| t0 + Duration::from_micros(us);
            let load = Load {
                inflight: *inflight,
                recent_peak: *peak,
                last_arrival: last.map(at),
                gap: gap.map(Duration::from_micros),
            };
            let policy = Policy {
                wait: *wait,
                ..policy(64, 20_000, &[])
            };
            let got = next_batch(&policy, &queue(t0, specs), &load, at(*now_us));
            let expected = match want {
                Want::Idle => Decision::Idle,
                Want::WaitUntilUs(us) => Decision::WaitUntil(at(*us)),
                Want::Dispatch(members) => Decision::Dispatch(members.to_vec()),
            };
            assert_eq!(got, expected, "case: {name}");
        }
    }

    /// Deferred rows (group 9 here) lead a batch only when nothing real-time is queued, are
    /// capped at `deferred_rows` (4) and never join a real-time batch.
    #[test]
    fn deferred_rows_run_alone_in_small_batches() {
        let t0 = Instant::now();
        let deferred = |specs: &[Spec], flags: &[bool]| {
            let mut q = queue(t0, specs);
            for (c, &d) in q.iter_mut().zip(flags) {
                c.deferred = d;
            }
            q
        };
        let cases: &[(&str, Vec<Candidate>, u64, Decision)] = &[
            (
                "real-time first, deferred left out",
                deferred(
                    &[(1, 0, 0, None), (1, 0, 1, None), (1, 0, 2, None)],
                    &[false, false, true],
                ),
                30_000,
                Decision::Dispatch(vec![0, 1]),
            ),
            (
                "deferred alone, capped",
                deferred(&[(1, 0, 0, None); 6], &[true; 6]),
                0,
                Decision::Dispatch(vec![0, 1, 2, 3]),
            ),
            (
                "deferred rows over the cap wait for none",
                deferred(&[(3, 0, 0, None), (3, 0, 1, None)], &[true, true]),
                0,
                Decision::Dispatch(vec![0]),
            ),
        ];
        for (name, queue, now_us, want) in cases {
            let got = next_batch(
                &policy(64, 20_000, &[]),
                queue,
                &Load::default(),
                t0 + Duration::from_micros(*now_us),
            );
            assert_eq!(&got, want, "{name}");
        }
    }
}
