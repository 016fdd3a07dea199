//! The SQLite file: opening the write and read connections, the schema and its version, and
//! the mapping between a `UsageRecord` and a row of the `usage` table.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Row};

use super::LedgerError;
use crate::metering::record::UsageRecord;

/// Bumped (with a migration step in `migrate`) whenever the schema changes.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits for a lock held by another connection (a checkpoint, or a
/// second process opening the same file) before reporting SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// Idle read connections kept for reuse; more may be open at once under concurrent reads.
const MAX_IDLE_READERS: usize = 4;

// `row_count` rather than `rows`: ROWS is an SQL keyword (window frames).
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

/// The columns of a full record, in `record_from_row` order.
pub(super) const RECORD_COLUMNS: &str = "request_id, time_ms, tenant, team, project, tags, model, \
     version, protocol, cache, row_count, batch_size, queue_us, compute_us, latency_us, cost_usd, \
     saved_usd, outcome, device";

/// `OR IGNORE`: a request id already present is counted as a duplicate by the writer instead
/// of failing the whole group (which would then be retried, and fail, forever).
pub(super) const INSERT: &str = "INSERT OR IGNORE INTO usage (request_id, time_ms, tenant, \
     team, project, tags, model, version, protocol, cache, row_count, batch_size, queue_us, \
     compute_us, latency_us, cost_usd, saved_usd, outcome, device) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";

/// Opens (creating if needed) the file for writing: WAL, the durability level, the schema.
pub(super) fn open_writer(path: &Path, sync: bool) -> Result<Connection, LedgerError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| LedgerError::CreateDir {
            path: dir.to_path_buf(),
            source: Arc::new(e),
        })?;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    // See the module comment of `ledger` for why these two levels.
    conn.pragma_update(None, "synchronous", if sync { "FULL" } else { "NORMAL" })?;
    // After a checkpoint the WAL is cut back to this size instead of keeping its high-water mark.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    migrate(&conn)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), LedgerError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(LedgerError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        // One transaction: a crash half-way leaves version 0 and no table, so the next start
        // simply creates it again.
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA_V1} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))?;
    }
    Ok(())
}

/// Read-only connections, reused across calls. WAL lets them read while the writer commits.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(super) fn new(path: PathBuf) -> Readers {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on an idle connection, or a new one; the connection goes back afterwards.
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let reused = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match reused {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                conn
            }
        };
        let out = f(&conn);
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
        out
    }
}

/// The tags as a JSON object, keys in sorted order, so equal tag sets have equal text (the
/// FOCUS export groups on it) and `json_extract` can pick one out.
pub(super) fn tags_json(tags: &[(String, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = tags
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

pub(super) fn tags_from_json(text: &str) -> Result<Vec<(String, String)>, LedgerError> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| LedgerError::Corrupt(format!("tags {text:?}: {e}")))?;
    let mut tags = Vec::with_capacity(map.len());
    for (k, v) in map {
        match v {
            serde_json::Value::String(s) => tags.push((k, s)),
            other => tags.push((k, other.to_string())),
        }
    }
    tags.sort();
    Ok(tags)
}

/// SQLite integers are signed; counters beyond i64::MAX microseconds (292,000 years) saturate.
pub(super) fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// SQLite stores NaN as NULL, which the NOT NULL columns would refuse, failing the whole
/// group on every retry; a cost that is not a number is recorded as 0 instead.
pub(super) fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// Appends the record's values in `INSERT` order.
pub(super) fn insert(
    stmt: &mut rusqlite::CachedStatement<'_>,
    r: &UsageRecord,
) -> rusqlite::Result<usize> {
    stmt.execute(rusqlite::params![
        r.request_id,
        r.time_ms,
        r.tenant,
        r.team,
        r.project,
        tags_json(&r.tags),
        r.model,
        r.version,
        r.protocol,
        r.cache,
        r.rows,
        r.batch_size,
        to_sql_int(r.queue_us),
        to_sql_int(r.compute_us),
        to_sql_int(r.latency_us),
        finite(r.cost_usd),
        finite(r.saved_usd),
        r.outcome,
        r.device,
    ])
}

/// Reads a row selected with `RECORD_COLUMNS`.
pub(super) fn record_from_row(row: &Row<'_>) -> Result<UsageRecord, LedgerError> {
    let unsigned = |i: usize| -> rusqlite::Result<u64> {
        Ok(u64::try_from(row.get::<_, i64>(i)?).unwrap_or(0))
    };
    let tags: String = row.get(5)?;
    Ok(UsageRecord {
        request_id: row.get(0)?,
        time_ms: row.get(1)?,
        tenant: row.get(2)?,
        team: row.get(3)?,
        project: row.get(4)?,
        tags: tags_from_json(&tags)?,
        model: row.get(6)?,
        version: row.get(7)?,
        protocol: row.get(8)?,
        cache: row.get(9)?,
        rows: row.get(10)?,
        batch_size: row.get(11)?,
        queue_us: unsigned(12)?,
        compute_us: unsigned(13)?,
        latency_us: unsigned(14)?,
        cost_usd: row.get(15)?,
        saved_usd: row.get(16)?,
        outcome: row.get(17)?,
        device: row.get(18)?,
    })
}
