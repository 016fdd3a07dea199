//! The FOCUS export, parsed back with a small RFC 4180 reader.

use std::collections::HashMap;

use super::*;
use crate::metering::record::IDLE_TENANT;

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
    (idle.compute_us, idle.batch_size, idle.team) = (60_000_000, 0, SmolStr::default());
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
