//! Deferred jobs in the ledger's store: a job, each of its requests with its state, and each
//! answer, in the SQLite file or in PostgreSQL beside the records. A row's answer, its usage
//! record and the rollups it adds to are committed in one transaction, and only for a row
//! still queued (of a job neither finished nor cancelled): after a crash a row is either
//! answered and billed, or neither and runs again; never billed twice, never lost. Replicas
//! sharing a PostgreSQL ledger may run the same row at once; only one of them commits it.

mod sqlite;

use super::postgres::{PgJobs, Postgres};
use super::{Detail, LedgerError};
use crate::metering::record::UsageRecord;
use std::path::Path;
use std::sync::Arc;

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
    backend: Backend,
    /// Told when a job is stored, so the runner need not poll for work.
    pub added: tokio::sync::Notify,
    /// Jobs cancelled through this replica, so that rows already read are not started.
    cancelled: std::sync::Mutex<std::collections::HashSet<String>>,
}

enum Backend {
    Sqlite(sqlite::SqliteJobs),
    Postgres(PgJobs),
}

/// Every call blocks (on SQLite, or on the ledger's PostgreSQL runtime): call from
/// `spawn_blocking` or `block_in_place`.
impl JobStore {
    pub(super) fn sqlite(path: &Path, detail: Detail) -> Result<JobStore, LedgerError> {
        Ok(JobStore::of(Backend::Sqlite(sqlite::SqliteJobs::open(
            path, detail,
        )?)))
    }

    pub(super) fn postgres(pg: Arc<Postgres>, detail: Detail) -> Result<JobStore, LedgerError> {
        Ok(JobStore::of(Backend::Postgres(PgJobs::open(pg, detail)?)))
    }

    fn of(backend: Backend) -> JobStore {
        JobStore {
            backend,
            added: tokio::sync::Notify::new(),
            cancelled: std::sync::Mutex::default(),
        }
    }

    /// Stores a job and all its requests at once: either all of them or none.
    pub fn create(&self, job: &Job, requests: &[&[u8]]) -> Result<(), LedgerError> {
        match &self.backend {
            Backend::Sqlite(db) => db.create(job, requests),
            Backend::Postgres(db) => db.create(job, requests),
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<Job>, LedgerError> {
        match &self.backend {
            Backend::Sqlite(db) => db.get(id),
            Backend::Postgres(db) => db.get(id),
        }
    }

    /// The answers of a job's finished rows, in input order.
    pub fn answers(&self, id: &str) -> Result<Vec<(u64, String)>, LedgerError> {
        match &self.backend {
            Backend::Sqlite(db) => db.answers(id),
            Backend::Postgres(db) => db.answers(id),
        }
    }

    /// Rows to run next: those of the oldest jobs first, in input order, `limit` at most.
    pub fn queued(&self, limit: usize) -> Result<Vec<Queued>, LedgerError> {
        match &self.backend {
            Backend::Sqlite(db) => db.queued(limit),
            Backend::Postgres(db) => db.queued(limit),
        }
    }

    /// Commits finished rows with their usage records in one transaction. A row no longer
    /// queued (answered already, or its job cancelled) is skipped with its record, so nothing
    /// is billed twice. Returns the records committed, for the budgets and metrics.
    pub fn finish(
        &self,
        rows: Vec<Finished>,
        now_ms: i64,
    ) -> Result<Vec<UsageRecord>, LedgerError> {
        match &self.backend {
            Backend::Sqlite(db) => db.finish(rows, now_ms),
            Backend::Postgres(db) => db.finish(rows, now_ms),
        }
    }

    /// Cancels a job that has not finished; true if it was cancelled now.
    pub fn cancel(&self, id: &str, now_ms: i64) -> Result<bool, LedgerError> {
        let cancelled = match &self.backend {
            Backend::Sqlite(db) => db.cancel(id, now_ms),
            Backend::Postgres(db) => db.cancel(id, now_ms),
        }?;
        if cancelled {
            self.cancelled_here().insert(id.to_string());
        }
        Ok(cancelled)
    }

    /// Whether `id` was cancelled through this replica (a row read before the cancel is then
    /// not started; one another replica cancelled is stopped at its commit instead).
    pub fn was_cancelled(&self, id: &str) -> bool {
        self.cancelled_here().contains(id)
    }

    fn cancelled_here(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.cancelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What `tenant` holds that has not finished.
    pub fn holding(&self, tenant: &str) -> Result<Holding, LedgerError> {
        match &self.backend {
            Backend::Sqlite(db) => db.holding(tenant),
            Backend::Postgres(db) => db.holding(tenant),
        }
    }

    /// Jobs by status and rows by state, read from the jobs alone so that it stays cheap.
    pub fn counts(&self) -> Result<Counts, LedgerError> {
        match &self.backend {
            Backend::Sqlite(db) => db.counts(),
            Backend::Postgres(db) => db.counts(),
        }
    }

    /// Deletes jobs (and their rows) that finished before `cutoff_ms`; returns how many.
    pub fn purge_finished_before(&self, cutoff_ms: i64) -> Result<usize, LedgerError> {
        // The jobs it names are finished: no row of theirs is read again.
        self.cancelled_here().clear();
        match &self.backend {
            Backend::Sqlite(db) => db.purge_finished_before(cutoff_ms),
            Backend::Postgres(db) => db.purge_finished_before(cutoff_ms),
        }
    }
}
