//! Back-pressure and failures: a full channel, a full disk, an unusable path, a newer schema.

use super::*;

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
    assert!(matches!(&results[3], Submitted::Dropped(r) if r.request_id == id("o3", 3)));
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
    assert_eq!(ledger.usage(&id("sync", 1)).expect("read"), None);
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
                supported: store::SCHEMA_VERSION
            })
        ),
        "{err:?}"
    );
}
