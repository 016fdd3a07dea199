//! The ledger's errors. `LedgerError` is `Clone` because one failed commit must reach every
//! waiter of its group; the underlying database and I/O errors are shared behind an `Arc`.

use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot create the ledger directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("the ledger {} is in use by another gateway ({holder}); give each gateway a ledger.path of its own", path.display())]
    InUse { path: PathBuf, holder: String },
    #[error("cannot lock the ledger at {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("cannot start the ledger writer thread: {0}")]
    Spawn(#[source] Arc<std::io::Error>),
    #[error("ledger database error: {0}")]
    Database(#[source] Arc<rusqlite::Error>),
    #[error("PostgreSQL ledger error: {0}")]
    Postgres(#[source] Arc<tokio_postgres::Error>),
    #[error("PostgreSQL ledger unavailable: {0}")]
    Pool(String),
    #[error("ledger.url: {0}")]
    BadUrl(String),
    #[error("the ledger at {} could not switch to WAL mode (journal mode is {mode:?})", path.display())]
    NoWal { path: PathBuf, mode: String },
    #[error(
        "the ledger's schema version {found} is newer than this build understands ({supported})"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("ledger commit failed after {tries} tries: {message}")]
    CommitFailed { tries: u32, message: String },
    /// The writer's queue is full; in sync durability the request cannot be recorded now.
    #[error("the ledger's write queue is full")]
    Overloaded,
    #[error("the ledger writer has stopped")]
    Closed,
    #[error("corrupt ledger row: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError::Database(Arc::new(e))
    }
}

impl From<tokio_postgres::Error> for LedgerError {
    fn from(e: tokio_postgres::Error) -> Self {
        LedgerError::Postgres(Arc::new(e))
    }
}

/// A cost or export query the caller got wrong: the HTTP layer answers these with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown group_by key {0:?} (expected tenant, team, project, model, version, device, outcome, cache or tag:KEY)")]
    UnknownGroupKey(String),
    #[error("group_by key {0:?} is listed twice")]
    DuplicateGroupKey(String),
    #[error(
        "tag key {0:?} must be 1 to 64 characters of letters, digits, '_', '-', '.', ':' or '/'"
    )]
    BadTagKey(String),
    #[error("group_by names {0} keys; at most {max} are allowed", max = super::query::MAX_GROUP_KEYS)]
    TooManyGroupKeys(usize),
    #[error("from ({from_ms}) is after to ({to_ms})")]
    FromAfterTo { from_ms: i64, to_ms: i64 },
    #[error("the range spans {days} days; at most {max} are allowed", max = super::query::MAX_RANGE_DAYS)]
    RangeTooLong { days: i64 },
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("currency {0:?} is not a three-letter ISO 4217 code")]
    BadCurrency(String),
    #[error("step_seconds must be a whole number of minutes (60, 300, 3600, ...), got {0}")]
    BadStep(i64),
    #[error("the range holds {points} steps; at most {max} are allowed (a longer step_seconds, or a shorter range)", max = super::timeseries::MAX_POINTS)]
    TooManyPoints { points: i64 },
}
