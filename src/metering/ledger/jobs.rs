//! Deferred jobs in the ledger's SQLite file: a job, each of its requests with its state, and
//! each answer. A row's answer, its usage record and the rollups it adds to are committed in
//! one transaction, and only for a row still queued: after a crash a row is either finished
//! and billed, or neither, and runs again; never billed twice, never lost.

use super::{rollup, store, Detail, LedgerError};
use crate::metering::record::UsageRecord;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT    PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    version     TEXT,
    status      TEXT    NOT NULL,
    total       INTEGER NOT NULL,
    completed   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    cost_usd    REAL    NOT NULL DEFAULT 0,
    saved_usd   REAL    NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL,
    finished_ms INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, status);
CREATE TABLE IF NOT EXISTS job_rows (
    job         TEXT    NOT NULL,
    idx         INTEGER NOT NULL,
    request     BLOB    NOT NULL,
    state       TEXT    NOT NULL,
    answer      TEXT,
    PRIMARY KEY (job, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_rows_queued ON job_rows (state, job, idx);
";

/// Waits this long for the write lock the ledger's writer may hold.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The states of a job; rows are `queued`, `completed` or `failed`.
pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const COMPLETED: &str = "completed";
pub const FAILED: &str = "failed";
pub const CANCELLED: &str = "cancelled";

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub tenant: String,
    pub model: String,
    pub version: Option<String>,
    pub status: String,
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
    pub cost_usd: f64,
    pub saved_usd: f64,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
}

/// A row waiting to run, with what its job says about it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub job: String,
    pub index: u64,
    pub request: Vec<u8>,
    pub tenant: String,
    pub model: String,
    pub version: Option<String>,
}

/// A row that ran: its answer (a V2 response, or `{"error": ...}`) and its usage record
/// (`None` for a row refused before the gateway accepted it: there is nothing to bill).
#[derive(Debug, Clone)]
pub struct Finished {
    pub job: String,
    pub index: u64,
    pub ok: bool,
    pub answer: String,
    pub record: Option<UsageRecord>,
}

/// What the job tables hold, for the metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub jobs: Vec<(String, u64)>,
    pub rows_queued: u64,
    pub rows_completed: u64,
    pub rows_failed: u64,
}

/// How many jobs and rows a tenant has not finished, for its limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holding {
    pub jobs: u64,
    pub rows: u64,
}

pub struct JobStore {
    conn: Mutex<Connection>,
    detail: Detail,
    /// Told when a job is stored, so the runner need not poll for work.
    pub added: tokio::sync::Notify,
}

impl JobStore {
    /// Opens the tables in the ledger's file (the ledger has already made it, in WAL mode).
    pub fn open(path: &Path, detail: Detail) -> Result<JobStore, LedgerError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(JobStore {
            conn: Mutex::new(conn),
            detail,
            added: tokio::sync::Notify::new(),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores a job and all its requests at once: either all of them or none.
    pub fn create(&self, job: &Job, requests: &[&[u8]]) -> Result<(), LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO jobs (id, tenant, model, version, status, total, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                job.id,
                job.tenant,
                job.model,
                job.version,
                QUEUED,
                job.total as i64,
                job.created_ms
            ],
        )?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO job_rows (job, idx, request, state) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (index, request) in requests.iter().enumerate() {
                insert.execute(params![job.id, index as i64, request, QUEUED])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<Job>, LedgerError> {
        let conn = self.conn();
        let job = conn
            .query_row(
                "SELECT id, tenant, model, version, status, total, completed, failed, cost_usd,
                        saved_usd, created_ms, finished_ms FROM jobs WHERE id = ?1",
                [id],
                read_job,
            )
            .optional()?;
        Ok(job)
    }

    /// The answers of a job's finished rows, in input order.
    pub fn answers(&self, id: &str) -> Result<Vec<(u64, String)>, LedgerError> {
        let conn = self.conn();
        let mut query = conn.prepare_cached(
            "SELECT idx, answer FROM job_rows WHERE job = ?1 AND answer IS NOT NULL ORDER BY idx",
        )?;
        let rows = query.query_map([id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rows to run next: those of the oldest jobs first, in input order, `limit` at most.
    pub fn queued(&self, limit: usize) -> Result<Vec<Queued>, LedgerError> {
        let conn = self.conn();
        let mut query = conn.prepare_cached(
            "SELECT r.job, r.idx, r.request, j.tenant, j.model, j.version
               FROM jobs j JOIN job_rows r ON r.job = j.id AND r.state = 'queued'
              WHERE j.status IN ('queued', 'running')
              ORDER BY j.created_ms, j.id, r.idx LIMIT ?1",
        )?;
        let rows = query.query_map([limit as i64], |r| {
            Ok(Queued {
                job: r.get(0)?,
                index: r.get::<_, i64>(1)? as u64,
                request: r.get(2)?,
                tenant: r.get(3)?,
                model: r.get(4)?,
                version: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Commits finished rows with their usage records in one transaction. A row no longer
    /// queued (finished already, or its job cancelled) is skipped with its record, so nothing
    /// is billed twice. Returns the records that were committed, for the budgets and metrics.
    pub fn finish(
        &self,
        rows: Vec<Finished>,
        now_ms: i64,
    ) -> Result<Vec<UsageRecord>, LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut committed = Vec::with_capacity(rows.len());
        {
            let mut mark = tx.prepare_cached(
                "UPDATE job_rows SET state = ?3, answer = ?4
                  WHERE job = ?1 AND idx = ?2 AND state = 'queued'
                    AND (SELECT status FROM jobs WHERE id = ?1) IN ('queued', 'running')",
            )?;
            let mut count = tx.prepare_cached(
                "UPDATE jobs SET status = 'running', completed = completed + ?2,
                        failed = failed + ?3, cost_usd = cost_usd + ?4, saved_usd = saved_usd + ?5
                  WHERE id = ?1",
            )?;
            for row in rows {
                let state = if row.ok { COMPLETED } else { FAILED };
                if mark.execute(params![row.job, row.index as i64, state, row.answer])? == 0 {
                    continue;
                }
                let (done, failed) = if row.ok { (1, 0) } else { (0, 1) };
                let (cost, saved) = row
                    .record
                    .as_ref()
                    .map_or((0.0, 0.0), |r| (r.cost_usd, r.saved_usd));
                count.execute(params![row.job, done, failed, cost, saved])?;
                committed.extend(row.record);
            }
        }
        let records: Vec<&UsageRecord> = committed.iter().collect();
        let mut scratch = Vec::new();
        let kept: Vec<&UsageRecord> = records
            .iter()
            .copied()
            .filter(|r| super::writer::keeps(self.detail, r))
            .collect();
        store::insert_all(&tx, &kept, &mut scratch)?;
        let mut fold = rollup::Fold::default();
        for record in &records {
            fold.add(record, &mut scratch);
        }
        fold.write(&tx)?;
        tx.execute(
            "UPDATE jobs SET status = 'completed', finished_ms = ?1
              WHERE status IN ('queued', 'running') AND completed + failed >= total",
            [now_ms],
        )?;
        tx.commit()?;
        Ok(committed)
    }

    /// Cancels a job that has not finished; true if it was cancelled now.
    pub fn cancel(&self, id: &str, now_ms: i64) -> Result<bool, LedgerError> {
        let changed = self.conn().execute(
            "UPDATE jobs SET status = 'cancelled', finished_ms = ?2
              WHERE id = ?1 AND status IN ('queued', 'running')",
            params![id, now_ms],
        )?;
        Ok(changed == 1)
    }

    /// What `tenant` holds that has not finished.
    pub fn holding(&self, tenant: &str) -> Result<Holding, LedgerError> {
        let conn = self.conn();
        let (jobs, rows): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(total - completed - failed), 0) FROM jobs
              WHERE tenant = ?1 AND status IN ('queued', 'running')",
            [tenant],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Holding {
            jobs: jobs as u64,
            rows: rows as u64,
        })
    }

    /// Jobs by status, and rows queued (of unfinished jobs), completed and failed (of the jobs
    /// still kept), for the metrics; read from the jobs alone, so it stays cheap.
    pub fn counts(&self) -> Result<Counts, LedgerError> {
        let conn = self.conn();
        let mut counts = Counts::default();
        let mut query = conn.prepare_cached(
            "SELECT status, COUNT(*), SUM(total - completed - failed), SUM(completed), SUM(failed)
               FROM jobs GROUP BY status",
        )?;
        let mut rows = query.query([])?;
        while let Some(row) = rows.next()? {
            let status: String = row.get(0)?;
            let jobs = row.get::<_, i64>(1)? as u64;
            let waiting = row.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64;
            counts.rows_completed += row.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64;
            counts.rows_failed += row.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64;
            if status == QUEUED || status == RUNNING {
                counts.rows_queued += waiting;
            }
            counts.jobs.push((status, jobs));
        }
        Ok(counts)
    }

    /// Deletes jobs (and their rows) that finished before `cutoff_ms`; returns how many.
    pub fn purge_finished_before(&self, cutoff_ms: i64) -> Result<usize, LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM job_rows WHERE job IN
               (SELECT id FROM jobs WHERE finished_ms IS NOT NULL AND finished_ms < ?1)",
            [cutoff_ms],
        )?;
        let jobs = tx.execute(
            "DELETE FROM jobs WHERE finished_ms IS NOT NULL AND finished_ms < ?1",
            [cutoff_ms],
        )?;
        tx.commit()?;
        Ok(jobs)
    }
}

fn read_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        tenant: r.get(1)?,
        model: r.get(2)?,
        version: r.get(3)?,
        status: r.get(4)?,
        total: r.get::<_, i64>(5)? as u64,
        completed: r.get::<_, i64>(6)? as u64,
        failed: r.get::<_, i64>(7)? as u64,
        cost_usd: r.get(8)?,
        saved_usd: r.get(9)?,
        created_ms: r.get(10)?,
        finished_ms: r.get(11)?,
    })
}
