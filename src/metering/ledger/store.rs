//! The SQLite file: opening the write and read connections, the schema and its version, and
//! the mapping between a `UsageRecord` and a row of the `usage` table.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::sql::{Cell, Dialect, Param, Read};
use super::{rollup, LedgerError};
use crate::metering::record::UsageRecord;

/// Bumped (with a migration step in `migrate`) whenever the schema changes.
pub(super) const SCHEMA_VERSION: i64 = 4;

/// How long a connection waits for a lock held by another connection (a checkpoint, or a
/// second process opening the same file) before reporting SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// Idle read connections kept for reuse; more may be open at once under concurrent reads.
const MAX_IDLE_READERS: usize = 4;

/// The `usage` table of schema 2, created under `name` (the migration builds it beside the
/// old one). `row_count` rather than `rows`: ROWS is an SQL keyword (window frames).
///
/// `request_id` has no UNIQUE constraint (schema 1 had one): its index made every insert dearer.
/// Ids are unique by construction, a failed group rolls back whole, and a lookup by id
/// goes through the time the id carries (`query::usage`).
fn usage_table(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (
    id          INTEGER PRIMARY KEY,
    request_id  TEXT    NOT NULL,
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
);"
    )
}

/// Schema 4's addition to `usage`: the lane a request was served in (records of older
/// schemas were all served as they came).
const ADD_LANE: &str = "ALTER TABLE usage ADD COLUMN lane TEXT NOT NULL DEFAULT 'realtime';";

const INDEXES: &str = "
CREATE INDEX usage_time ON usage (time_ms);
CREATE INDEX usage_tenant_time ON usage (tenant, time_ms);
";

/// Facts about the file itself. `legacy_max_id`: the largest row id copied from a schema 1
/// table (absent when there was none); only rows up to it can hold ids without a time.
const META: &str = "CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);";
const LEGACY_MAX_ID: &str = "legacy_max_id";

/// Every column of `usage`, in table order: what the migration copies.
const ALL_COLUMNS: &str = "id, request_id, time_ms, tenant, team, project, tags, model, \
     version, protocol, cache, row_count, batch_size, queue_us, compute_us, latency_us, \
     cost_usd, saved_usd, outcome, device";

/// The columns of a full record, in `record_from_row` order.
pub(super) const RECORD_COLUMNS: &str = "request_id, time_ms, tenant, team, project, tags, model, \
     version, protocol, cache, row_count, batch_size, queue_us, compute_us, latency_us, cost_usd, \
     saved_usd, outcome, device, lane";

pub(super) const INSERT: &str = "INSERT INTO usage (request_id, time_ms, tenant, \
     team, project, tags, model, version, protocol, cache, row_count, batch_size, queue_us, \
     compute_us, latency_us, cost_usd, saved_usd, outcome, device, lane) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
     ?20)";

/// One chunk of a purge of per-request records: ?1 the cutoff, ?2 the chunk's size.
pub(super) const PURGE_RECORDS: &str =
    "DELETE FROM usage WHERE id IN (SELECT id FROM usage WHERE time_ms < ?1 LIMIT ?2)";

/// The write connection and what the schema says about looking records up.
pub(super) struct Opened {
    pub(super) conn: Connection,
    /// Rows with an `id` up to this were written under schema 1 (0: none were).
    pub(super) legacy_max_id: i64,
}

/// Opens (creating if needed) the file for writing: WAL, the durability level, the schema.
pub(super) fn open_writer(path: &Path, sync: bool) -> Result<Opened, LedgerError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| LedgerError::CreateDir {
            path: dir.to_path_buf(),
            source: Arc::new(e),
        })?;
    }
    let mut conn = Connection::open_with_flags(
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
    migrate(&mut conn)?;
    let legacy_max_id = conn.query_row(
        "SELECT COALESCE(MAX(value), 0) FROM ledger_meta WHERE key = ?1",
        [LEGACY_MAX_ID],
        |r| r.get(0),
    )?;
    Ok(Opened {
        conn,
        legacy_max_id,
    })
}

fn user_version(conn: &Connection) -> Result<i64, LedgerError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Brings the file to `SCHEMA_VERSION` in one transaction, so a crash half-way leaves the old
/// version intact and the next start simply tries again.
fn migrate(conn: &mut Connection) -> Result<(), LedgerError> {
    let check = |found: i64| {
        if found > SCHEMA_VERSION {
            return Err(LedgerError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(found)
    };
    if check(user_version(conn)?)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Read again under the write lock: another process may have migrated meanwhile.
    let found = check(user_version(&tx)?)?;
    match found {
        0 => tx.execute_batch(&format!(
            "{} {ADD_LANE} {INDEXES} {META} {}",
            usage_table("usage"),
            *rollup::TABLE
        ))?,
        1..=3 => {
            if found == 1 {
                migrate_v1(&tx)?;
            }
            tx.execute_batch(ADD_LANE)?;
            // Schema 3's rollups had no lane and summed whole batches' compute time: they are
            // built again from the records.
            if found == 3 {
                tx.execute_batch("DROP TABLE usage_rollup;")?;
            }
            tx.execute_batch(&rollup::TABLE)?;
            let records = rollup::backfill(&tx)?;
            tracing::info!(
                records,
                "usage ledger: rollups built from the records (schema 4)"
            );
        }
        other => return Err(LedgerError::Corrupt(format!("schema version {other}"))),
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Schema 1 to 2: `request_id` loses its UNIQUE index.
fn migrate_v1(tx: &Connection) -> Result<(), LedgerError> {
    let rows: i64 = tx.query_row("SELECT COUNT(*) FROM usage", [], |r| r.get(0))?;
    tracing::info!(rows, "migrating the usage ledger to schema 2");
    // SQLite cannot drop the index of a UNIQUE column constraint, so the table is
    // rebuilt as its documented ALTER TABLE procedure says: create the new table, copy
    // (keeping row ids), drop the old, rename, recreate the indexes. No view, trigger
    // or foreign key refers to `usage`.
    tx.execute_batch(&format!(
        "{new} \
         INSERT INTO usage_v2 ({ALL_COLUMNS}) SELECT {ALL_COLUMNS} FROM usage; \
         DROP TABLE usage; \
         ALTER TABLE usage_v2 RENAME TO usage; \
         {INDEXES} {META} \
         INSERT INTO ledger_meta (key, value) \
             SELECT '{LEGACY_MAX_ID}', id FROM usage ORDER BY id DESC LIMIT 1;",
        new = usage_table("usage_v2"),
    ))?;
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

impl Read for Readers {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn rows(&self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Cell>>, LedgerError> {
        self.with(|conn| super::sql::sqlite_rows(conn, sql, params))
    }
}

/// The tags as a JSON object, keys in sorted order, so equal tag sets have equal text (the
/// FOCUS export groups on it) and `json_extract` can pick one out.
pub(super) fn tags_json(tags: &[(String, String)]) -> String {
    let mut out = Vec::new();
    write_tags_json(&mut out, tags);
    // Only whole UTF-8 strings and ASCII punctuation were written.
    String::from_utf8(out).unwrap_or_default()
}

/// `tags_json` into a buffer the caller reuses: the writer thread turns tags into text for
/// every record, without a JSON tree or a fresh allocation each time. The text is exactly what
/// serializing a `serde_json::Map` of the tags gives: sorted keys, a repeated key keeping its
/// last value, serde_json's escaping.
pub(super) fn write_tags_json(out: &mut Vec<u8>, tags: &[(String, String)]) {
    out.clear();
    let pairs = tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    // A caller's tags arrive sorted with unique keys (`Identities::tags`); others are sorted here.
    if tags.windows(2).all(|w| w[0].0 < w[1].0) {
        write_object(out, pairs);
    } else {
        let mut map = std::collections::BTreeMap::new();
        for (k, v) in pairs {
            map.insert(k, v);
        }
        write_object(out, map.into_iter());
    }
}

fn write_object<'a>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push(b'{');
    for (i, (key, value)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // serde_json's own string escaping; writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, value);
    }
    out.push(b'}');
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

/// Values per record in `INSERT` (and `RECORD_COLUMNS`) order.
const COLUMNS: usize = 20;

/// Records per multi-row INSERT: a statement's set-up (its cursors on the table and both
/// indexes) is then paid once per this many records instead of once per record. 16 × 20
/// parameters are far below SQLite's limit of 32,766.
const ROWS_PER_STATEMENT: usize = 16;

static INSERT_MANY: LazyLock<String> = LazyLock::new(|| {
    let row = |r: usize| {
        let marks: Vec<String> = (1..=COLUMNS)
            .map(|c| format!("?{}", r * COLUMNS + c))
            .collect();
        format!("({})", marks.join(", "))
    };
    let rows: Vec<String> = (0..ROWS_PER_STATEMENT).map(row).collect();
    format!(
        "INSERT INTO usage ({RECORD_COLUMNS}) VALUES {}",
        rows.join(", ")
    )
});

/// Binds one record's values from parameter `first` (1-based) on; `scratch` holds the tags'
/// JSON while it is bound (SQLite copies bound text).
fn bind(
    stmt: &mut rusqlite::Statement<'_>,
    first: usize,
    r: &UsageRecord,
    scratch: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    write_tags_json(scratch, &r.tags);
    // Bound as text straight from the buffer: it is UTF-8 by construction.
    let tags = ToSqlOutput::Borrowed(ValueRef::Text(scratch));
    let (queue_us, compute_us, latency_us) = (
        to_sql_int(r.queue_us),
        to_sql_int(r.compute_us),
        to_sql_int(r.latency_us),
    );
    let (cost_usd, saved_usd) = (finite(r.cost_usd), finite(r.saved_usd));
    let (request_id, tenant, team, project) = (
        r.request_id.as_str(),
        r.tenant.as_str(),
        r.team.as_str(),
        r.project.as_str(),
    );
    let (model, version, protocol, cache, outcome, device, lane) = (
        r.model.as_str(),
        r.version.as_str(),
        r.protocol.as_str(),
        r.cache.as_str(),
        r.outcome.as_str(),
        r.device.as_str(),
        r.lane.as_str(),
    );
    let values: [&dyn ToSql; COLUMNS] = [
        &request_id,
        &r.time_ms,
        &tenant,
        &team,
        &project,
        &tags,
        &model,
        &version,
        &protocol,
        &cache,
        &r.rows,
        &r.batch_size,
        &queue_us,
        &compute_us,
        &latency_us,
        &cost_usd,
        &saved_usd,
        &outcome,
        &device,
        &lane,
    ];
    for (offset, value) in values.into_iter().enumerate() {
        stmt.raw_bind_parameter(first + offset, value)?;
    }
    Ok(())
}

/// Inserts one record with the single-row `INSERT`.
pub(super) fn insert(
    stmt: &mut rusqlite::CachedStatement<'_>,
    r: &UsageRecord,
    scratch: &mut Vec<u8>,
) -> rusqlite::Result<usize> {
    bind(stmt, 1, r, scratch)?;
    stmt.raw_execute()
}

/// Inserts a group of records: whole runs of `ROWS_PER_STATEMENT` through the multi-row
/// statement, the rest one by one.
pub(super) fn insert_all(
    conn: &Connection,
    records: &[&UsageRecord],
    scratch: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    let mut runs = records.chunks_exact(ROWS_PER_STATEMENT);
    if runs.len() > 0 {
        let mut many = conn.prepare_cached(&INSERT_MANY)?;
        for run in runs.by_ref() {
            for (row, record) in run.iter().enumerate() {
                bind(&mut many, 1 + row * COLUMNS, record, scratch)?;
            }
            many.raw_execute()?;
        }
    }
    let rest = runs.remainder();
    if !rest.is_empty() {
        let mut one = conn.prepare_cached(INSERT)?;
        for record in rest {
            insert(&mut one, record, scratch)?;
        }
    }
    Ok(())
}

/// Reads a row selected with `RECORD_COLUMNS`, from either database.
pub(super) fn record_from_cells(row: Vec<Cell>) -> Result<UsageRecord, LedgerError> {
    if row.len() < RECORD_WIDTH {
        return Err(LedgerError::Corrupt(format!(
            "a usage row of {} columns",
            row.len()
        )));
    }
    let cell = |i: usize| &row[i];
    let text = |i: usize| -> Result<smol_str::SmolStr, LedgerError> {
        Ok(smol_str::SmolStr::new(cell(i).text()?))
    };
    let small = |i: usize| -> Result<u32, LedgerError> {
        u32::try_from(cell(i).int()?)
            .map_err(|_| LedgerError::Corrupt(format!("column {i} out of range")))
    };
    Ok(UsageRecord {
        request_id: text(0)?,
        time_ms: cell(1).int()?,
        tenant: text(2)?,
        team: text(3)?,
        project: text(4)?,
        tags: tags_from_json(cell(5).text()?)?,
        model: text(6)?,
        version: text(7)?,
        protocol: text(8)?,
        cache: text(9)?,
        rows: small(10)?,
        batch_size: small(11)?,
        queue_us: cell(12).count()?,
        compute_us: cell(13).count()?,
        latency_us: cell(14).count()?,
        cost_usd: cell(15).real()?,
        saved_usd: cell(16).real()?,
        outcome: text(17)?,
        device: text(18)?,
        lane: text(19)?,
    })
}

/// Columns of `RECORD_COLUMNS`.
pub(super) const RECORD_WIDTH: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    /// How schema 1 wrote tags: through a JSON tree. The writer must give the same text.
    fn through_a_tree(tags: &[(String, String)]) -> String {
        let map: serde_json::Map<String, serde_json::Value> = tags
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::Value::Object(map).to_string()
    }

    #[test]
    fn tags_json_equals_a_json_map_of_the_tags() {
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        let cases: &[&[(&str, &str)]] = &[
            &[],
            &[("env", "prod")],
            &[("env", "prod"), ("feature", "a")],
            // Unsorted, and a repeated key: sorted, the last value kept.
            &[("z", "1"), ("a", "2"), ("m", "3")],
            &[("k", "first"), ("b", "x"), ("k", "last")],
            &[("k", "same"), ("k", "same")],
            &[("tollgate/team", "t"), ("env", "say \"hi\", ok")],
            &[("q\"uote", "back\\slash"), ("tab", "a\tb\r\n\u{8}\u{c}")],
            &[
                ("ctl", "\u{0}\u{1}\u{1f}\u{7f}"),
                ("uni", "é 名 🚀 \u{2028}"),
            ],
            &[("", ""), ("all", &every_ascii)],
        ];
        let mut scratch = Vec::new();
        for case in cases {
            let tags: Vec<(String, String)> = case
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let want = through_a_tree(&tags);
            assert_eq!(tags_json(&tags), want, "{tags:?}");
            write_tags_json(&mut scratch, &tags);
            assert_eq!(std::str::from_utf8(&scratch), Ok(want.as_str()));
            // And it reads back as the same set (sorted, last value of a key).
            let mut unique: Vec<(String, String)> = Vec::new();
            for (k, v) in tags {
                unique.retain(|(key, _)| *key != k);
                unique.push((k, v));
            }
            unique.sort();
            assert_eq!(tags_from_json(&want).ok(), Some(unique));
        }
    }
}
