//! Tests of the ledger against real SQLite files in unique temporary directories: writing,
//! group commit and retention here; overflow and write failures in `failure`, queries in
//! `read`, the FOCUS export in `export`, process kills in `crash`, schema 1 files and lookups
//! by id in `schema`.

mod crash;
mod detail;
mod export;
mod failure;
mod read;
mod schema;
mod timeseries;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::metering::record;
use smol_str::SmolStr;

/// A fresh directory under the system temp dir, removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "tollgate-ledger-{name}-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    pub(super) fn db(&self) -> PathBuf {
        self.0.join("ledger").join("usage.sqlite")
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The id a record named `name` gets: ending with its time, as the gateway's ids do.
pub(super) fn id(name: &str, time_ms: i64) -> String {
    let mut id = name.to_string();
    record::push_id_time(&mut id, time_ms);
    id
}

pub(super) fn rec(name: &str, time_ms: i64, tenant: &str, model: &str) -> UsageRecord {
    UsageRecord {
        request_id: id(name, time_ms).into(),
        time_ms,
        tenant: SmolStr::new(tenant),
        team: format!("team-{tenant}").into(),
        project: "proj".into(),
        tags: Vec::new(),
        model: SmolStr::new(model),
        version: "1".into(),
        protocol: "http".into(),
        cache: "miss".into(),
        rows: 1,
        batch_size: 4,
        queue_us: 100,
        compute_us: 4_000,
        latency_us: 5_000,
        cost_usd: 0.001,
        saved_usd: 0.0,
        outcome: "success".into(),
        device: "cpu".into(),
        lane: "realtime".into(),
    }
}

pub(super) fn tagged(
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
    (r.cost_usd, r.rows, r.cache) = (cost, rows, SmolStr::new(cache));
    r
}

pub(super) fn open(dir: &TempDir, adjust: impl FnOnce(&mut LedgerSettings)) -> Ledger {
    let mut settings = LedgerSettings::new(dir.db());
    adjust(&mut settings);
    Ledger::open(settings).expect("open ledger")
}

/// Counts rows through a connection of its own, as another process would see them.
pub(super) fn count_fresh(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("fresh connection");
    conn.query_row("SELECT COUNT(*) FROM usage", [], |r| r.get(0))
        .expect("count")
}

#[tokio::test]
async fn every_field_round_trips() {
    let dir = TempDir::new("roundtrip");
    let ledger = open(&dir, |_| {});
    let mut r = rec("req-1", 1_795_906_800_123, "acme", "resnet");
    r.tags = vec![
        ("env".into(), "prod".into()),
        ("region".into(), "eu, \"west\"".into()),
    ];
    r.cache = "hit".into();
    (r.rows, r.batch_size, r.queue_us, r.compute_us, r.latency_us) = (3, 64, 7, 1 << 40, 9);
    (r.cost_usd, r.saved_usd) = (0.125, 1e-9);
    (r.outcome, r.device, r.protocol) = ("timeout".into(), "cuda:0".into(), "grpc".into());
    assert_eq!(ledger.record(r.clone()), Submitted::Queued);
    ledger.flush().await.expect("flush");
    assert_eq!(ledger.usage(&r.request_id).expect("read"), Some(r));
    assert_eq!(ledger.usage("missing").expect("read"), None);
    assert_eq!(ledger.usage(&id("req-2", 5)).expect("read"), None);
}

#[test]
fn groups_of_any_size_insert_every_record_with_its_own_values() {
    // Around the multi-row statement's 16: none, a remainder only, exact runs, runs plus rest.
    for count in [0usize, 1, 15, 16, 17, 32, 33, 50] {
        let dir = TempDir::new("insert-all");
        let opened = store::open_writer(&dir.db(), false).expect("open");
        let records: Vec<UsageRecord> = (0..count)
            .map(|i| {
                let mut r = rec(&format!("g{i}"), 1_795_906_800_000 + i as i64, "acme", "m");
                (r.rows, r.cost_usd) = (i as u32, i as f64 / 8.0);
                if i % 3 == 0 {
                    r.tags = vec![("env".into(), format!("e{i}"))];
                }
                r
            })
            .collect();
        let refs: Vec<&UsageRecord> = records.iter().collect();
        store::insert_all(&opened.conn, &refs, &mut Vec::new()).expect("insert");
        let sql = format!("SELECT {} FROM usage ORDER BY id", store::RECORD_COLUMNS);
        let stored: Vec<UsageRecord> = sql::sqlite_rows(&opened.conn, &sql, &[])
            .expect("select")
            .into_iter()
            .map(|row| store::record_from_cells(row).expect("record"))
            .collect();
        assert_eq!(stored, records, "{count} records");
    }
}

#[tokio::test]
async fn group_commit_makes_records_visible_after_flush() {
    let dir = TempDir::new("group");
    let ledger = open(&dir, |_| {});
    for i in 0..2_500 {
        assert_eq!(
            ledger.record(rec(&format!("r{i}"), i, "t", "m")),
            Submitted::Queued
        );
    }
    ledger.flush().await.expect("flush");
    assert_eq!(count_fresh(&dir.db()), 2_500);
    let stats = ledger.stats();
    assert_eq!(
        (stats.committed, stats.pending, stats.dropped),
        (2_500, 0, 0)
    );
}

#[tokio::test]
async fn a_lone_record_commits_without_a_flush() {
    let dir = TempDir::new("lone");
    let ledger = open(&dir, |_| {});
    let _ = ledger.record(rec("only", 1, "t", "m"));
    let started = Instant::now();
    while ledger.stats().committed == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never committed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(count_fresh(&dir.db()), 1);
}

#[tokio::test]
async fn record_committed_resolves_after_the_commit() {
    let dir = TempDir::new("sync");
    let ledger = open(&dir, |s| s.sync = true);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                ledger
                    .record_committed(rec(&format!("s{i}"), i, "t", "m"))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("committed");
        // Once any waiter resolved, its row is on disk for anyone.
        assert!(count_fresh(&dir.db()) >= 1);
    }
    assert_eq!(count_fresh(&dir.db()), 50);
    let conn = rusqlite::Connection::open(dir.db()).expect("fresh");
    let sync: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(sync, store::SCHEMA_VERSION);
}

#[tokio::test]
async fn dropping_the_last_handle_commits_what_was_queued() {
    let dir = TempDir::new("drop");
    let ledger = open(&dir, |_| {});
    for i in 0..300 {
        let _ = ledger.record(rec(&format!("d{i}"), i, "t", "m"));
    }
    drop(ledger);
    assert_eq!(count_fresh(&dir.db()), 300);
    let again = open(&dir, |_| {});
    assert!(again.usage(&id("d299", 299)).expect("read").is_some());
}

/// Ids are unique by construction, so the ledger no longer checks them (schema 2): a record
/// is never refused for its id.
#[tokio::test]
async fn a_repeated_request_id_is_still_recorded() {
    let dir = TempDir::new("dup");
    let ledger = open(&dir, |_| {});
    let _ = ledger.record(rec("same", 1, "t", "m"));
    let _ = ledger.record(rec("same", 1, "t", "m"));
    ledger
        .record_committed(rec("other", 3, "t", "m"))
        .await
        .expect("commit");
    let stats = ledger.stats();
    assert_eq!((stats.committed, stats.pending), (3, 0));
    assert_eq!(count_fresh(&dir.db()), 3);
}

#[test]
fn settings_follow_the_config() {
    let mut config = crate::config::LedgerConfig {
        durability: crate::config::Durability::Sync,
        ..Default::default()
    };
    let settings = LedgerSettings::from_config(&config);
    assert!(settings.sync);
    assert_eq!(settings.channel_capacity, DEFAULT_CHANNEL_CAPACITY);
    config.durability = crate::config::Durability::Async;
    assert!(!LedgerSettings::from_config(&config).sync);
}

#[test]
fn purge_deletes_only_older_records() {
    let dir = TempDir::new("purge");
    let ledger = open(&dir, |s| s.retention_days = 1);
    for i in 0..12_000 {
        let _ = ledger.record(rec(&format!("p{i}"), i, "t", "m"));
    }
    // The purge runs after the records queued before it, with no flush needed.
    assert_eq!(ledger.purge_older_than(11_000).expect("purge"), 11_000);
    assert!(ledger.usage(&id("p10999", 10_999)).expect("read").is_none());
    assert!(ledger.usage(&id("p11000", 11_000)).expect("read").is_some());
    let expired = ledger.purge_expired(DAY_MS + 11_500).expect("expire");
    assert_eq!((expired.records, expired.rollups), (500, 0));
    assert_eq!(count_fresh(&dir.db()), 500);
}

#[tokio::test]
async fn spend_sums_a_tenant_or_a_team_since_a_time() {
    let dir = TempDir::new("spend");
    let ledger = open(&dir, |_| {});
    let mut idle = rec("idle", 50, crate::metering::record::IDLE_TENANT, "m");
    idle.team = "team-a".into();
    // Spend is read from the rollups, by whole minutes (budget periods start on one).
    for r in [
        rec("1", 10, "a", "m"),
        rec("2", 60_100, "a", "m"),
        rec("3", 60_100, "b", "m"),
        idle,
    ] {
        let _ = ledger.record(r);
    }
    ledger.flush().await.expect("flush");
    assert!((ledger.spend("a", 0).expect("spend") - 0.002).abs() < 1e-12);
    assert!((ledger.spend("a", 60_000).expect("spend") - 0.001).abs() < 1e-12);
    assert_eq!(ledger.spend("nobody", 0).expect("spend"), 0.0);
    assert!((ledger.spend_by_team("team-a", 0).expect("team") - 0.002).abs() < 1e-12);
}

#[test]
fn durability_picks_wal_and_the_sync_level() {
    use rusqlite::types::Value;
    for (sync, level) in [(false, 1), (true, 2)] {
        let dir = TempDir::new("pragmas");
        let ledger = open(&dir, |s| s.sync = sync);
        let (tx, rx) = std::sync::mpsc::channel();
        ledger.exec(move |conn| {
            let read = |p: &str| {
                conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, Value>(0))
                    .ok()
            };
            let _ = tx.send((read("journal_mode"), read("synchronous")));
        });
        let (mode, synchronous) = rx.recv().expect("pragmas");
        assert_eq!(mode, Some(Value::Text("wal".into())));
        // 1 is NORMAL, 2 is FULL.
        assert_eq!(synchronous, Some(Value::Integer(level)), "sync = {sync}");
    }
}
