//! Reads: grouped costs (a data-driven table), hit ratio and percentiles, query validation,
//! and the FOCUS export parsed back with a small RFC 4180 reader.

use std::collections::HashMap;

use super::*;
use crate::metering::record::IDLE_TENANT;

fn tagged(
    mut r: UsageRecord,
    tags: &[(&str, &str)],
    cost: f64,
    rows: u32,
    cache: &str,
) -> UsageRecord {
    r.tags = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (r.cost_usd, r.rows, r.cache) = (cost, rows, cache.into());
    r
}

/// Four requests from two tenants, one idle stretch, and one record outside [0, 10 000).
async fn sample_ledger(dir: &TempDir) -> Ledger {
    let ledger = open(dir, |_| {});
    let mut idle = tagged(rec("idle", 500, IDLE_TENANT, "m1"), &[], 16.0, 0, "none");
    (idle.team, idle.project, idle.outcome) = (String::new(), String::new(), "idle".into());
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
        tagged(rec("late", 20_000, "a", "m1"), &[], 100.0, 1, "miss"),
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
async fn percentiles_are_nearest_rank_per_group() {
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
    assert_eq!(pct, [(Some(50.0), Some(99.0)), (Some(7.0), Some(7.0))]);
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

/// RFC 4180 reader: quoted fields may hold commas, doubled quotes and line breaks.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut chars, mut quoted) = (text.chars().peekable(), false);
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => assert_eq!(chars.next(), Some('\n'), "CR without LF"),
            (false, '\n') => panic!("bare LF ends a record"),
            (false, c) => field.push(c),
        }
        if !quoted && c == '\r' {
            record.push(std::mem::take(&mut field));
            records.push(std::mem::take(&mut record));
        }
    }
    assert!(
        record.is_empty() && field.is_empty() && !quoted,
        "unterminated record"
    );
    records
}

const MANDATORY: [&str; 21] = [
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
];

#[tokio::test]
async fn focus_export_has_every_mandatory_column_and_hourly_rows() {
    let dir = TempDir::new("focus");
    let ledger = open(&dir, |_| {});
    let hour_23 = 1_796_079_600_000; // 2026-11-30T23:00:00Z
    let minute = 60_000;
    let tags = [("env", "say \"hi\", ok")];
    let mut x1 = tagged(
        rec("x1", hour_23 + 10 * minute, "a", "m1"),
        &tags,
        1.0,
        2,
        "miss",
    );
    x1.compute_us = 4_000_000; // batch of 4 rows: this request's 2 rows used 2 s
    let x2 = tagged(
        rec("x2", hour_23 + 50 * minute, "a", "m1"),
        &tags,
        0.0,
        1,
        "hit",
    );
    let mut x3 = tagged(
        rec("x3", hour_23 + 65 * minute, "a", "m1"),
        &tags,
        0.5,
        1,
        "miss",
    );
    x3.compute_us = 4_000_000;
    let mut idle = tagged(
        rec("idle", hour_23 + 20 * minute, IDLE_TENANT, "m1"),
        &[],
        0.25,
        0,
        "none",
    );
    (idle.compute_us, idle.batch_size, idle.team) = (60_000_000, 0, String::new());
    for r in [x1, x2, x3, idle] {
        let _ = ledger.record(r);
    }
    ledger.flush().await.expect("flush");
    let query = FocusQuery {
        from_ms: hour_23,
        to_ms: hour_23 + 2 * 60 * minute,
        currency: "USD".into(),
        billing_account: "acct, 1".into(),
        provider: "Tollgate".into(),
    };
    let records = parse_csv(&ledger.focus_csv(&query).expect("export"));
    let header = &records[0];
    for column in MANDATORY {
        assert!(header.iter().any(|h| h == column), "missing {column}");
    }
    assert!(records.iter().all(|r| r.len() == header.len()));
    let rows: Vec<HashMap<&str, &str>> = records[1..]
        .iter()
        .map(|r| {
            header
                .iter()
                .map(String::as_str)
                .zip(r.iter().map(String::as_str))
                .collect()
        })
        .collect();
    let pick = |key: &str| rows.iter().map(|r| r[key]).collect::<Vec<_>>();
    assert_eq!(pick("SubAccountId"), [IDLE_TENANT, "a", "a"]);
    assert_eq!(
        pick("ChargePeriodStart"),
        [
            "2026-11-30T23:00:00Z",
            "2026-11-30T23:00:00Z",
            "2026-12-01T00:00:00Z"
        ]
    );
    assert_eq!(
        pick("ChargePeriodEnd"),
        [
            "2026-12-01T00:00:00Z",
            "2026-12-01T00:00:00Z",
            "2026-12-01T01:00:00Z"
        ]
    );
    assert_eq!(
        pick("BillingPeriodStart"),
        [
            "2026-11-01T00:00:00Z",
            "2026-11-01T00:00:00Z",
            "2026-12-01T00:00:00Z"
        ]
    );
    assert_eq!(
        pick("BillingPeriodEnd"),
        [
            "2026-12-01T00:00:00Z",
            "2026-12-01T00:00:00Z",
            "2027-01-01T00:00:00Z"
        ]
    );
    assert_eq!(pick("BilledCost"), ["0.25", "1", "0.5"]);
    assert_eq!(pick("ConsumedQuantity"), ["60", "2", "1"]);
    assert_eq!(pick("x_Requests"), ["0", "2", "1"]);
    assert_eq!(pick("x_CacheHits"), ["0", "1", "0"]);
    assert_eq!(pick("x_Rows"), ["0", "3", "1"]);
    assert_eq!(pick("BillingAccountId"), ["acct, 1"; 3]);
    let a = &rows[1];
    assert_eq!(
        (a["ServiceCategory"], a["ChargeCategory"], a["ChargeClass"]),
        ("AI and Machine Learning", "Usage", "")
    );
    assert_eq!(
        (a["PricingUnit"], a["ResourceId"], a["BillingCurrency"]),
        ("Hours", "m1", "USD")
    );
    assert!((a["PricingQuantity"].parse::<f64>().expect("number") - 2.0 / 3600.0).abs() < 1e-15);
    let tags: serde_json::Value = serde_json::from_str(a["Tags"]).expect("tags JSON");
    assert_eq!(tags["env"], "say \"hi\", ok");
    assert_eq!(tags["tollgate/team"], "team-a");
    assert!(rows[0]["ChargeDescription"].starts_with("Idle"));
}
