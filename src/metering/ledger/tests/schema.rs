//! Schema versions: a fresh file, schema 1, 2 and 3 files migrated in place, and how lookups
//! by id use the time index instead of scanning.

use rusqlite::types::Value;
use rusqlite::Connection;

use super::*;

/// Schema 1 exactly as it was shipped, UNIQUE request ids included.
const SCHEMA_V1: &str = "
CREATE TABLE usage (
    id          INTEGER PRIMARY KEY,
    request_id  TEXT    NOT NULL UNIQUE,
    time_ms     INTEGER NOT NULL,
    tenant      TEXT    NOT NULL,
    team        TEXT    NOT NULL,
    project     TEXT    NOT NULL,
    tags        TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    protocol    TEXT    NOT NULL,
    cache       TEXT    NOT NULL,
    row_count   INTEGER NOT NULL,
    batch_size  INTEGER NOT NULL,
    queue_us    INTEGER NOT NULL,
    compute_us  INTEGER NOT NULL,
    latency_us  INTEGER NOT NULL,
    cost_usd    REAL    NOT NULL,
    saved_usd   REAL    NOT NULL,
    outcome     TEXT    NOT NULL,
    device      TEXT    NOT NULL
);
CREATE INDEX usage_time ON usage (time_ms);
CREATE INDEX usage_tenant_time ON usage (tenant, time_ms);
";

/// Records as schema 1 held them: ids without a time (gateway), or with a decimal one (idle).
fn legacy_records() -> Vec<UsageRecord> {
    let named = |id: &str, time_ms: i64, tenant: &str| UsageRecord {
        request_id: SmolStr::new(id),
        ..rec("unused", time_ms, tenant, "digits")
    };
    let mut tagged = named("4f9a3da8-00000002", 1_795_906_800_500, "mail");
    tagged.tags = vec![("env".into(), "prod".into()), ("z".into(), "\"q\"".into())];
    vec![
        named("4f9a3da8-00000001", 1_795_906_800_000, "search"),
        tagged,
        named("removed-by-retention", 1_795_906_800_600, "search"),
        named(
            "idle-digits-1-0-1795906801000",
            1_795_906_801_000,
            "__idle__",
        ),
    ]
}

/// A schema 1 file at `path` holding `legacy_records`, the third deleted again (as retention
/// would), so the row ids it keeps are 1, 2 and 4.
fn write_v1(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    let conn = Connection::open(path).expect("create v1");
    conn.execute_batch(&format!(
        "BEGIN; {SCHEMA_V1} PRAGMA user_version = 1; COMMIT;"
    ))
    .expect("v1 schema");
    for r in legacy_records() {
        conn.execute(
            "INSERT INTO usage (request_id, time_ms, tenant, team, project, tags, model, \
                 version, protocol, cache, row_count, batch_size, queue_us, compute_us, \
                 latency_us, cost_usd, saved_usd, outcome, device) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18, ?19)",
            rusqlite::params![
                r.request_id.as_str(),
                r.time_ms,
                r.tenant.as_str(),
                r.team.as_str(),
                r.project.as_str(),
                store::tags_json(&r.tags),
                r.model.as_str(),
                r.version.as_str(),
                r.protocol.as_str(),
                r.cache.as_str(),
                r.rows,
                r.batch_size,
                r.queue_us as i64,
                r.compute_us as i64,
                r.latency_us as i64,
                r.cost_usd,
                r.saved_usd,
                r.outcome.as_str(),
                r.device.as_str(),
            ],
        )
        .expect("v1 row");
    }
    conn.execute("DELETE FROM usage WHERE id = 3", [])
        .expect("delete");
}

/// Every row, every column, in id order.
fn all_rows(path: &Path) -> Vec<Vec<Value>> {
    let conn = Connection::open(path).expect("conn");
    let mut stmt = conn
        .prepare("SELECT * FROM usage ORDER BY id")
        .expect("select");
    let columns = stmt.column_count();
    stmt.query_map([], |row| (0..columns).map(|i| row.get(i)).collect())
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("values")
}

/// Requests and cost in the rollups.
fn rollup_totals(path: &Path) -> (i64, f64) {
    let conn = Connection::open(path).expect("conn");
    conn.query_row(
        "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(cost_usd), 0.0) FROM usage_rollup",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("rollup totals")
}

/// Requests (idle records are none) and cost in the per-request rows.
fn usage_totals(path: &Path) -> (i64, f64) {
    let conn = Connection::open(path).expect("conn");
    conn.query_row(
        "SELECT COALESCE(SUM(tenant <> '__idle__'), 0), COALESCE(SUM(cost_usd), 0.0) FROM usage",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("usage totals")
}

/// The file's version, the `usage` table's DDL, and its indexes (by name).
fn schema(path: &Path) -> (i64, String, Vec<String>) {
    let conn = Connection::open(path).expect("conn");
    let version = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    let ddl = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'usage'",
            [],
            |r| r.get(0),
        )
        .expect("ddl");
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage' ORDER BY name")
        .expect("indexes");
    let indexes = stmt
        .query_map([], |r| r.get(0))
        .expect("names")
        .collect::<Result<_, _>>()
        .expect("index names");
    (version, ddl, indexes)
}

fn legacy_max_id(path: &Path) -> Option<i64> {
    let conn = Connection::open(path).expect("conn");
    conn.query_row(
        "SELECT value FROM ledger_meta WHERE key = 'legacy_max_id'",
        [],
        |r| r.get(0),
    )
    .ok()
}

#[test]
fn a_fresh_file_gets_schema_4() {
    let dir = TempDir::new("fresh");
    drop(open(&dir, |_| {}));
    let (version, ddl, indexes) = schema(&dir.db());
    assert_eq!(version, 4);
    assert!(ddl.contains("lane"), "{ddl}");
    assert_eq!(rollup_totals(&dir.db()), (0, 0.0));
    assert!(!ddl.contains("UNIQUE"), "{ddl}");
    assert_eq!(indexes, ["usage_tenant_time", "usage_time"]);
    assert_eq!(legacy_max_id(&dir.db()), None);
}

#[tokio::test]
async fn a_schema_1_file_is_migrated_keeping_every_row() {
    let dir = TempDir::new("v1");
    write_v1(&dir.db());
    let before = all_rows(&dir.db());
    assert_eq!(before.len(), 3);
    assert_eq!(schema(&dir.db()).2.len(), 3, "v1 has the UNIQUE index too");

    let ledger = open(&dir, |_| {});
    let (version, ddl, indexes) = schema(&dir.db());
    assert_eq!(version, store::SCHEMA_VERSION);
    assert!(!ddl.contains("UNIQUE"), "{ddl}");
    assert_eq!(indexes, ["usage_tenant_time", "usage_time"]);
    // Every id and value kept; the lane column added says they were served as they came.
    let realtime = Value::Text("realtime".into());
    let expected: Vec<Vec<Value>> = before
        .iter()
        .map(|row| row.iter().cloned().chain([realtime.clone()]).collect())
        .collect();
    assert_eq!(all_rows(&dir.db()), expected, "ids and values kept");
    assert_eq!(legacy_max_id(&dir.db()), Some(4));
    assert_eq!(
        rollup_totals(&dir.db()),
        usage_totals(&dir.db()),
        "rollups built from the rows"
    );

    // Old ids are found although they carry no time (or a decimal one).
    let legacy = legacy_records();
    for r in [&legacy[0], &legacy[1], &legacy[3]] {
        let found = ledger.usage(&r.request_id).expect("read");
        assert_eq!(found.as_ref(), Some(r), "{}", r.request_id);
    }
    assert_eq!(ledger.usage(&legacy[2].request_id).expect("read"), None);

    // New records go after the old ones and are found by the time in their ids.
    let fresh = rec("4f9a3da8-00000003", 1_795_906_802_000, "search", "digits");
    ledger
        .record_committed(fresh.clone())
        .await
        .expect("commit");
    assert_eq!(ledger.usage(&fresh.request_id).expect("read"), Some(fresh));
    assert_eq!(all_rows(&dir.db()).len(), 4);
    assert_eq!(
        rollup_totals(&dir.db()),
        usage_totals(&dir.db()),
        "and kept with each commit"
    );
    drop(ledger);

    // Opening again changes nothing.
    let again = open(&dir, |_| {});
    assert_eq!(schema(&dir.db()).0, store::SCHEMA_VERSION);
    assert_eq!(rollup_totals(&dir.db()), usage_totals(&dir.db()));
    assert_eq!(all_rows(&dir.db()).len(), 4);
    assert_eq!(legacy_max_id(&dir.db()), Some(4));
    assert!(again.usage("4f9a3da8-00000001").expect("read").is_some());
}

#[test]
fn an_empty_schema_1_file_has_no_legacy_rows() {
    let dir = TempDir::new("v1empty");
    std::fs::create_dir_all(dir.db().parent().expect("dir")).expect("mkdir");
    Connection::open(dir.db())
        .expect("create")
        .execute_batch(&format!(
            "BEGIN; {SCHEMA_V1} PRAGMA user_version = 1; COMMIT;"
        ))
        .expect("v1");
    let ledger = open(&dir, |_| {});
    assert_eq!(schema(&dir.db()).0, store::SCHEMA_VERSION);
    assert_eq!(legacy_max_id(&dir.db()), None);
    assert_eq!(ledger.usage("4f9a3da8-00000001").expect("read"), None);
}

#[tokio::test]
async fn schema_2_and_3_files_get_rollups_of_their_records() {
    // What those files look like: the same rows without a lane; no rollups (2), or rollups of
    // another shape (3), which are built again.
    let older = [
        (2, "DROP TABLE usage_rollup; DROP TABLE usage_rollup_hour;"),
        (
            3,
            "DROP TABLE usage_rollup; DROP TABLE usage_rollup_hour; CREATE TABLE usage_rollup (minute_ms INTEGER);",
        ),
    ];
    for (version, change) in older {
        let dir = TempDir::new("older");
        let ledger = open(&dir, |_| {});
        let mut idle = rec("idle", 70_000, crate::metering::record::IDLE_TENANT, "m");
        idle.latency_us = 0;
        let mut b = rec("b", 61_000, "b", "m");
        b.rows = 2;
        for r in [rec("a", 10, "a", "m"), b, idle] {
            ledger.record_committed(r).await.expect("commit");
        }
        drop(ledger);
        Connection::open(dir.db())
            .expect("conn")
            .execute_batch(&format!(
                "{change} ALTER TABLE usage DROP COLUMN lane; PRAGMA user_version = {version};"
            ))
            .expect("to the older schema");
        let ledger = open(&dir, |_| {});
        assert_eq!(schema(&dir.db()).0, store::SCHEMA_VERSION);
        assert_eq!(
            rollup_totals(&dir.db()),
            (2, 0.003),
            "from schema {version}"
        );
        assert_eq!(rollup_totals(&dir.db()), usage_totals(&dir.db()));
        assert!((ledger.spend("b", 60_000).expect("spend") - 0.001).abs() < 1e-12);
        // Charged device time: a's 1 row of 4 (1 ms), b's 2 rows of 4 (2 ms), idle's 4 ms.
        let device_us: f64 = Connection::open(dir.db())
            .expect("conn")
            .query_row("SELECT SUM(device_us) FROM usage_rollup", [], |r| r.get(0))
            .expect("device time");
        assert!((device_us - 7_000.0).abs() < 1e-6, "{device_us}");
    }
}

#[test]
fn an_unknown_schema_version_is_refused() {
    for (version, too_new) in [(5, true), (99, true), (-1, false)] {
        let dir = TempDir::new("unknown");
        std::fs::create_dir_all(dir.db().parent().expect("dir")).expect("mkdir");
        Connection::open(dir.db())
            .expect("create")
            .pragma_update(None, "user_version", version)
            .expect("version");
        let err = Ledger::open(LedgerSettings::new(dir.db())).err();
        match err {
            Some(LedgerError::SchemaTooNew { found, .. }) if too_new => assert_eq!(found, version),
            Some(LedgerError::Corrupt(_)) if !too_new => {}
            other => panic!("version {version}: {other:?}"),
        }
        // Left as it was found.
        assert_eq!(schema_version(&dir.db()), version);
    }
}

fn schema_version(path: &Path) -> i64 {
    Connection::open(path)
        .expect("conn")
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version")
}

/// What SQLite plans for the two lookups, on a file of schema 2.
#[test]
fn lookups_by_id_use_an_index_not_a_scan() {
    let dir = TempDir::new("plan");
    drop(open(&dir, |_| {}));
    let conn = Connection::open(dir.db()).expect("conn");
    let plan = |filter: &str| -> String {
        let mut stmt = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT {} FROM usage WHERE {filter}",
                store::RECORD_COLUMNS
            ))
            .expect("explain");
        let details: Vec<String> = stmt
            .query_map(rusqlite::params![1, "x"], |r| r.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("details");
        details.join("; ")
    };
    let by_time = plan(query::BY_TIME);
    assert!(
        by_time.contains("USING INDEX usage_time (time_ms=?)"),
        "{by_time}"
    );
    let legacy = plan(query::BY_LEGACY_ID);
    assert!(
        legacy.contains("USING INTEGER PRIMARY KEY (rowid<?)"),
        "{legacy}"
    );
}

/// Ids of today's gateway and idle records, on a ledger large enough that a scan would show.
#[tokio::test]
async fn records_are_found_by_the_time_in_their_ids() {
    let dir = TempDir::new("byid");
    let ledger = open(&dir, |_| {});
    let start = 1_795_906_800_000;
    let mut wanted = Vec::new();
    for i in 0..5_000u64 {
        let time_ms = start + (i / 7) as i64;
        let mut r = rec("unused", time_ms, "t", "m");
        r.request_id = record::request_id("4f9a3da8", i, time_ms).into();
        if i % 1_000 == 0 {
            wanted.push(r.clone());
        }
        let _ = ledger.record(r);
    }
    let mut idle = rec("unused", start + 3, record::IDLE_TENANT, "m");
    let mut idle_id = "idle-m-1-0".to_string();
    record::push_id_time(&mut idle_id, idle.time_ms);
    idle.request_id = idle_id.into();
    wanted.push(idle.clone());
    let _ = ledger.record(idle);
    ledger.flush().await.expect("flush");
    for r in &wanted {
        assert_eq!(ledger.usage(&r.request_id).expect("read").as_ref(), Some(r));
    }
    // Right time, wrong counter; and an id whose time no record has.
    for missing in [
        record::request_id("4f9a3da8", 5_001, start),
        record::request_id("4f9a3da8", 1, start + 99_999),
        "4f9a3da8-00000001".to_string(),
    ] {
        assert_eq!(ledger.usage(&missing).expect("read"), None, "{missing}");
    }
}
