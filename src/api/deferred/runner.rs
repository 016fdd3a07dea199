//! Runs deferred jobs' rows on idle capacity. A feeder keeps a small window of each model's
//! rows (`deferred.batch_rows` per instance) submitted in the deferred lane, below every
//! real-time lane: the batcher gives an instance to a deferred batch only when no real-time
//! request is queued, so the rows fill the gaps and a real-time request waits for one small
//! batch at most. Rows start only inside the off-peak windows. A committer stores what
//! finished, answers with their usage records, in groups; a row refused for a passing reason
//! (the server full, a budget spent, an upstream down) stays queued and runs later.

use crate::api::http::infer::{self, OutputEncoding};
use crate::error::ErrorClass;
use crate::gateway::{Error, Gateway};
use crate::metering::clock;
use crate::metering::ledger::jobs::{
    Finished, JobStore, Queued, CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING,
};
use crate::metering::record::UsageRecord;
use crate::shutdown::Shutdown;
use crate::telemetry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// How long to wait for work when there is none, outside the windows, or after a row was
/// refused for a passing reason.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Rows read from the store at once: a few windows' worth, so that what was read before a
/// change (a cancel on another replica, the end of a window) is soon read again.
const PICK: usize = 128;
/// Most rows committed in one transaction.
const COMMIT_ROWS: usize = 256;
/// How often the job gauges are brought up to date.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often finished jobs past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// A row by job and index.
type Key = (String, u64);

/// Rows handed out and not yet committed (or given back), which a read of the store must
/// skip; and when the feeder may go on after a passing refusal.
#[derive(Default)]
struct Taken {
    rows: HashSet<Key>,
    pause: bool,
}

/// Starts the runner, if the gateway keeps jobs.
pub fn start(gateway: Arc<Gateway>, shutdown: Shutdown) {
    let Some(store) = gateway.metering.jobs.clone() else {
        return;
    };
    let taken = Arc::new(Mutex::new(Taken::default()));
    let (done, finished) = mpsc::unbounded_channel();
    tokio::spawn(committer(
        gateway.clone(),
        store.clone(),
        taken.clone(),
        finished,
    ));
    tokio::spawn(async move {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut feeder = Feeder {
            gateway,
            store,
            taken,
            done,
            windows: HashMap::new(),
        };
        let mut last_purge = None::<tokio::time::Instant>;
        let mut last_report = None::<tokio::time::Instant>;
        loop {
            if last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                purge(&feeder.gateway, &feeder.store).await;
                last_purge = Some(tokio::time::Instant::now());
            }
            if last_report.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                report(&feeder.store).await;
                last_report = Some(tokio::time::Instant::now());
            }
            let pause = tokio::select! {
                pause = feeder.feed() => pause,
                _ = &mut stop => return,
            };
            if let Some(pause) = pause {
                tokio::select! {
                    _ = feeder.store.added.notified() => {}
                    _ = tokio::time::sleep(pause) => {}
                    _ = &mut stop => return,
                }
            }
        }
    });
}

/// Tells the runner that rows were added.
pub fn wake(gateway: &Gateway) {
    if let Some(store) = &gateway.metering.jobs {
        store.added.notify_one();
    }
}

struct Feeder {
    gateway: Arc<Gateway>,
    store: Arc<JobStore>,
    taken: Arc<Mutex<Taken>>,
    done: mpsc::UnboundedSender<(Key, Option<Finished>)>,
    /// Rows in flight per model, at most `batch_rows` per instance.
    windows: HashMap<String, Arc<Semaphore>>,
}

impl Feeder {
    /// Hands out the rows read in one go; returns how long to pause before the next read
    /// (`None`: read again at once).
    async fn feed(&mut self) -> Option<Duration> {
        let config = &self.gateway.config.deferred;
        if !config.open_at(clock::now_ms()) {
            return Some(IDLE_POLL);
        }
        if std::mem::take(&mut self.lock().pause) {
            return Some(IDLE_POLL);
        }
        let store = self.store.clone();
        let queued = match tokio::task::spawn_blocking(move || store.queued(PICK)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(error)) => {
                tracing::warn!(%error, "deferred jobs: cannot read the queued rows");
                return Some(IDLE_POLL);
            }
            Err(_) => return Some(IDLE_POLL),
        };
        let fresh: Vec<Queued> = {
            let taken = self.lock();
            queued
                .into_iter()
                .filter(|row| !taken.rows.contains(&(row.job.clone(), row.index)))
                .collect()
        };
        if fresh.is_empty() {
            // Everything queued is in flight (or nothing is): wait for the committer or a job.
            return Some(if self.lock().rows.is_empty() {
                IDLE_POLL
            } else {
                Duration::from_millis(5)
            });
        }
        for row in fresh {
            if !self.gateway.config.deferred.open_at(clock::now_ms()) || self.lock().pause {
                break;
            }
            if self.store.was_cancelled(&row.job) {
                continue;
            }
            let window = self.window(&row.model, row.version.as_deref());
            let Ok(permit) = window.acquire_owned().await else {
                break;
            };
            // It may have been cancelled while the window was full.
            if self.store.was_cancelled(&row.job) {
                continue;
            }
            let key = (row.job.clone(), row.index);
            self.lock().rows.insert(key.clone());
            let (gateway, done) = (self.gateway.clone(), self.done.clone());
            tokio::spawn(async move {
                let outcome = run_row(&gateway, row).await;
                drop(permit);
                let _ = done.send((key, outcome));
            });
        }
        None
    }

    fn window(&mut self, model: &str, version: Option<&str>) -> Arc<Semaphore> {
        let per_instance = self.gateway.config.deferred.batch_rows;
        let instances = self
            .gateway
            .model(model, version)
            .map_or(1, |m| m.config.instances.max(1));
        self.windows
            .entry(model.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(per_instance * instances)))
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Taken> {
        self.taken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Commits finished rows in groups, as they come; gives back the rows refused for a passing
/// reason (they stay queued) and makes the feeder pause.
async fn committer(
    gateway: Arc<Gateway>,
    store: Arc<JobStore>,
    taken: Arc<Mutex<Taken>>,
    mut finished: mpsc::UnboundedReceiver<(Key, Option<Finished>)>,
) {
    while let Some(first) = finished.recv().await {
        let mut group = vec![first];
        while group.len() < COMMIT_ROWS {
            match finished.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let keys: Vec<Key> = group.iter().map(|(key, _)| key.clone()).collect();
        let refused = group.iter().any(|(_, outcome)| outcome.is_none());
        let rows: Vec<Finished> = group
            .into_iter()
            .filter_map(|(_, outcome)| outcome)
            .collect();
        if !rows.is_empty() {
            commit(&gateway, &store, rows).await;
        }
        // Committed (or, on a failed commit, still queued in the store): either way no longer
        // in flight, so the next read sees the store's word on them.
        let mut taken = taken.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            taken.rows.remove(&key);
        }
        taken.pause |= refused;
    }
}

/// Runs one row; `None` when it was refused for a passing reason and stays queued.
async fn run_row(gateway: &Gateway, mut row: Queued) -> Option<Finished> {
    let identities = gateway.metering.identities();
    let Some(caller) = identities.caller_by_name(&row.tenant) else {
        let error = format!("tenant `{}` is no longer configured", row.tenant);
        return Some(failed(row, error, None));
    };
    drop(identities);
    let body = bytes::Bytes::from(std::mem::take(&mut row.request));
    let decoded = infer::decode(&row.model, row.version.as_deref(), &body, None);
    let request = match decoded {
        Ok((request, _)) => request,
        Err(error) => return Some(failed(row, error.to_string(), None)),
    };
    let (result, record) = gateway.infer_deferred(request, caller).await;
    match result {
        Ok(response) => {
            let record = record?;
            let (body, binary) = infer::encode(&response, &OutputEncoding::default());
            let answer = match (binary, std::str::from_utf8(&body)) {
                (None, Ok(text)) => with_index(row.index, text),
                _ => {
                    let error = "an output cannot be written as JSON (bytes that are not UTF-8)";
                    return Some(failed(row, error.into(), Some(record)));
                }
            };
            Some(Finished {
                job: row.job,
                index: row.index,
                ok: true,
                answer,
                record: Some(record),
            })
        }
        Err(error) if passing(&error) => None,
        Err(error) => Some(failed(row, error.to_string(), record)),
    }
}

/// Errors that say something about the request, not about now: the row fails for good.
fn passing(error: &Error) -> bool {
    !matches!(
        error.class(),
        ErrorClass::BadRequest | ErrorClass::NotFound | ErrorClass::TooLarge
    )
}

/// A row that failed for good; `record` is its usage record when it was accepted.
fn failed(row: Queued, error: String, record: Option<UsageRecord>) -> Finished {
    let answer = serde_json::json!({"index": row.index, "error": error}).to_string();
    Finished {
        job: row.job,
        index: row.index,
        ok: false,
        answer,
        record,
    }
}

/// `{"index": i, ...}` from a response object's text.
fn with_index(index: u64, response: &str) -> String {
    let rest = response.strip_prefix('{').unwrap_or(response);
    format!("{{\"index\":{index},{rest}")
}

async fn commit(gateway: &Gateway, store: &Arc<JobStore>, finished: Vec<Finished>) {
    let store = store.clone();
    let now = clock::now_ms();
    let done = tokio::task::spawn_blocking(move || store.finish(finished, now)).await;
    match done {
        Ok(Ok(records)) => {
            for record in &records {
                gateway.metering.account(record);
            }
        }
        Ok(Err(error)) => {
            // Nothing was committed: the rows are still queued and run again.
            tracing::warn!(%error, "deferred jobs: answers not stored; the rows will run again");
        }
        Err(_) => {}
    }
}

async fn report(store: &Arc<JobStore>) {
    let store = store.clone();
    let Ok(Ok(counts)) = tokio::task::spawn_blocking(move || store.counts()).await else {
        return;
    };
    for status in [QUEUED, RUNNING, COMPLETED, CANCELLED] {
        let jobs = counts
            .jobs
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        metrics::gauge!(telemetry::DEFERRED_JOBS, "status" => status).set(jobs as f64);
    }
    for (state, rows) in [
        (QUEUED, counts.rows_queued),
        (COMPLETED, counts.rows_completed),
        (FAILED, counts.rows_failed),
    ] {
        metrics::gauge!(telemetry::DEFERRED_ROWS, "state" => state).set(rows as f64);
    }
}

async fn purge(gateway: &Gateway, store: &Arc<JobStore>) {
    let hours = gateway.config.deferred.retention_hours;
    let cutoff = clock::now_ms() - (hours as i64).saturating_mul(3_600_000);
    let store = store.clone();
    if let Ok(Err(error)) =
        tokio::task::spawn_blocking(move || store.purge_finished_before(cutoff)).await
    {
        tracing::warn!(%error, "deferred jobs: finished jobs not purged");
    }
}
