//! Deferred jobs in the ledger's SQLite file, on a connection of their own.

use super::super::{rollup, store, writer, Detail, LedgerError};
use super::{Counts, Finished, Holding, Job, Queued, COMPLETED, FAILED, QUEUED, RUNNING};
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

pub(super) struct SqliteJobs {
    conn: Mutex<Connection>,
    detail: Detail,
}

impl SqliteJobs {
    /// Opens the tables in the ledger's file (the ledger has already made it, in WAL mode).
    pub(super) fn open(path: &Path, detail: Detail) -> Result<SqliteJobs, LedgerError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteJobs {
            conn: Mutex::new(conn),
            detail,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores a job and all its requests at once: either all of them or none.
    pub(super) fn create(&self, job: &Job, requests: &[&[u8]]) -> Result<(), LedgerError> {
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

    pub(super) fn get(&self, id: &str) -> Result<Option<Job>, LedgerError> {
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
    pub(super) fn answers(&self, id: &str) -> Result<Vec<(u64, String)>, LedgerError> {
        let conn = self.conn();
        let mut query = conn.prepare_cached(
            "SELECT idx, answer FROM job_rows WHERE job = ?1 AND answer IS NOT NULL ORDER BY idx",
        )?;
        let rows = query.query_map([id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rows to run next: those of the oldest jobs first, in input order, `limit` at most.
    pub(super) fn queued(&self, limit: usize) -> Result<Vec<Queued>, LedgerError> {
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
    pub(super) fn finish(
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
            .filter(|r| writer::keeps(self.detail, r))
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
    pub(super) fn cancel(&self, id: &str, now_ms: i64) -> Result<bool, LedgerError> {
        let changed = self.conn().execute(
            "UPDATE jobs SET status = 'cancelled', finished_ms = ?2
              WHERE id = ?1 AND status IN ('queued', 'running')",
            params![id, now_ms],
        )?;
        Ok(changed == 1)
    }

    /// What `tenant` holds that has not finished.
    pub(super) fn holding(&self, tenant: &str) -> Result<Holding, LedgerError> {
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
    pub(super) fn counts(&self) -> Result<Counts, LedgerError> {
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
    pub(super) fn purge_finished_before(&self, cutoff_ms: i64) -> Result<usize, LedgerError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, created_ms: i64) -> Job {
        Job {
            id: id.into(),
            tenant: "t".into(),
            model: "m".into(),
            version: None,
            status: QUEUED.into(),
            total: 2,
            completed: 0,
            failed: 0,
            cost_usd: 0.0,
            saved_usd: 0.0,
            created_ms,
            finished_ms: None,
        }
    }

    fn finished(job: &str, index: u64) -> Finished {
        Finished {
            job: job.into(),
            index,
            ok: true,
            answer: format!("{{\"index\":{index}}}"),
            record: Some(UsageRecord {
                request_id: format!("{job}-{index}").into(),
                cost_usd: 1.0,
                ..UsageRecord::default()
            }),
        }
    }

    /// A second finish of the same row, or one after a cancel, commits nothing and bills
    /// nothing; a finished job is purged after its retention, an unfinished one never.
    #[test]
    fn rows_finish_once_and_finished_jobs_are_purged() {
        let dir = std::env::temp_dir().join(format!("tollgate-jobs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.sqlite");
        let ledger = crate::metering::ledger::Ledger::open(
            crate::metering::ledger::LedgerSettings::new(&path),
        )
        .unwrap();
        let store = SqliteJobs::open(&path, Detail::All).unwrap();
        store.create(&job("a", 1), &[b"{}", b"{}"]).unwrap();
        store.create(&job("b", 2), &[b"{}", b"{}"]).unwrap();
        assert_eq!(store.queued(10).unwrap().len(), 4);
        assert_eq!(store.finish(vec![finished("a", 0)], 10).unwrap().len(), 1);
        assert!(
            store.finish(vec![finished("a", 0)], 11).unwrap().is_empty(),
            "once"
        );
        assert!(store.cancel("b", 12).unwrap());
        assert!(
            store.finish(vec![finished("b", 0)], 13).unwrap().is_empty(),
            "cancelled"
        );
        assert_eq!(store.finish(vec![finished("a", 1)], 14).unwrap().len(), 1);
        let a = store.get("a").unwrap().unwrap();
        assert_eq!(
            (a.status.as_str(), a.completed, a.cost_usd),
            (COMPLETED, 2, 2.0)
        );
        assert_eq!(store.answers("a").unwrap().len(), 2);
        assert_eq!(store.holding("t").unwrap(), Holding { jobs: 0, rows: 0 });
        store.create(&job("c", 3), &[b"{}", b"{}"]).unwrap();
        assert_eq!(store.purge_finished_before(100).unwrap(), 2);
        assert!(store.get("a").unwrap().is_none() && store.get("c").unwrap().is_some());
        assert_eq!(store.holding("t").unwrap(), Holding { jobs: 1, rows: 2 });
        drop(ledger);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
