//! Cost over time from the rollups: steps aligned to the epoch, groups (tags too), idle time
//! apart, and the checks on a query.

use super::*;
use crate::metering::record::IDLE_TENANT;

const MINUTE: i64 = 60_000;

/// Requests in minutes 0, 1, 2 and 5 from two tenants, an idle stretch in minute 1.
async fn spread_ledger(dir: &TempDir) -> Ledger {
    let ledger = open(dir, |_| {});
    let mut idle = tagged(
        rec("idle", MINUTE + 5, IDLE_TENANT, "m"),
        &[],
        16.0,
        0,
        "none",
    );
    idle.team = SmolStr::default();
    let records = [
        tagged(rec("a0", 10, "a", "m"), &[("env", "prod")], 1.0, 1, "miss"),
        tagged(
            rec("a1", MINUTE + 1, "a", "m"),
            &[("env", "prod")],
            2.0,
            1,
            "hit",
        ),
        tagged(
            rec("b1", MINUTE + 2, "b", "m"),
            &[("env", "dev")],
            4.0,
            1,
            "coalesced",
        ),
        tagged(rec("a2", 2 * MINUTE + 3, "a", "m"), &[], 8.0, 1, "miss"),
        tagged(
            rec("b5", 5 * MINUTE, "b", "m"),
            &[("env", "dev")],
            32.0,
            1,
            "miss",
        ),
        idle,
    ];
    for r in records {
        let _ = ledger.record(r);
    }
    ledger.flush().await.expect("flush");
    ledger
}

/// (group, [(t, requests, cost, hits)]) per series.
type Expected<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, u64, f64, u64)]);

#[tokio::test]
async fn steps_and_groups_sum_the_rollups() {
    let dir = TempDir::new("series");
    let ledger = spread_ledger(&dir).await;
    let cases: Vec<(&str, i64, i64, i64, Vec<Expected<'_>>)> = vec![
        (
            "",
            0,
            10 * MINUTE,
            MINUTE,
            vec![
                (
                    &[],
                    &[
                        (0, 1, 1.0, 0),
                        (MINUTE, 2, 6.0, 2),
                        (2 * MINUTE, 1, 8.0, 0),
                        (5 * MINUTE, 1, 32.0, 0),
                    ],
                ),
                (&[("tenant", IDLE_TENANT)], &[(MINUTE, 0, 16.0, 0)]),
            ],
        ),
        (
            "tenant",
            0,
            10 * MINUTE,
            2 * MINUTE,
            vec![
                (&[("tenant", IDLE_TENANT)], &[(0, 0, 16.0, 0)]),
                (
                    &[("tenant", "a")],
                    &[(0, 2, 3.0, 1), (2 * MINUTE, 1, 8.0, 0)],
                ),
                (
                    &[("tenant", "b")],
                    &[(0, 1, 4.0, 1), (4 * MINUTE, 1, 32.0, 0)],
                ),
            ],
        ),
        (
            "tag:env",
            MINUTE,
            5 * MINUTE,
            MINUTE,
            vec![
                (&[("tag:env", "")], &[(2 * MINUTE, 1, 8.0, 0)]),
                (
                    &[("tag:env", ""), ("tenant", IDLE_TENANT)],
                    &[(MINUTE, 0, 16.0, 0)],
                ),
                (&[("tag:env", "dev")], &[(MINUTE, 1, 4.0, 1)]),
                (&[("tag:env", "prod")], &[(MINUTE, 1, 2.0, 1)]),
            ],
        ),
    ];
    for (group_by, from_ms, to_ms, step_ms, expected) in cases {
        let query = TimeseriesQuery {
            from_ms,
            to_ms,
            step_ms,
            group_by: GroupKey::parse_list(group_by).expect("keys"),
        };
        let got: Vec<_> = ledger
            .timeseries(&query)
            .expect("series")
            .into_iter()
            .map(|s| {
                let points: Vec<_> = s
                    .points
                    .iter()
                    .map(|p| (p.t_ms, p.requests, p.cost_usd, p.cache_hits))
                    .collect();
                (s.group, points)
            })
            .collect();
        let want: Vec<_> = expected
            .iter()
            .map(|(group, points)| {
                let group: Vec<(String, String)> = group
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                (group, points.to_vec())
            })
            .collect();
        assert_eq!(got, want, "group_by={group_by:?} step={step_ms}");
    }
}

#[test]
fn bad_steps_and_ranges_are_refused() {
    let dir = TempDir::new("series-bad");
    let ledger = open(&dir, |_| {});
    let query = |from_ms, to_ms, step_ms| TimeseriesQuery {
        from_ms,
        to_ms,
        step_ms,
        group_by: vec![],
    };
    let day = 86_400_000;
    let cases = [
        (query(0, day, 30_000), Some(QueryError::BadStep(30))),
        (query(0, day, 90_000), Some(QueryError::BadStep(90))),
        (query(0, day, 0), Some(QueryError::BadStep(0))),
        (
            query(0, 30 * day, MINUTE),
            Some(QueryError::TooManyPoints { points: 43_201 }),
        ),
        (
            query(day, 0, MINUTE),
            Some(QueryError::FromAfterTo {
                from_ms: day,
                to_ms: 0,
            }),
        ),
        (query(0, 30 * day, 3_600_000), None),
    ];
    for (q, expected) in cases {
        let got = ledger.timeseries(&q).err();
        match (got, expected) {
            (None, None) => {}
            (Some(LedgerError::Query(e)), Some(want)) => assert_eq!(e, want, "{q:?}"),
            (other, want) => panic!("{q:?}: {other:?}, wanted {want:?}"),
        }
    }
}
