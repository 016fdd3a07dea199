//! Crash safety with a real SIGKILL: this test binary runs itself as a child that writes and
//! prints each acknowledged request id; the parent kills it mid-stream and then checks that
//! every acknowledged record is in the file.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::*;

const CHILD_ENV: &str = "TOLLGATE_LEDGER_TEST_CHILD";
const CHILD_TEST: &str = "metering::ledger::tests::crash::child_writes_until_killed";
/// Acknowledgements to wait for before the kill; the child stops by itself at `CHILD_LIMIT`.
const KILL_AFTER: usize = 1_500;
const CHILD_LIMIT: usize = 200_000;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill_mid_stream_and_check(mode: &str) {
    let dir = TempDir::new(&format!("crash-{mode}"));
    let exe = std::env::current_exe().expect("test binary");
    let child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}:{}", dir.db().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        if let Some(id) = line.strip_prefix("acked ") {
            acked.push(id.to_string());
            if acked.len() >= KILL_AFTER {
                break;
            }
        }
    }
    // Child::kill is SIGKILL: no destructor, no flush, no checkpoint.
    drop(child);
    assert!(
        acked.len() >= KILL_AFTER,
        "child acknowledged only {} records",
        acked.len()
    );
    let conn = rusqlite::Connection::open(dir.db()).expect("reopen after kill");
    // One pass over the table: `request_id` has no index of its own (schema 2).
    let mut found = std::collections::HashMap::<String, usize>::new();
    let mut stmt = conn
        .prepare("SELECT request_id FROM usage")
        .expect("prepare");
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("query");
    for id in ids {
        *found.entry(id.expect("row")).or_default() += 1;
    }
    for id in &acked {
        assert_eq!(found.get(id), Some(&1), "acknowledged record {id} lost");
    }
}

#[test]
fn sigkill_loses_no_record_acknowledged_by_record_committed() {
    kill_mid_stream_and_check("sync");
}

#[test]
fn sigkill_loses_no_record_acknowledged_by_flush() {
    kill_mid_stream_and_check("async");
}

/// The child's half; does nothing unless started by the tests above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writes_until_killed() {
    let Some(spec) = std::env::var(CHILD_ENV).ok() else {
        return;
    };
    let Some((mode, path)) = spec.split_once(':') else {
        return;
    };
    let ledger = Ledger::open(LedgerSettings {
        sync: mode == "sync",
        ..LedgerSettings::new(path)
    })
    .expect("open");
    if mode == "sync" {
        // Many writers at once, as concurrent requests would be, so groups hold many records.
        let writers: Vec<_> = (0..32)
            .map(|w| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    for i in 0..CHILD_LIMIT / 32 {
                        let r = rec(&format!("w{w}-{i}"), 1, "t", "m");
                        let id = r.request_id.clone();
                        if ledger.record_committed(r).await.is_ok() {
                            println!("acked {id}");
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            let _ = writer.await;
        }
    } else {
        for batch in 0..CHILD_LIMIT / 100 {
            let records: Vec<UsageRecord> = (0..100)
                .map(|i| rec(&format!("b{batch}-{i}"), 1, "t", "m"))
                .collect();
            let ids: Vec<SmolStr> = records.iter().map(|r| r.request_id.clone()).collect();
            for r in records {
                let _ = ledger.record(r);
            }
            if ledger.flush().await.is_ok() {
                for id in ids {
                    println!("acked {id}");
                }
            }
        }
    }
}
