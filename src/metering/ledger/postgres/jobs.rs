//! Deferred jobs in the fleet's PostgreSQL ledger, beside its records: any replica may read a
//! job and run its rows. A finished row is committed with its usage record and rollups in one
//! transaction, guarded by the row still being queued; of two replicas that ran the same row,
//! the second waits on the first's row lock, then finds it answered and commits nothing for it.

use super::super::jobs::{Counts, Finished, Holding, Job, Queued, QUEUED, RUNNING};
use super::super::{rollup, writer, Detail, LedgerError};
use super::sink::{insert_records_sql, record_arrays, refs, rollup_arrays, upsert_sql};
use super::Postgres;
use crate::metering::record::UsageRecord;
use std::sync::Arc;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT             PRIMARY KEY,
    tenant      TEXT             NOT NULL,
    model       TEXT             NOT NULL,
    version     TEXT,
    status      TEXT             NOT NULL,
    total       BIGINT           NOT NULL,
    completed   BIGINT           NOT NULL DEFAULT 0,
    failed      BIGINT           NOT NULL DEFAULT 0,
    cost_usd    DOUBLE PRECISION NOT NULL DEFAULT 0,
    saved_usd   DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_ms  BIGINT           NOT NULL,
    finished_ms BIGINT
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, status);
CREATE TABLE IF NOT EXISTS job_rows (
    job         TEXT   NOT NULL,
    idx         BIGINT NOT NULL,
    request     BYTEA  NOT NULL,
    state       TEXT   NOT NULL,
    answer      TEXT,
    PRIMARY KEY (job, idx)
);
CREATE INDEX IF NOT EXISTS job_rows_queued ON job_rows (state, job, idx);
";

const JOB_COLUMNS: &str = "id, tenant, model, version, status, total, completed, failed, \
    cost_usd, saved_usd, created_ms, finished_ms";

pub(in super::super) struct PgJobs {
    pg: Arc<Postgres>,
    detail: Detail,
}

impl PgJobs {
    /// Makes the tables now (a replica that cannot reach PostgreSQL at start keeps no jobs).
    pub(in super::super) fn open(pg: Arc<Postgres>, detail: Detail) -> Result<PgJobs, LedgerError> {
        let client = pg.client();
        pg.run(async move {
            client.await?.batch_execute(SCHEMA).await?;
            Ok(())
        })?;
        Ok(PgJobs { pg, detail })
    }

    pub(in super::super) fn create(
        &self,
        job: &Job,
        requests: &[&[u8]],
    ) -> Result<(), LedgerError> {
        let job = job.clone();
        let indices: Vec<i64> = (0..requests.len() as i64).collect();
        let bodies: Vec<Vec<u8>> = requests.iter().map(|r| r.to_vec()).collect();
        let client = self.pg.client();
        self.pg.run(async move {
            let mut client = client.await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO jobs (id, tenant, model, version, status, total, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &job.id,
                    &job.tenant,
                    &job.model,
                    &job.version,
                    &QUEUED,
                    &(job.total as i64),
                    &job.created_ms,
                ],
            )
            .await?;
            tx.execute(
                "INSERT INTO job_rows (job, idx, request, state)
                 SELECT $1, i, r, 'queued' FROM UNNEST($2::bigint[], $3::bytea[]) AS t(i, r)",
                &[&job.id, &indices, &bodies],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub(in super::super) fn get(&self, id: &str) -> Result<Option<Job>, LedgerError> {
        let id = id.to_string();
        let client = self.pg.client();
        self.pg.run(async move {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
            let row = client.await?.query_opt(&sql, &[&id]).await?;
            Ok(row.map(|r| read_job(&r)))
        })
    }

    pub(in super::super) fn answers(&self, id: &str) -> Result<Vec<(u64, String)>, LedgerError> {
        let id = id.to_string();
        let client = self.pg.client();
        self.pg.run(async move {
            let rows = client
                .await?
                .query(
                    "SELECT idx, answer FROM job_rows WHERE job = $1 AND answer IS NOT NULL
                      ORDER BY idx",
                    &[&id],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                .collect())
        })
    }

    pub(in super::super) fn queued(&self, limit: usize) -> Result<Vec<Queued>, LedgerError> {
        let limit = limit as i64;
        let client = self.pg.client();
        self.pg.run(async move {
            let rows = client
                .await?
                .query(
                    "SELECT r.job, r.idx, r.request, j.tenant, j.model, j.version
                       FROM jobs j JOIN job_rows r ON r.job = j.id AND r.state = 'queued'
                      WHERE j.status IN ('queued', 'running')
                      ORDER BY j.created_ms, j.id, r.idx LIMIT $1",
                    &[&limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| Queued {
                    job: r.get(0),
                    index: r.get::<_, i64>(1) as u64,
                    request: r.get(2),
                    tenant: r.get(3),
                    model: r.get(4),
                    version: r.get(5),
                })
                .collect())
        })
    }

    pub(in super::super) fn finish(
        &self,
        rows: Vec<Finished>,
        now_ms: i64,
    ) -> Result<Vec<UsageRecord>, LedgerError> {
        let (client, detail) = (self.pg.client(), self.detail);
        self.pg.run(async move {
            let mut client = client.await?;
            let tx = client.transaction().await?;
            let mark = tx
                .prepare_cached(
                    "UPDATE job_rows SET state = $3, answer = $4
                      WHERE job = $1 AND idx = $2 AND state = 'queued'
                        AND (SELECT status FROM jobs WHERE id = $1) IN ('queued', 'running')",
                )
                .await?;
            let count = tx
                .prepare_cached(
                    "UPDATE jobs SET status = 'running', completed = completed + $2,
                            failed = failed + $3, cost_usd = cost_usd + $4,
                            saved_usd = saved_usd + $5
                      WHERE id = $1",
                )
                .await?;
            let mut committed = Vec::with_capacity(rows.len());
            for row in rows {
                let state = if row.ok { "completed" } else { "failed" };
                let index = row.index as i64;
                let marked = tx
                    .execute(&mark, &[&row.job, &index, &state, &row.answer])
                    .await?;
                if marked == 0 {
                    continue;
                }
                let (done, failed): (i64, i64) = if row.ok { (1, 0) } else { (0, 1) };
                let (cost, saved) = row
                    .record
                    .as_ref()
                    .map_or((0.0, 0.0), |r| (r.cost_usd, r.saved_usd));
                tx.execute(&count, &[&row.job, &done, &failed, &cost, &saved])
                    .await?;
                committed.extend(row.record);
            }
            let mut scratch = Vec::new();
            let kept: Vec<&UsageRecord> = committed
                .iter()
                .filter(|r| writer::keeps(detail, r))
                .collect();
            if !kept.is_empty() {
                let records = record_arrays(&kept, &mut scratch);
                let stmt = tx.prepare_cached(&insert_records_sql()).await?;
                tx.execute(&stmt, &refs(&records)).await?;
            }
            if !committed.is_empty() {
                let mut fold = rollup::Fold::default();
                for record in &committed {
                    fold.add(record, &mut scratch);
                }
                let tiers = fold.tiers().map(|rows| rollup_arrays(&rows));
                for (table, values) in rollup::TIERS.iter().zip(&tiers) {
                    let stmt = tx.prepare_cached(&upsert_sql(table)).await?;
                    tx.execute(&stmt, &refs(values)).await?;
                }
            }
            tx.execute(
                "UPDATE jobs SET status = 'completed', finished_ms = $1
                  WHERE status IN ('queued', 'running') AND completed + failed >= total",
                &[&now_ms],
            )
            .await?;
            tx.commit().await?;
            Ok(committed)
        })
    }

    pub(in super::super) fn cancel(&self, id: &str, now_ms: i64) -> Result<bool, LedgerError> {
        let id = id.to_string();
        let client = self.pg.client();
        self.pg.run(async move {
            let changed = client
                .await?
                .execute(
                    "UPDATE jobs SET status = 'cancelled', finished_ms = $2
                      WHERE id = $1 AND status IN ('queued', 'running')",
                    &[&id, &now_ms],
                )
                .await?;
            Ok(changed == 1)
        })
    }

    pub(in super::super) fn holding(&self, tenant: &str) -> Result<Holding, LedgerError> {
        let tenant = tenant.to_string();
        let client = self.pg.client();
        self.pg.run(async move {
            let row = client
                .await?
                .query_one(
                    "SELECT COUNT(*), COALESCE(SUM(total - completed - failed), 0)::BIGINT
                       FROM jobs WHERE tenant = $1 AND status IN ('queued', 'running')",
                    &[&tenant],
                )
                .await?;
            Ok(Holding {
                jobs: row.get::<_, i64>(0) as u64,
                rows: row.get::<_, i64>(1) as u64,
            })
        })
    }

    pub(in super::super) fn counts(&self) -> Result<Counts, LedgerError> {
        let client = self.pg.client();
        self.pg.run(async move {
            let rows = client
                .await?
                .query(
                    "SELECT status, COUNT(*), SUM(total - completed - failed)::BIGINT,
                            SUM(completed)::BIGINT, SUM(failed)::BIGINT
                       FROM jobs GROUP BY status",
                    &[],
                )
                .await?;
            let mut counts = Counts::default();
            for row in rows {
                let status: String = row.get(0);
                let waiting = row.get::<_, Option<i64>>(2).unwrap_or(0) as u64;
                counts.rows_completed += row.get::<_, Option<i64>>(3).unwrap_or(0) as u64;
                counts.rows_failed += row.get::<_, Option<i64>>(4).unwrap_or(0) as u64;
                if status == QUEUED || status == RUNNING {
                    counts.rows_queued += waiting;
                }
                counts.jobs.push((status, row.get::<_, i64>(1) as u64));
            }
            Ok(counts)
        })
    }

    pub(in super::super) fn purge_finished_before(
        &self,
        cutoff_ms: i64,
    ) -> Result<usize, LedgerError> {
        let client = self.pg.client();
        self.pg.run(async move {
            let mut client = client.await?;
            let tx = client.transaction().await?;
            tx.execute(
                "DELETE FROM job_rows WHERE job IN
                   (SELECT id FROM jobs WHERE finished_ms IS NOT NULL AND finished_ms < $1)",
                &[&cutoff_ms],
            )
            .await?;
            let jobs = tx
                .execute(
                    "DELETE FROM jobs WHERE finished_ms IS NOT NULL AND finished_ms < $1",
                    &[&cutoff_ms],
                )
                .await?;
            tx.commit().await?;
            Ok(jobs as usize)
        })
    }
}

fn read_job(r: &tokio_postgres::Row) -> Job {
    Job {
        id: r.get(0),
        tenant: r.get(1),
        model: r.get(2),
        version: r.get(3),
        status: r.get(4),
        total: r.get::<_, i64>(5) as u64,
        completed: r.get::<_, i64>(6) as u64,
        failed: r.get::<_, i64>(7) as u64,
        cost_usd: r.get(8),
        saved_usd: r.get(9),
        created_ms: r.get(10),
        finished_ms: r.get(11),
    }
}
