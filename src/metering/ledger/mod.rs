//! The durable usage ledger: every `UsageRecord` counted in rollups (and, as `detail` says,
//! kept as a row) in an embedded SQLite file, or in PostgreSQL shared by a fleet (`postgres`),
//! written by one background thread in group commits, read through separate connections. What
//! follows describes the SQLite file; `postgres` says where PostgreSQL differs.
//!
//! # Durability
//!
//! The file is always in WAL mode: a commit appends to the `-wal` file and readers keep reading
//! while the writer commits.
//!
//! - **async** (`sync: false`): `synchronous=NORMAL`. A commit is a `write()` into the WAL
//!   without an fsync; the WAL is fsynced only at checkpoints. The operating system holds
//!   written data for a process that dies, so a `kill -9` or a panic of the gateway loses no
//!   committed record. A power loss or kernel crash may lose the last transactions (never
//!   corrupt the file). Records still queued (at most `GROUP_WINDOW`, 50 ms, of traffic when
//!   healthy) are lost with the process: callers of `record` are never made to wait.
//! - **sync** (`sync: true`): `synchronous=FULL`. Every commit fsyncs the WAL before it returns,
//!   so a committed record survives a power loss too. `record_committed` resolves only after
//!   that commit. A group with a waiter closes as soon as the queue is momentarily empty, so a
//!   waiter pays about one commit, and whatever arrives during that fsync shares the next one.
//!
//! In both modes a record is committed when `record_committed` or `flush` returns `Ok`.
//!
//! # Failures
//!
//! A group that fails to commit (disk full, file unwritable) is tried `COMMIT_TRIES` times.
//! Its asynchronous records are then kept in memory (at most `max_pending`, beyond that counted
//! as dropped) and retried with each later group, backing off while failures continue; the
//! failure shows in `stats()` and the `tollgate_ledger_*` metrics. Synchronous waiters get
//! `LedgerError::CommitFailed` and their records are not kept.
//!
//! Reads (`costs`, `focus_csv`, `usage`, `spend*`) and `purge_older_than` block on SQLite: call
//! them from `tokio::task::spawn_blocking`. They see committed records only.
//!
//! # Schema and lookups by id
//!
//! Schema 2 (`store`) indexes `usage` by time and by tenant and time, and not by request id: a
//! UNIQUE index on the id made every insert dearer (BENCHMARKS.md), and ids are unique by
//! construction.
//! Instead every id ends with its record's `time_ms` in hex (`record::request_id`,
//! `record::push_id_time`), and `usage` finds a record with one probe of the time index. Rows
//! copied from a schema 1 ledger (at most the row id kept as `legacy_max_id` in `ledger_meta`)
//! may have ids without their time; only those rows are scanned, and only when the probe
//! misses. A schema 1 file is rebuilt as schema 2, in one transaction, when it is opened.

mod error;
mod focus;
pub mod jobs;
mod lock;
mod postgres;
mod query;
mod rollup;
mod sql;
mod sqlite_sink;
mod store;
mod timeseries;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

pub use error::{LedgerError, QueryError};
pub use focus::FocusQuery;
pub use query::{CostQuery, CostRow, GroupKey};
pub use timeseries::{Point, Series, TimeseriesQuery};

pub use crate::config::LedgerDetail as Detail;
use crate::config::{Durability, LedgerConfig};
use crate::metering::record::UsageRecord;
use writer::{Command, Shared, Writer};

/// Metric names; all start with `tollgate_ledger_` and end in their unit.
/// The ledger's series; their names and help live with the others in `telemetry`.
pub mod metric {
    pub use crate::telemetry::{
        LEDGER_COMMIT_DURATION as COMMIT_DURATION, LEDGER_DROPPED as DROPPED,
        LEDGER_OVERFLOW as OVERFLOW, LEDGER_PENDING as PENDING, LEDGER_RECORDS as RECORDS,
        LEDGER_WRITE_ERRORS as WRITE_ERRORS,
    };
}

/// Default capacity of the channel to the writer.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 65_536;
/// Default bound on records held in memory beyond the channel.
pub const DEFAULT_MAX_PENDING: usize = 65_536;
/// How long `flush` waits between attempts to enqueue itself into a full channel.
const FLUSH_ENQUEUE_PAUSE: Duration = Duration::from_millis(2);
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerSettings {
    pub path: PathBuf,
    /// A PostgreSQL ledger shared by the fleet, instead of the SQLite file at `path`.
    pub url: Option<String>,
    /// `synchronous=FULL` (true) or `NORMAL` (false); see the module comment.
    pub sync: bool,
    /// Records older than this many days go in `purge_expired`; 0 keeps them forever.
    pub retention_days: u32,
    /// The same for rollup rows, kept far longer: they are what reports read.
    pub rollup_retention_days: u32,
    /// Which records keep a per-request row (all are counted in the rollups).
    pub detail: Detail,
    pub channel_capacity: usize,
    pub max_pending: usize,
}

impl LedgerSettings {
    pub fn new(path: impl Into<PathBuf>) -> LedgerSettings {
        LedgerSettings {
            path: path.into(),
            url: None,
            sync: false,
            retention_days: 90,
            rollup_retention_days: 800,
            detail: Detail::All,
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }

    pub fn from_config(config: &LedgerConfig) -> LedgerSettings {
        LedgerSettings {
            sync: config.durability == Durability::Sync,
            retention_days: config.retention_days,
            rollup_retention_days: config.rollup_retention_days,
            detail: config.detail,
            url: config.url.clone(),
            ..LedgerSettings::new(config.path.clone())
        }
    }
}

/// Rows a purge deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    pub records: u64,
    pub rollups: u64,
}

/// What became of a record handed to `Ledger::record`.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// On its way to the writer.
    Queued,
    /// The channel was full; the record waits in the in-memory backlog.
    Held,
    /// Neither the channel nor the backlog had room (or the writer is gone). It is counted as
    /// dropped and given back so the caller can log it.
    Dropped(Box<UsageRecord>),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LedgerStats {
    /// Rows committed since open.
    pub committed: u64,
    /// Accepted and not yet committed or given up.
    pub pending: u64,
    /// Records that found the channel full.
    pub overflowed: u64,
    /// Records given up without being committed.
    pub dropped: u64,
    /// Failed commit attempts.
    pub write_failures: u64,
    /// True while the latest commit attempt failed: the signal to alert on.
    pub failing: bool,
    pub last_error: Option<String>,
}

/// A handle to the ledger; clones share one writer. The last one dropped closes the channel
/// and blocks until the writer has committed what was queued (call `flush` first where
/// blocking a runtime thread matters).
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

// Field order matters: `tx` drops first, which lets the writer finish, and then `writer`
// (also the handle that wakes the writer) joins it on drop.
struct Inner {
    tx: SyncSender<Command>,
    shared: Arc<Shared>,
    readers: Box<dyn sql::Read + Send + Sync>,
    /// Rows up to this id came from a schema 1 ledger (see `query::usage`).
    legacy_max_id: i64,
    settings: LedgerSettings,
    /// The PostgreSQL ledger's pool, for the deferred jobs' tables.
    pg: Option<Arc<postgres::Postgres>>,
    writer: WriterThread,
    /// Released last, once the writer has committed what was queued (a SQLite file only).
    _lock: Option<lock::WriterLock>,
}

/// What a database brings to a ledger.
struct Parts {
    sink: Box<dyn writer::Sink>,
    readers: Box<dyn sql::Read + Send + Sync>,
    lock: Option<lock::WriterLock>,
    legacy_max_id: i64,
    pg: Option<Arc<postgres::Postgres>>,
}

struct WriterThread(Option<JoinHandle<()>>);

impl WriterThread {
    fn wake(&self) {
        if let Some(handle) = &self.0 {
            handle.thread().unpark();
        }
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}

impl Ledger {
    /// Opens or creates the ledger (and the file's directory, or the PostgreSQL schema) and
    /// starts the writer thread.
    pub fn open(settings: LedgerSettings) -> Result<Ledger, LedgerError> {
        if let Some(url) = settings.url.clone() {
            let pg = postgres::Postgres::new(&url)?;
            pg.check()?;
            let parts = Parts {
                sink: Box::new(postgres::PgSink::new(pg.clone(), settings.sync)),
                readers: Box::new(postgres::PgReaders(pg.clone())),
                lock: None,
                legacy_max_id: 0,
                pg: Some(pg),
            };
            return Ledger::start(settings, parts);
        }
        // Before the file is opened: a second gateway must not migrate it either.
        let lock = lock::WriterLock::acquire(&settings.path)?;
        let opened = store::open_writer(&settings.path, settings.sync)?;
        let parts = Parts {
            sink: Box::new(sqlite_sink::SqliteSink::new(opened.conn)),
            readers: Box::new(store::Readers::new(settings.path.clone())),
            lock: Some(lock),
            legacy_max_id: opened.legacy_max_id,
            pg: None,
        };
        Ledger::start(settings, parts)
    }

    fn start(settings: LedgerSettings, parts: Parts) -> Result<Ledger, LedgerError> {
        let shared = Arc::new(Shared::new(settings.max_pending));
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.channel_capacity.max(1));
        let writer = Writer::new(parts.sink, rx, shared.clone(), settings.detail);
        let handle = std::thread::Builder::new()
            .name("tollgate-ledger".into())
            .spawn(move || writer.run())
            .map_err(|e| LedgerError::Spawn(Arc::new(e)))?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                tx,
                shared,
                readers: parts.readers,
                legacy_max_id: parts.legacy_max_id,
                settings,
                pg: parts.pg,
                writer: WriterThread(Some(handle)),
                _lock: parts.lock,
            }),
        })
    }

    /// The deferred jobs' tables beside the records (on a connection of their own in the
    /// SQLite file).
    pub fn open_jobs(&self) -> Result<jobs::JobStore, LedgerError> {
        let settings = &self.inner.settings;
        match &self.inner.pg {
            Some(pg) => jobs::JobStore::postgres(pg.clone(), settings.detail),
            None => jobs::JobStore::sqlite(&settings.path, settings.detail),
        }
    }

    pub fn settings(&self) -> &LedgerSettings {
        &self.inner.settings
    }

    /// Queues a record for the next group commit without ever blocking (async durability).
    pub fn record(&self, record: UsageRecord) -> Submitted {
        let shared = &self.inner.shared;
        // Counted before sending so the writer's decrement can never come first.
        shared.pending.fetch_add(1, Ordering::Relaxed);
        let (cmd, full) = match self.inner.tx.try_send(Command::Record {
            record: Box::new(record),
            reply: None,
        }) {
            // No wake-up: the writer collects asynchronous records on its own schedule.
            Ok(()) => return Submitted::Queued,
            Err(TrySendError::Full(cmd)) => (cmd, true),
            Err(TrySendError::Disconnected(cmd)) => (cmd, false),
        };
        let Command::Record { record, .. } = cmd else {
            unreachable!("try_send gives back the command it was given")
        };
        let record = if full {
            shared.overflowed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(metric::OVERFLOW).increment(1);
            match shared.hold(record) {
                Ok(()) => return Submitted::Held,
                Err(record) => record,
            }
        } else {
            shared.set_error(LedgerError::Closed.to_string());
            record
        };
        shared.count_dropped(1);
        Submitted::Dropped(record)
    }

    /// Queues a record and resolves once its group has committed (sync durability). A full
    /// channel is refused at once with `Overloaded` rather than making the request wait.
    pub async fn record_committed(&self, record: UsageRecord) -> Result<(), LedgerError> {
        let shared = &self.inner.shared;
        let (reply, committed) = oneshot::channel();
        shared.pending.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.inner.tx.try_send(Command::Record {
            record: Box::new(record),
            reply: Some(reply),
        }) {
            shared.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                TrySendError::Full(_) => {
                    shared.overflowed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(metric::OVERFLOW).increment(1);
                    LedgerError::Overloaded
                }
                TrySendError::Disconnected(_) => LedgerError::Closed,
            });
        }
        self.wake_writer();
        committed.await.map_err(|_| LedgerError::Closed)?
    }

    /// Commits everything queued before the call (and the in-memory backlog) and returns when
    /// that is done, or with the commit's error.
    pub async fn flush(&self) -> Result<(), LedgerError> {
        let (reply, done) = oneshot::channel();
        let mut cmd = Command::Flush(reply);
        loop {
            match self.inner.tx.try_send(cmd) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    cmd = back;
                    tokio::time::sleep(FLUSH_ENQUEUE_PAUSE).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(LedgerError::Closed),
            }
        }
        self.wake_writer();
        done.await.map_err(|_| LedgerError::Closed)?
    }

    /// Cuts the writer's park short: for commands somebody waits on. Asynchronous records do
    /// not call it (see `Writer::gather`).
    fn wake_writer(&self) {
        self.inner.writer.wake();
    }

    pub fn stats(&self) -> LedgerStats {
        let s = &self.inner.shared;
        LedgerStats {
            committed: s.committed.load(Ordering::Relaxed),
            pending: s.pending.load(Ordering::Relaxed),
            overflowed: s.overflowed.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            write_failures: s.write_failures.load(Ordering::Relaxed),
            failing: s.failing.load(Ordering::Relaxed),
            last_error: s.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// Cost per group over a range (blocking: see the module comment).
    pub fn costs(&self, query: &CostQuery) -> Result<Vec<CostRow>, LedgerError> {
        query.validate()?;
        query::costs(&*self.inner.readers, query)
    }

    /// Cost per step of time and group, from the rollups (blocking).
    pub fn timeseries(&self, query: &TimeseriesQuery) -> Result<Vec<Series>, LedgerError> {
        query.validate()?;
        timeseries::timeseries(&*self.inner.readers, query)
    }

    /// The range as a FOCUS 1.x CSV (blocking).
    pub fn focus_csv(&self, query: &FocusQuery) -> Result<String, LedgerError> {
        query.validate()?;
        focus::csv(&*self.inner.readers, query)
    }

    /// One committed record by request id (blocking). Found through the time the id carries
    /// (`record::id_time`); ids without one can only be those of rows from a schema 1 ledger.
    pub fn usage(&self, request_id: &str) -> Result<Option<UsageRecord>, LedgerError> {
        let legacy_max_id = self.inner.legacy_max_id;
        if legacy_max_id == 0 && crate::metering::record::id_time(request_id).is_none() {
            return Ok(None);
        }
        query::usage(&*self.inner.readers, request_id, legacy_max_id)
    }

    /// Why a record the ledger has not got may never have been kept, or be gone: its id's time
    /// is past the retention, or `detail` keeps no row of some requests. `None` when neither
    /// applies (the id is unknown).
    pub fn why_not_kept(&self, request_id: &str, now_ms: i64) -> Option<String> {
        let settings = &self.inner.settings;
        let days = settings.retention_days;
        let arrived = crate::metering::record::id_time(request_id);
        if let Some(time_ms) = arrived.filter(|_| days > 0) {
            if time_ms < now_ms.saturating_sub(i64::from(days) * DAY_MS) {
                return Some(format!(
                    "records older than ledger.retention_days = {days} are deleted \
                     (its usage is still counted in the rollups)"
                ));
            }
        }
        match settings.detail {
            Detail::All => None,
            Detail::Misses => Some(
                "ledger.detail = \"misses\" keeps no record of requests answered from the \
                 cache (their usage is counted in the rollups)"
                    .into(),
            ),
            Detail::None => Some(
                "ledger.detail = \"none\" keeps no per-request records (usage is counted in \
                 the rollups)"
                    .into(),
            ),
        }
    }

    /// A tenant's committed cost since `since_ms` (blocking); rebuilds budgets at start-up.
    pub fn spend(&self, tenant: &str, since_ms: i64) -> Result<f64, LedgerError> {
        query::spend_of_tenant(&*self.inner.readers, tenant, since_ms)
    }

    /// A team's committed cost since `since_ms`, idle time excluded (blocking).
    pub fn spend_by_team(&self, team: &str, since_ms: i64) -> Result<f64, LedgerError> {
        query::spend_of_team(&*self.inner.readers, team, since_ms)
    }

    /// Deletes per-request records that arrived before `cutoff_ms`; returns how many
    /// (blocking: it runs on the writer thread after the records queued before it).
    pub fn purge_older_than(&self, cutoff_ms: i64) -> Result<u64, LedgerError> {
        let cutoffs = writer::Cutoffs {
            records_ms: Some(cutoff_ms),
            rollups_ms: None,
        };
        Ok(self.purge(cutoffs)?.records)
    }

    fn purge(&self, cutoffs: writer::Cutoffs) -> Result<Purged, LedgerError> {
        let (reply, done) = std::sync::mpsc::channel();
        self.inner
            .tx
            .send(Command::Purge { cutoffs, reply })
            .map_err(|_| LedgerError::Closed)?;
        self.wake_writer();
        done.recv().map_err(|_| LedgerError::Closed)?
    }

    /// Applies `retention_days` and `rollup_retention_days` as of `now_ms`, each only when it
    /// is not 0 (blocking).
    pub fn purge_expired(&self, now_ms: i64) -> Result<Purged, LedgerError> {
        let cutoff = |days: u32| match days {
            0 => None,
            days => Some(now_ms.saturating_sub(i64::from(days) * DAY_MS)),
        };
        let cutoffs = writer::Cutoffs {
            records_ms: cutoff(self.inner.settings.retention_days),
            rollups_ms: cutoff(self.inner.settings.rollup_retention_days),
        };
        if cutoffs.records_ms.is_none() && cutoffs.rollups_ms.is_none() {
            return Ok(Purged::default());
        }
        self.purge(cutoffs)
    }

    #[cfg(test)]
    fn exec(&self, f: impl FnOnce(&rusqlite::Connection) + Send + 'static) {
        let _ = self.inner.tx.send(Command::Exec(Box::new(f)));
        self.wake_writer();
    }
}
