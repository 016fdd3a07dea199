//! The writer thread: the only owner of the write connection. It gathers what arrives on the
//! channel into groups and commits each group as one transaction, so one fsync serves many
//! records. A group closes after `GROUP_WINDOW` or `GROUP_RECORDS`, at a flush, or, when a
//! synchronous caller waits on it, as soon as the channel is momentarily empty. A group that
//! cannot be committed is retried; its asynchronous records are then held in memory (up to
//! `max_pending`) and tried again before later groups, while synchronous waiters get the error.
//!
//! The writer knows the database only as a `Sink`. Each group carries an id the sink may record
//! in the same transaction (PostgreSQL does): a commit whose answer was lost (the connection
//! broke after COMMIT) is retried under the same id and with the same records, so the second
//! try finds the id and writes nothing. That is why a group that failed is kept as it was
//! (`Unsettled`) and tried again alone, before anything newer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{metric, rollup, Detail, LedgerError, Purged};
use crate::metering::record::UsageRecord;

/// A group closes this long after its first record arrived...
pub(super) const GROUP_WINDOW: Duration = Duration::from_millis(50);
/// ...or once it holds this many records from the channel, whichever comes first.
pub(super) const GROUP_RECORDS: usize = 1_000;
/// Attempts at one group before its waiters are told it failed.
pub(super) const COMMIT_TRIES: u32 = 3;
/// Pause before the second attempt; doubled before each further one.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// While commits keep failing, held records are retried at most this often even when nothing
/// new arrives, backing off from `GROUP_WINDOW` to this.
const MAX_IDLE_RETRY: Duration = Duration::from_secs(5);
/// Rows deleted per statement by a purge, so a large purge never holds one huge transaction;
/// what arrived meanwhile is committed between two chunks.
pub(super) const PURGE_CHUNK: usize = 5_000;

pub(super) type Reply = oneshot::Sender<Result<(), LedgerError>>;

pub(super) enum Command {
    Record {
        // Boxed: the channel allocates all its slots up front, at the size of the largest command.
        record: Box<UsageRecord>,
        reply: Option<Reply>,
    },
    Flush(Reply),
    Purge {
        cutoffs: Cutoffs,
        reply: std::sync::mpsc::Sender<Result<Purged, LedgerError>>,
    },
    /// Runs code on the write connection between groups (tests use it to fill the disk).
    #[cfg(test)]
    Exec(Box<dyn FnOnce(&rusqlite::Connection) + Send>),
}

/// Which rows one purge step deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PurgeTarget {
    Records,
    MinuteRollups,
    HourRollups,
    /// The ids of committed groups (where the sink keeps them).
    Groups,
}

/// A group's id: unique across processes and replicas sharing a database.
pub(super) type GroupId = String;

/// A ledger's write side, owned by the writer thread.
pub(super) trait Sink: Send {
    /// Commits one group as one transaction: the rollups folded from all its records and a
    /// row for each record in `kept`; or (on error) nothing. A sink that records `id` writes
    /// nothing, and succeeds, when it finds the id already committed.
    fn write_group(
        &mut self,
        id: &GroupId,
        kept: &[&UsageRecord],
        fold: rollup::Fold,
    ) -> Result<(), LedgerError>;

    /// Deletes at most `limit` rows of `target` older than `cutoff_ms`; returns how many.
    fn purge_chunk(
        &mut self,
        target: PurgeTarget,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<usize, LedgerError>;

    /// The SQLite connection, for tests that break it on purpose.
    #[cfg(test)]
    fn sqlite(&self) -> Option<&rusqlite::Connection>;
}

/// Group ids already committed are kept this long (a retry comes within seconds).
pub(super) const GROUP_ID_RETENTION_MS: i64 = 86_400_000;

/// Ids of the form `<process prefix>-<sequence>`: the prefix is random per process, from
/// the standard library's randomly seeded hasher.
struct GroupIds {
    prefix: u64,
    next: u64,
}

impl GroupIds {
    fn new() -> GroupIds {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        GroupIds {
            prefix: hasher.finish(),
            next: 0,
        }
    }

    fn next(&mut self) -> GroupId {
        self.next += 1;
        format!("{:016x}-{:x}", self.prefix, self.next)
    }
}

/// A group whose commit failed: its asynchronous records, under the id they were tried with.
struct Unsettled {
    id: GroupId,
    records: Vec<UsageRecord>,
}

/// Counters and the in-memory backlog, shared by the handles and the writer.
pub(super) struct Shared {
    pub(super) committed: AtomicU64,
    /// Accepted and neither committed nor given up yet (channel, backlog, current group).
    pub(super) pending: AtomicU64,
    pub(super) overflowed: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) write_failures: AtomicU64,
    pub(super) failing: AtomicBool,
    pub(super) last_error: Mutex<Option<String>>,
    /// Records the channel had no room for, and records of groups that failed to commit.
    backlog: Mutex<VecDeque<UsageRecord>>,
    max_pending: usize,
}

impl Shared {
    pub(super) fn new(max_pending: usize) -> Shared {
        Shared {
            committed: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            last_error: Mutex::new(None),
            backlog: Mutex::new(VecDeque::new()),
            max_pending,
        }
    }

    pub(super) fn backlog_len(&self) -> usize {
        self.backlog.lock().map(|b| b.len()).unwrap_or(0)
    }

    /// Holds a record for the writer; gives it back when the backlog is full.
    pub(super) fn hold(&self, record: Box<UsageRecord>) -> Result<(), Box<UsageRecord>> {
        match self.backlog.lock() {
            Ok(mut backlog) if backlog.len() < self.max_pending => {
                backlog.push_back(*record);
                Ok(())
            }
            _ => Err(record),
        }
    }

    fn take_backlog(&self) -> Vec<UsageRecord> {
        self.backlog
            .lock()
            .map(|mut b| b.drain(..).collect())
            .unwrap_or_default()
    }

    /// Puts records of a failed group back in front; those beyond `max_pending` are dropped.
    fn hold_again(&self, records: Vec<UsageRecord>) {
        let mut dropped = 0u64;
        if let Ok(mut backlog) = self.backlog.lock() {
            let room = self.max_pending.saturating_sub(backlog.len());
            for (i, record) in records.into_iter().enumerate().rev() {
                if i < room {
                    backlog.push_front(record);
                } else {
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            self.count_dropped(dropped);
            tracing::error!(dropped, "ledger backlog full: usage records dropped");
        }
    }

    /// Keeps the oldest records a failed group may hold besides the backlog (both together at
    /// most `max_pending`) and drops the rest with a count. Leaving records out of a group
    /// retried under its id is safe: had the first try committed, the retry writes nothing.
    fn bound(&self, mut records: Vec<UsageRecord>) -> Vec<UsageRecord> {
        let room = self.max_pending.saturating_sub(self.backlog_len());
        if records.len() > room {
            let dropped = (records.len() - room) as u64;
            records.truncate(room);
            self.count_dropped(dropped);
            tracing::error!(dropped, "ledger backlog full: usage records dropped");
        }
        records
    }

    pub(super) fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.pending.fetch_sub(n, Ordering::Relaxed);
        metrics::counter!(metric::DROPPED).increment(n);
    }

    pub(super) fn set_error(&self, message: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message);
        }
    }
}

/// What a group must do once its records are committed.
enum After {
    Nothing,
    Flush(Reply),
    Purge {
        cutoffs: Cutoffs,
        reply: std::sync::mpsc::Sender<Result<Purged, LedgerError>>,
    },
    #[cfg(test)]
    Exec(Box<dyn FnOnce(&rusqlite::Connection) + Send>),
}

/// What a purge deletes: per-request records and rollup rows older than these times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cutoffs {
    pub(super) records_ms: Option<i64>,
    pub(super) rollups_ms: Option<i64>,
}

struct Group {
    held: Vec<UsageRecord>,
    waiting: Vec<(UsageRecord, Reply)>,
    after: After,
}

impl Group {
    fn new() -> Group {
        Group {
            // Sized for a full group: growing it would copy every record held so far.
            held: Vec::with_capacity(GROUP_RECORDS),
            waiting: Vec::new(),
            after: After::Nothing,
        }
    }
}

pub(super) struct Writer {
    sink: Box<dyn Sink>,
    rx: Receiver<Command>,
    shared: std::sync::Arc<Shared>,
    idle_retry: Duration,
    /// Reused for each record's tags JSON.
    scratch: Vec<u8>,
    detail: Detail,
    /// A command that arrived while a purge committed records between its chunks; it is the
    /// first of the next group.
    deferred: Option<Command>,
    ids: GroupIds,
    unsettled: Option<Unsettled>,
}

impl Writer {
    pub(super) fn new(
        sink: Box<dyn Sink>,
        rx: Receiver<Command>,
        shared: std::sync::Arc<Shared>,
        detail: Detail,
    ) -> Writer {
        Writer {
            sink,
            rx,
            shared,
            idle_retry: GROUP_WINDOW,
            scratch: Vec::new(),
            detail,
            deferred: None,
            ids: GroupIds::new(),
            unsettled: None,
        }
    }

    /// Records not committed yet that no command will bring: the backlog and a failed group.
    fn waiting_to_retry(&self) -> bool {
        self.unsettled.is_some() || self.shared.backlog_len() > 0
    }

    pub(super) fn run(mut self) {
        let mut open = true;
        while open {
            let mut group = Group::new();
            let first = if let Some(cmd) = self.deferred.take() {
                Ok(cmd)
            } else if self.waiting_to_retry() {
                self.rx.recv_timeout(self.idle_retry)
            } else {
                self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            match first {
                Ok(cmd) => open = self.gather(cmd, &mut group),
                Err(RecvTimeoutError::Timeout) => {}
                // Senders are gone and the channel is drained; the backlog gets a last group.
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            self.process(group);
        }
        let left = self.unsettled.take().map_or(0, |u| u.records.len()) + self.shared.backlog_len();
        if left > 0 {
            self.shared.count_dropped(left as u64);
            tracing::error!(
                records = left,
                "the ledger closes with usage records it could not commit"
            );
        }
    }

    /// Fills `group` starting with `first`; false once the channel is closed.
    ///
    /// Between drains the writer parks instead of blocking on the channel: a blocked receiver
    /// would be woken by every asynchronous record (a futex wake and two context switches per
    /// request). Only commands somebody waits on
    /// (`Ledger::wake_writer`) cut the park short.
    fn gather(&mut self, first: Command, group: &mut Group) -> bool {
        let deadline = Instant::now() + GROUP_WINDOW;
        let mut closed = absorb(first, group);
        while !closed && group.held.len() + group.waiting.len() < GROUP_RECORDS {
            match self.rx.try_recv() {
                Ok(cmd) => {
                    closed = absorb(cmd, group);
                    continue;
                }
                Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => {}
            }
            // Someone waits on this commit: take what is already queued but wait for nothing
            // more. Under load the next group forms while this one commits (fsyncs), so sync
            // latency is about one commit, not the window.
            let left = deadline.saturating_duration_since(Instant::now());
            if !group.waiting.is_empty() || left.is_zero() {
                break;
            }
            std::thread::park_timeout(left);
        }
        true
    }

    fn process(&mut self, mut group: Group) {
        let mut result = self.retry_unsettled();
        if let Err(error) = &result {
            // The database still fails: newer records wait behind the failed group.
            self.refuse(std::mem::take(&mut group.waiting), error);
            self.shared.hold_again(std::mem::take(&mut group.held));
        } else {
            // Older records first; without any, the group's own vector goes as it is (no copy).
            let mut held = self.shared.take_backlog();
            if held.is_empty() {
                held = std::mem::take(&mut group.held);
            } else {
                held.append(&mut group.held);
            }
            result = self.commit(held, group.waiting);
        }
        match group.after {
            After::Nothing => {}
            After::Flush(reply) => {
                // Records that spilled to the backlog while this group committed were queued
                // before the flush answers, so they are committed too.
                while result.is_ok() && self.shared.backlog_len() > 0 {
                    result = self.commit(self.shared.take_backlog(), Vec::new());
                }
                let _ = reply.send(result);
            }
            After::Purge { cutoffs, reply } => {
                let _ = reply.send(self.purge(cutoffs));
            }
            #[cfg(test)]
            After::Exec(f) => {
                if let Some(conn) = self.sink.sqlite() {
                    f(conn);
                }
            }
        }
        metrics::gauge!(metric::PENDING).set(self.shared.pending.load(Ordering::Relaxed) as f64);
    }

    /// Tries the group that failed last, alone and under its own id.
    fn retry_unsettled(&mut self) -> Result<(), LedgerError> {
        let Some(unsettled) = self.unsettled.take() else {
            return Ok(());
        };
        self.try_commit(unsettled.id, unsettled.records, Vec::new())
    }

    /// Sync waiters of a group that is not tried: they learn at once the ledger is failing.
    fn refuse(&self, waiting: Vec<(UsageRecord, Reply)>, error: &LedgerError) {
        self.shared
            .pending
            .fetch_sub(waiting.len() as u64, Ordering::Relaxed);
        for (_, reply) in waiting {
            let _ = reply.send(Err(error.clone()));
        }
    }

    /// Commits one group (under a new id) with retries and settles its records either way.
    fn commit(
        &mut self,
        held: Vec<UsageRecord>,
        waiting: Vec<(UsageRecord, Reply)>,
    ) -> Result<(), LedgerError> {
        if held.is_empty() && waiting.is_empty() {
            return Ok(());
        }
        let id = self.ids.next();
        self.try_commit(id, held, waiting)
    }

    /// Tries a group `COMMIT_TRIES` times under one id. When every try fails the waiters get
    /// the error and the held records become the unsettled group, tried again later as they are.
    fn try_commit(
        &mut self,
        id: GroupId,
        held: Vec<UsageRecord>,
        waiting: Vec<(UsageRecord, Reply)>,
    ) -> Result<(), LedgerError> {
        let total = (held.len() + waiting.len()) as u64;
        if total == 0 {
            return Ok(());
        }
        let mut pause = RETRY_PAUSE;
        let mut tries = 0;
        let error = loop {
            tries += 1;
            let started = Instant::now();
            match self.write_group(&id, (&held, &waiting)) {
                Ok(()) => {
                    metrics::histogram!(metric::COMMIT_DURATION)
                        .record(started.elapsed().as_secs_f64());
                    self.settle_success(total);
                    for (_, reply) in waiting {
                        let _ = reply.send(Ok(()));
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(metric::WRITE_ERRORS).increment(1);
                    if !self.shared.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "ledger commit failed; holding records and retrying");
                    }
                    self.shared.set_error(e.to_string());
                    if tries >= COMMIT_TRIES {
                        break e;
                    }
                    std::thread::sleep(pause);
                    pause *= 2;
                }
            }
        };
        let failed = LedgerError::CommitFailed {
            tries,
            message: error.to_string(),
        };
        self.refuse(waiting, &failed);
        if self.unsettled.is_some() {
            // Not reached (nothing newer is tried while a group is unsettled); kept safe.
            self.shared.hold_again(held);
        } else if !held.is_empty() {
            let records = self.shared.bound(held);
            self.unsettled = Some(Unsettled { id, records });
        }
        self.idle_retry = (self.idle_retry * 2).min(MAX_IDLE_RETRY);
        Err(failed)
    }

    /// One try: the records the detail level keeps as rows, and every record in the rollups.
    fn write_group(
        &mut self,
        id: &GroupId,
        (held, waiting): (&[UsageRecord], &[(UsageRecord, Reply)]),
    ) -> Result<(), LedgerError> {
        let records: Vec<&UsageRecord> =
            held.iter().chain(waiting.iter().map(|(r, _)| r)).collect();
        let mut fold = rollup::Fold::default();
        for record in &records {
            fold.add(record, &mut self.scratch);
        }
        if self.detail == Detail::All {
            self.sink.write_group(id, &records, fold)
        } else {
            let detail = self.detail;
            let kept: Vec<&UsageRecord> =
                records.into_iter().filter(|r| keeps(detail, r)).collect();
            self.sink.write_group(id, &kept, fold)
        }
    }

    fn settle_success(&mut self, total: u64) {
        self.shared.committed.fetch_add(total, Ordering::Relaxed);
        self.shared.pending.fetch_sub(total, Ordering::Relaxed);
        metrics::counter!(metric::RECORDS).increment(total);
        if self.shared.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("ledger commits succeed again");
        }
        self.idle_retry = GROUP_WINDOW;
    }

    /// Deletes chunk by chunk, committing what arrived on the channel between two chunks so
    /// that a long purge holds no record back.
    fn purge(&mut self, cutoffs: Cutoffs) -> Result<Purged, LedgerError> {
        let mut purged = Purged::default();
        // Rollups are counted once, by the minute tier's rows; the hour tier's go alongside.
        let mut other_rows = 0;
        let groups_cutoff = cutoffs
            .records_ms
            .or(cutoffs.rollups_ms)
            .map(|_| crate::metering::clock::now_ms().saturating_sub(GROUP_ID_RETENTION_MS));
        let steps = [
            (
                cutoffs.records_ms,
                PurgeTarget::Records,
                &mut purged.records,
            ),
            (
                cutoffs.rollups_ms,
                PurgeTarget::MinuteRollups,
                &mut purged.rollups,
            ),
            (
                cutoffs.rollups_ms,
                PurgeTarget::HourRollups,
                &mut other_rows,
            ),
        ];
        for (cutoff, target, total) in steps {
            let Some(cutoff_ms) = cutoff else { continue };
            self.purge_target(target, cutoff_ms, total)?;
        }
        if let Some(cutoff_ms) = groups_cutoff {
            self.purge_target(PurgeTarget::Groups, cutoff_ms, &mut other_rows)?;
        }
        Ok(purged)
    }

    fn purge_target(
        &mut self,
        target: PurgeTarget,
        cutoff_ms: i64,
        total: &mut u64,
    ) -> Result<(), LedgerError> {
        loop {
            let n = self.sink.purge_chunk(target, cutoff_ms, PURGE_CHUNK)?;
            *total += n as u64;
            if n < PURGE_CHUNK {
                return Ok(());
            }
            self.commit_arrived();
        }
    }

    /// Commits the records already on the channel, up to a group's worth, without waiting for
    /// more; the first other command stops it and waits in `deferred`.
    fn commit_arrived(&mut self) {
        if self.unsettled.is_some() {
            // The database is failing; what arrived waits on the channel for the next group.
            return;
        }
        let mut group = Group::new();
        while self.deferred.is_none() && group.held.len() + group.waiting.len() < GROUP_RECORDS {
            match self.rx.try_recv() {
                Ok(cmd @ Command::Record { .. }) => {
                    absorb(cmd, &mut group);
                }
                Ok(other) => self.deferred = Some(other),
                Err(_) => break,
            }
        }
        // A failure holds the records for the next group, as for any other.
        let _ = self.commit(group.held, group.waiting);
    }
}

/// Adds a command to the group; true when it closes the group.
fn absorb(cmd: Command, group: &mut Group) -> bool {
    match cmd {
        Command::Record {
            record,
            reply: None,
        } => group.held.push(*record),
        Command::Record {
            record,
            reply: Some(reply),
        } => group.waiting.push((*record, reply)),
        Command::Flush(reply) => {
            group.after = After::Flush(reply);
            return true;
        }
        Command::Purge { cutoffs, reply } => {
            group.after = After::Purge { cutoffs, reply };
            return true;
        }
        #[cfg(test)]
        Command::Exec(f) => {
            group.after = After::Exec(f);
            return true;
        }
    }
    false
}

/// Whether `detail` keeps a per-request row of the record: `misses` leaves out answers from
/// the cache (hits and coalesced), the bulk of a busy gateway's records.
pub(super) fn keeps(detail: Detail, r: &UsageRecord) -> bool {
    match detail {
        Detail::All => true,
        Detail::Misses => !matches!(r.cache.as_str(), "hit" | "coalesced"),
        Detail::None => false,
    }
}
