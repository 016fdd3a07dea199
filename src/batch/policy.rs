//! The batching decision, as a pure function of the policy, the queue and the clock, so the
//! rules (Triton's dynamic batcher semantics) are tested as a table without threads or sleeps.

use super::BatchGroup;
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
}

/// The part of a queued request the decision needs. Queues hand these over in service order:
/// highest priority first, then arrival order.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub rows: usize,
    /// Requests batch together only when their group matches (same non-batch dims and dtypes).
    pub group: BatchGroup,
    pub enqueued: Instant,
    pub deadline: Option<Instant>,
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
/// preferred size; otherwise it waits until the leader has waited `max_queue_delay`.
pub fn next_batch(policy: &Policy, queue: &[Candidate], now: Instant) -> Decision {
    let Some(leader) = queue.first() else {
        return Decision::Idle;
    };
    let max_rows = policy.max_batch_rows.max(1);
    let in_group = |c: &&Candidate| c.group == leader.group;
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
    let send = if full {
        Some(joined)
    } else if preferred_prefix.is_some() {
        preferred_prefix
    } else if now >= leader.enqueued + policy.max_queue_delay {
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
    let send_at = leader.enqueued + policy.max_queue_delay;
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
            let got = next_batch(policy, &queue(t0, specs), now);
            let expected = match want {
                Want::Idle => Decision::Idle,
                Want::WaitUntilUs(us) => Decision::WaitUntil(t0 + Duration::from_micros(*us)),
                Want::Dispatch(members) => Decision::Dispatch(members.to_vec()),
            };
            assert_eq!(got, expected, "case: {name}");
        }
    }
}
