//! Reads: grouped costs from the rollups (a data-driven table), hit ratio and percentiles, query validation.

use super::*;
use crate::metering::record::IDLE_TENANT;

/// Four requests from two tenants, one idle stretch, and one record in a later minute than
/// the queried one (ranges cover the whole minutes they touch).
async fn sample_ledger(dir: &TempDir) -> Ledger {
    let ledger = open(dir, |_| {});
    let mut idle = tagged(rec("idle", 500, IDLE_TENANT, "m1"), &[], 16.0, 0, "none");
    (idle.team, idle.project, idle.outcome) =
        (SmolStr::default(), SmolStr::default(), "idle".into());
    let records = [
        tagged(
            rec("a1", 100, "a", "m1"),
            &[("env", "prod")],
            1.0,
            2,
            "miss",
        ),
        tagged(rec("a2", 200, "a", "m2"), &[("env", "dev")], 2.0, 1, "hit"),
        tagged(
            rec("b1", 300, "b", "m1"),
            &[("env", "prod")],
            4.0,
            3,
            "coalesced",
        ),
        tagged(rec("b2", 400, "b", "m1"), &[], 8.0, 1, "bypass"),
        idle,
        tagged(rec("late", 120_000, "a", "m1"), &[], 100.0, 1, "miss"),
    ];
    for r in records {
        let _ = ledger.record(r);
    }
    ledger.flush().await.expect("flush");
    ledger
}

type Expected<'a> = (&'a [(&'a str, &'a str)], u64, u64, f64);
/// (group, requests, rows, cost) of one row.
type Summary = (Vec<(String, String)>, u64, u64, f64);

fn check(ledger: &Ledger, group_by: &str, expected: &[Expected<'_>]) {
    let query = CostQuery {
        from_ms: 0,
        to_ms: 10_000,
        group_by: GroupKey::parse_list(group_by).expect("keys"),
    };
    let rows = ledger.costs(&query).expect("costs");
    let got: Vec<Summary> = rows
        .iter()
        .map(|r| (r.group.clone(), r.requests, r.rows, r.cost_usd))
        .collect();
    let want: Vec<Summary> = expected
        .iter()
        .map(|(g, req, rows, cost)| {
            (
                g.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                *req,
                *rows,
                *cost,
            )
        })
        .collect();
    assert_eq!(got, want, "group_by={group_by:?}");
}

#[tokio::test]
async fn costs_group_and_sum_with_idle_rows_apart() {
    let dir = TempDir::new("costs");
    let ledger = sample_ledger(&dir).await;
    let idle = ("tenant", IDLE_TENANT);
    check(&ledger, "", &[(&[], 4, 7, 15.0), (&[idle], 0, 0, 16.0)]);
    check(
        &ledger,
        "tenant",
        &[
            (&[idle], 0, 0, 16.0),
            (&[("tenant", "a")], 2, 3, 3.0),
            (&[("tenant", "b")], 2, 4, 12.0),
        ],
    );
    check(
        &ledger,
        "model",
        &[
            (&[("model", "m1")], 3, 6, 13.0),
            (&[("model", "m1"), idle], 0, 0, 16.0),
            (&[("model", "m2")], 1, 1, 2.0),
        ],
    );
    check(
        &ledger,
        "team,tag:env",
        &[
            (&[("team", ""), ("tag:env", ""), idle], 0, 0, 16.0),
            (&[("team", "team-a"), ("tag:env", "dev")], 1, 1, 2.0),
            (&[("team", "team-a"), ("tag:env", "prod")], 1, 2, 1.0),
            (&[("team", "team-b"), ("tag:env", "")], 1, 1, 8.0),
            (&[("team", "team-b"), ("tag:env", "prod")], 1, 3, 4.0),
        ],
    );
    check(
        &ledger,
        "tenant,model",
        &[
            (&[idle, ("model", "m1")], 0, 0, 16.0),
            (&[("tenant", "a"), ("model", "m1")], 1, 2, 1.0),
            (&[("tenant", "a"), ("model", "m2")], 1, 1, 2.0),
            (&[("tenant", "b"), ("model", "m1")], 2, 4, 12.0),
        ],
    );
    check(
        &ledger,
        "project,cache",
        &[
            (&[("project", ""), ("cache", "none"), idle], 0, 0, 16.0),
            (&[("project", "proj"), ("cache", "bypass")], 1, 1, 8.0),
            (&[("project", "proj"), ("cache", "coalesced")], 1, 3, 4.0),
            (&[("project", "proj"), ("cache", "hit")], 1, 1, 2.0),
            (&[("project", "proj"), ("cache", "miss")], 1, 2, 1.0),
        ],
    );
    // hit and coalesced out of hit, coalesced and miss; bypass did not consult the cache.
    let all = ledger
        .costs(&CostQuery {
            from_ms: 0,
            to_ms: 10_000,
            group_by: vec![],
        })
        .expect("costs");
    assert!((all[0].hit_ratio - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(all[0].cache_hits, 2);
    assert_eq!((all[1].hit_ratio, all[1].p50_latency_ms), (0.0, None));
}

#[tokio::test]
async fn percentiles_are_the_bucket_bound_of_the_nearest_rank_per_group() {
    let dir = TempDir::new("pct");
    let ledger = open(&dir, |_| {});
    // 1..=100 ms in a scrambled order for tenant p; one 7 ms request for tenant q.
    for i in 0..100u64 {
        let mut r = rec(&format!("p{i}"), 1, "p", "m");
        r.latency_us = (i * 37 % 100 + 1) * 1_000;
        let _ = ledger.record(r);
    }
    let mut q = rec("q", 1, "q", "m");
    q.latency_us = 7_000;
    let _ = ledger.record(q);
    ledger.flush().await.expect("flush");
    let rows = ledger
        .costs(&CostQuery {
            from_ms: 0,
            to_ms: 2,
            group_by: vec![GroupKey::Tenant],
        })
        .expect("costs");
    let pct: Vec<_> = rows
        .iter()
        .map(|r| (r.p50_latency_ms, r.p99_latency_ms))
        .collect();
    // Nearest rank gives 50, 99 and 7 ms; the rollups answer the upper bound of each one's bucket.
    let bound = |ms: u64| Some(rollup::bucket_upper_us(rollup::bucket_of(ms * 1_000)) / 1000.0);
    assert_eq!(pct, [(bound(50), bound(99)), (bound(7), bound(7))]);
}

#[tokio::test]
async fn bad_queries_are_refused_with_clear_messages() {
    let dir = TempDir::new("badq");
    let ledger = open(&dir, |_| {});
    let day = 86_400_000;
    let costs = |from_ms, to_ms| {
        ledger.costs(&CostQuery {
            from_ms,
            to_ms,
            group_by: vec![],
        })
    };
    assert!(matches!(
        costs(10, 5),
        Err(LedgerError::Query(QueryError::FromAfterTo { .. }))
    ));
    assert!(matches!(
        costs(0, 367 * day),
        Err(LedgerError::Query(QueryError::RangeTooLong { days: 367 }))
    ));
    assert!(costs(0, 366 * day).is_ok() && costs(5, 5).is_ok());
    let unknown = GroupKey::parse_list("tenant, colour").expect_err("unknown");
    assert_eq!(unknown, QueryError::UnknownGroupKey("colour".into()));
    assert!(unknown.to_string().contains("\"colour\""));
    assert_eq!(
        GroupKey::parse_list("tenant,tenant"),
        Err(QueryError::DuplicateGroupKey("tenant".into()))
    );
    assert!(matches!(
        GroupKey::parse_list("tag:"),
        Err(QueryError::BadTagKey(_))
    ));
    assert!(matches!(
        GroupKey::parse_list("tag:a\"b"),
        Err(QueryError::BadTagKey(_))
    ));
    assert!(
        matches!(GroupKey::parse_list("tenant,,model"), Err(QueryError::UnknownGroupKey(k)) if k.is_empty())
    );
    assert_eq!(GroupKey::parse_list(" ").expect("empty"), vec![]);
    let keys = GroupKey::parse_list("model,tag:team/x").expect("keys");
    assert_eq!(
        keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        ["model", "tag:team/x"]
    );
    let focus = |currency: &str| FocusQuery {
        from_ms: 0,
        to_ms: 1,
        currency: currency.into(),
        billing_account: "acct".into(),
        provider: "p".into(),
    };
    assert!(matches!(
        ledger.focus_csv(&focus("usd")),
        Err(LedgerError::Query(QueryError::BadCurrency(_)))
    ));
    assert!(ledger.focus_csv(&focus("EUR")).is_ok());
}

/// Records spread over three hours and a bit: every range, whether or not it holds whole hours,
/// sums the same from the two tiers as from the records themselves.
#[tokio::test]
async fn ranges_across_hours_read_both_tiers_without_counting_twice() {
    let dir = TempDir::new("tiers");
    let ledger = open(&dir, |_| {});
    let (hour, minute) = (3_600_000i64, 60_000i64);
    let base = 1_796_079_600_000; // 2026-11-30T23:00:00Z
    let times: Vec<i64> = (0..200).map(|i| base + i * 71_000).collect();
    for (i, t) in times.iter().enumerate() {
        let mut r = rec(&format!("r{i}"), *t, "t", "m");
        r.cost_usd = 1.0 + i as f64;
        let _ = ledger.record(r);
    }
    ledger.flush().await.expect("flush");
    let cases = [
        (base, base + 4 * hour),
        (base + 17 * minute, base + 3 * hour + 5 * minute),
        (base + 17 * minute, base + 40 * minute),
        (base + hour, base + 2 * hour),
        (base + 59 * minute, base + 2 * hour + minute),
        (base - hour, base + 10 * hour),
    ];
    for (from_ms, to_ms) in cases {
        let rows = ledger
            .costs(&CostQuery {
                from_ms,
                to_ms,
                group_by: vec![],
            })
            .expect("costs");
        let (want_n, want_cost) = times
            .iter()
            .enumerate()
            .filter(|(_, t)| **t >= from_ms && **t < to_ms)
            .fold((0u64, 0.0), |(n, c), (i, _)| (n + 1, c + 1.0 + i as f64));
        let got = rows
            .first()
            .map(|r| (r.requests, r.cost_usd))
            .unwrap_or((0, 0.0));
        assert_eq!(got.0, want_n, "[{from_ms}, {to_ms})");
        assert!(
            (got.1 - want_cost).abs() < 1e-9,
            "[{from_ms}, {to_ms}): {got:?}"
        );
        let spend = ledger.spend("t", from_ms).expect("spend");
        let since: f64 = times
            .iter()
            .enumerate()
            .filter(|(_, t)| **t >= from_ms)
            .map(|(i, _)| 1.0 + i as f64)
            .sum();
        assert!(
            (spend - since).abs() < 1e-9,
            "since {from_ms}: {spend} vs {since}"
        );
    }
}
