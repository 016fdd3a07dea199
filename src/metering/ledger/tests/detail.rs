//! `detail` (which requests keep a per-request row) and retention of records and rollups apart.

use super::*;
use crate::metering::record::IDLE_TENANT;

const DAY: i64 = 86_400_000;

/// One request of each cache status, a failed one and an idle stretch, all in minute 0.
fn mixed() -> Vec<UsageRecord> {
    let mut out: Vec<UsageRecord> = ["hit", "coalesced", "miss", "bypass", "none"]
        .iter()
        .enumerate()
        .map(|(i, cache)| tagged(rec(cache, i as i64, "t", "m"), &[], 1.0, 1, cache))
        .collect();
    out[4].outcome = "timeout".into();
    out.push(rec("idle", 9, IDLE_TENANT, "m"));
    out
}

#[tokio::test]
async fn detail_keeps_rows_of_some_requests_and_counts_all_in_the_rollups() {
    let cases: [(Detail, &[&str]); 3] = [
        (
            Detail::All,
            &["hit", "coalesced", "miss", "bypass", "none", "idle"],
        ),
        (Detail::Misses, &["miss", "bypass", "none", "idle"]),
        (Detail::None, &[]),
    ];
    for (detail, kept) in cases {
        let dir = TempDir::new("detail");
        let ledger = open(&dir, |s| s.detail = detail);
        for r in mixed() {
            let _ = ledger.record(r);
        }
        ledger.flush().await.expect("flush");
        for r in mixed() {
            let name = r
                .request_id
                .split('-')
                .next()
                .unwrap_or_default()
                .to_string();
            let found = ledger.usage(&r.request_id).expect("read");
            assert_eq!(
                found.is_some(),
                kept.contains(&name.as_str()),
                "{detail:?} {name}"
            );
        }
        assert_eq!(count_fresh(&dir.db()), kept.len() as i64, "{detail:?}");
        // Whatever was kept, the reports count every request and the idle cost.
        let rows = ledger
            .costs(&CostQuery {
                from_ms: 0,
                to_ms: 60_000,
                group_by: vec![],
            })
            .expect("costs");
        let summary: Vec<_> = rows.iter().map(|r| (r.requests, r.cache_hits)).collect();
        assert_eq!(summary, [(5, 2), (0, 0)], "{detail:?}");
        let why = ledger.why_not_kept(&id("hit", 0), 1_000);
        assert_eq!(why.is_some(), detail != Detail::All, "{detail:?}: {why:?}");
        if let Some(why) = why {
            assert!(why.contains(detail.as_str()), "{why}");
        }
    }
}

#[tokio::test]
async fn retention_tells_a_purged_record_from_an_unknown_one() {
    let dir = TempDir::new("why");
    let ledger = open(&dir, |s| s.retention_days = 1);
    let why = ledger
        .why_not_kept(&id("old", 0), 2 * DAY)
        .expect("purged by age");
    assert!(why.contains("retention_days = 1"), "{why}");
    assert_eq!(ledger.why_not_kept(&id("new", DAY + 5), 2 * DAY), None);
    assert_eq!(ledger.why_not_kept("no-time-here", 2 * DAY), None);
}

/// (records, rollup rows) in the file.
fn counts(dir: &TempDir) -> (i64, i64) {
    let conn = rusqlite::Connection::open(dir.db()).expect("conn");
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    };
    (count("usage"), count("usage_rollup"))
}

#[tokio::test]
async fn records_and_rollups_expire_apart() {
    let dir = TempDir::new("expire");
    let ledger = open(&dir, |s| {
        s.retention_days = 1;
        s.rollup_retention_days = 3;
    });
    // One record a day for five days, each in a minute of its own.
    for day in 0..5 {
        let _ = ledger.record(rec(&format!("d{day}"), day * DAY, "t", "m"));
    }
    ledger.flush().await.expect("flush");
    assert_eq!(counts(&dir), (5, 5));
    // On day 5: records of days 0 to 3 go, rollups of days 0 and 1.
    let purged = ledger.purge_expired(5 * DAY).expect("purge");
    assert_eq!(
        purged,
        Purged {
            records: 4,
            rollups: 2
        }
    );
    assert_eq!(counts(&dir), (1, 3));
    let total = ledger
        .costs(&CostQuery {
            from_ms: 0,
            to_ms: 5 * DAY,
            group_by: vec![],
        })
        .expect("costs");
    assert_eq!(total[0].requests, 3, "days 2 to 4 are still reported");
    let keep_all = TempDir::new("expire0");
    let forever = open(&keep_all, |s| {
        s.retention_days = 0;
        s.rollup_retention_days = 0;
    });
    assert_eq!(
        forever.purge_expired(i64::MAX).expect("noop"),
        Purged::default()
    );
}

/// A purge of many chunks commits what arrives meanwhile: nothing is lost or counted twice,
/// whichever way the two interleave.
#[tokio::test]
async fn records_arriving_during_a_long_purge_are_all_committed() {
    let dir = TempDir::new("purge-busy");
    let ledger = open(&dir, |_| {});
    let old = 4 * writer::PURGE_CHUNK as i64;
    for i in 0..old {
        let _ = ledger.record(rec(&format!("o{i}"), i / 100, "t", "m"));
    }
    ledger.flush().await.expect("flush");
    let purging = {
        let ledger = ledger.clone();
        std::thread::spawn(move || ledger.purge_older_than(DAY))
    };
    let fresh = 3_000;
    for i in 0..fresh {
        let _ = ledger.record(rec(&format!("f{i}"), 2 * DAY + i, "t", "m"));
    }
    ledger.flush().await.expect("flush");
    let purged = purging.join().expect("purge thread").expect("purge");
    assert_eq!(purged, old as u64);
    assert_eq!(counts(&dir).0, fresh);
    assert_eq!(ledger.stats().committed, (old + fresh) as u64);
}
