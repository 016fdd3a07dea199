//! Tests of the ledger against real SQLite files in unique temporary directories: writing,
//! group commit, failures and overflow here; queries in `read`, process kills in `crash`.

mod crash;
mod read;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;

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

pub(super) fn rec(id: &str, time_ms: i64, tenant: &str, model: &str) -> UsageRecord {
    UsageRecord {
        request_id: id.into(),
        time_ms,
        tenant: tenant.into(),
        team: format!("team-{tenant}"),
        project: "proj".into(),
        tags: Vec::new(),
        model: model.into(),
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
    }
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
    assert_eq!(ledger.usage("req-1").expect("read"), Some(r));
    assert_eq!(ledger.usage("missing").expect("read"), None);
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
    assert!(again.usage("d299").expect("read").is_some());
}

#[tokio::test]
async fn a_duplicate_request_id_is_counted_not_fatal() {
    let dir = TempDir::new("dup");
    let ledger = open(&dir, |_| {});
    let _ = ledger.record(rec("same", 1, "t", "m"));
    let _ = ledger.record(rec("same", 2, "t", "m"));
    ledger
        .record_committed(rec("other", 3, "t", "m"))
        .await
        .expect("commit");
    let stats = ledger.stats();
    assert_eq!(
        (stats.committed, stats.duplicates, stats.pending),
        (2, 1, 0)
    );
    assert_eq!(
        ledger.usage("same").expect("read").map(|r| r.time_ms),
        Some(1)
    );
}

/// Parks the writer thread until the returned sender is dropped or sent to.
fn park_writer(ledger: &Ledger) -> std::sync::mpsc::Sender<()> {
    let (parked_tx, parked) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    ledger.exec(move |_| {
        let _ = parked_tx.send(());
        let _ = release_rx.recv();
    });
    parked.recv().expect("writer parked");
    release
}

#[tokio::test]
async fn a_full_channel_spills_to_memory_then_drops_with_a_count() {
    let dir = TempDir::new("overflow");
    let ledger = open(&dir, |s| (s.channel_capacity, s.max_pending) = (1, 2));
    let release = park_writer(&ledger);
    let results: Vec<Submitted> = (0..4)
        .map(|i| ledger.record(rec(&format!("o{i}"), i, "t", "m")))
        .collect();
    assert_eq!(
        results[..3],
        [Submitted::Queued, Submitted::Held, Submitted::Held]
    );
    assert!(matches!(&results[3], Submitted::Dropped(r) if r.request_id == "o3"));
    assert!(matches!(
        ledger.record_committed(rec("s", 9, "t", "m")).await,
        Err(LedgerError::Overloaded)
    ));
    drop(release);
    ledger.flush().await.expect("flush");
    let stats = ledger.stats();
    assert_eq!(
        (
            stats.committed,
            stats.overflowed,
            stats.dropped,
            stats.pending
        ),
        (3, 4, 1, 0)
    );
    assert_eq!(count_fresh(&dir.db()), 3);
}

/// Caps the file at its current size (SQLITE_FULL on growth), as a full disk would.
fn fill_disk(ledger: &Ledger, full: bool) {
    let pages = if full { 1 } else { 1_000_000 };
    ledger.exec(move |conn| {
        let _ = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
            r.get::<_, i64>(0)
        });
    });
}

#[tokio::test]
async fn failed_commits_hold_records_until_the_disk_recovers() {
    let dir = TempDir::new("full");
    let ledger = open(&dir, |_| {});
    fill_disk(&ledger, true);
    for i in 0..2_000 {
        let _ = ledger.record(rec(&format!("f{i}"), i, "tenant-with-a-long-name", "m"));
    }
    let err = ledger.flush().await.expect_err("disk is full");
    assert!(
        matches!(
            err,
            LedgerError::CommitFailed {
                tries: writer::COMMIT_TRIES,
                ..
            }
        ),
        "{err}"
    );
    let stats = ledger.stats();
    assert!(stats.failing && stats.write_failures >= u64::from(writer::COMMIT_TRIES));
    assert!(stats.last_error.is_some_and(|e| e.contains("full")));
    assert_eq!(
        (stats.pending, stats.dropped, stats.committed),
        (2_000, 0, 0)
    );
    assert!(matches!(
        ledger.record_committed(rec("sync", 1, "t", "m")).await,
        Err(LedgerError::CommitFailed { .. })
    ));
    fill_disk(&ledger, false);
    ledger.flush().await.expect("disk recovered");
    let stats = ledger.stats();
    assert_eq!(
        (stats.committed, stats.pending, stats.failing),
        (2_000, 0, false)
    );
    assert_eq!(ledger.usage("sync").expect("read"), None);
}

#[tokio::test]
async fn held_records_beyond_max_pending_are_dropped_with_a_count() {
    let dir = TempDir::new("fullcap");
    let ledger = open(&dir, |s| s.max_pending = 100);
    fill_disk(&ledger, true);
    for i in 0..1_000 {
        let _ = ledger.record(rec(&format!("f{i}"), i, "tenant-with-a-long-name", "m"));
    }
    assert!(ledger.flush().await.is_err());
    let stats = ledger.stats();
    assert_eq!((stats.pending, stats.dropped), (100, 900));
    fill_disk(&ledger, false);
    ledger.flush().await.expect("recovered");
    assert_eq!(count_fresh(&dir.db()), 100);
}

#[test]
fn an_unusable_path_fails_to_open() {
    let dir = TempDir::new("badpath");
    // A directory where the file should be.
    std::fs::create_dir_all(dir.db()).expect("dir");
    assert!(matches!(
        Ledger::open(LedgerSettings::new(dir.db())),
        Err(LedgerError::Database(_))
    ));
    // A file where the directory should be.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").expect("file");
    let err = Ledger::open(LedgerSettings::new(file.join("ledger.sqlite"))).err();
    assert!(
        matches!(err, Some(LedgerError::CreateDir { .. })),
        "{err:?}"
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new("schema");
    drop(open(&dir, |_| {}));
    let conn = rusqlite::Connection::open(dir.db()).expect("conn");
    conn.pragma_update(None, "user_version", 99).expect("bump");
    drop(conn);
    let err = Ledger::open(LedgerSettings::new(dir.db())).err();
    assert!(
        matches!(
            err,
            Some(LedgerError::SchemaTooNew {
                found: 99,
                supported: 1
            })
        ),
        "{err:?}"
    );
}

#[test]
fn settings_follow_the_config() {
    let mut config = crate::config::LedgerConfig {
        durability: "sync".into(),
        ..Default::default()
    };
    let settings = LedgerSettings::from_config(&config).expect("valid");
    assert!(settings.sync);
    assert_eq!(settings.channel_capacity, DEFAULT_CHANNEL_CAPACITY);
    config.durability = "sometimes".into();
    assert!(matches!(
        LedgerSettings::from_config(&config),
        Err(LedgerError::Durability(_))
    ));
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
    assert!(ledger.usage("p10999").expect("read").is_none());
    assert!(ledger.usage("p11000").expect("read").is_some());
    assert_eq!(ledger.purge_expired(DAY_MS + 11_500).expect("expire"), 500);
    assert_eq!(count_fresh(&dir.db()), 500);
    let forever = TempDir::new("purge0");
    assert_eq!(
        open(&forever, |s| s.retention_days = 0)
            .purge_expired(i64::MAX)
            .expect("noop"),
        0
    );
}

#[tokio::test]
async fn spend_sums_a_tenant_or_a_team_since_a_time() {
    let dir = TempDir::new("spend");
    let ledger = open(&dir, |_| {});
    let mut idle = rec("idle", 50, crate::metering::record::IDLE_TENANT, "m");
    idle.team = "team-a".into();
    for r in [
        rec("1", 10, "a", "m"),
        rec("2", 100, "a", "m"),
        rec("3", 100, "b", "m"),
        idle,
    ] {
        let _ = ledger.record(r);
    }
    ledger.flush().await.expect("flush");
    assert!((ledger.spend("a", 0).expect("spend") - 0.002).abs() < 1e-12);
    assert!((ledger.spend("a", 11).expect("spend") - 0.001).abs() < 1e-12);
    assert_eq!(ledger.spend("nobody", 0).expect("spend"), 0.0);
    assert!((ledger.spend_by_team("team-a", 0).expect("team") - 0.002).abs() < 1e-12);
}
