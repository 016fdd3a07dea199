//! Runs deferred jobs' rows on idle capacity: the oldest job's next rows, a small batch per
//! instance at a time, only while its model has no real-time request queued and inside the
//! off-peak windows. Each round's answers and usage records are committed together; a row
//! refused for a passing reason (the server full, a budget spent, an upstream down) stays
//! queued and runs later.

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
use std::sync::Arc;
use std::time::Duration;

/// How often a model with real-time requests queued is looked at again.
const BUSY_POLL: Duration = Duration::from_millis(2);
/// How long to wait for work when there is none, or after a round refused for a passing
/// reason.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often the job gauges are brought up to date.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How often finished jobs past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Starts the runner, if the gateway keeps jobs.
pub fn start(gateway: Arc<Gateway>, shutdown: Shutdown) {
    let Some(store) = gateway.metering.jobs.clone() else {
        return;
    };
    tokio::spawn(async move {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut last_purge = None::<tokio::time::Instant>;
        let mut last_report = None::<tokio::time::Instant>;
        loop {
            if last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                purge(&gateway, &store).await;
                last_purge = Some(tokio::time::Instant::now());
            }
            if last_report.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                report(&store).await;
                last_report = Some(tokio::time::Instant::now());
            }
            let pause = tokio::select! {
                pause = round(&gateway, &store) => pause,
                _ = &mut stop => return,
            };
            if let Some(pause) = pause {
                tokio::select! {
                    _ = store.added.notified() => {}
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

/// One round; returns how long to pause before the next (`None`: go on at once).
async fn round(gateway: &Gateway, store: &Arc<JobStore>) -> Option<Duration> {
    if !gateway.config.deferred.open_at(clock::now_ms()) {
        return Some(IDLE_POLL);
    }
    let window = gateway.config.deferred.batch_rows;
    let picked = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.queued(window * 16)).await
    };
    let queued = match picked {
        Ok(Ok(rows)) => rows,
        Ok(Err(error)) => {
            tracing::warn!(%error, "deferred jobs: cannot read the queued rows");
            return Some(IDLE_POLL);
        }
        Err(_) => return Some(IDLE_POLL),
    };
    let Some(first) = queued.first() else {
        return Some(IDLE_POLL);
    };
    // The first job's model takes this round: a small batch for each of its instances.
    let (model_name, version) = (first.model.clone(), first.version.clone());
    let mut instances = 1;
    if let Ok(model) = gateway.model(&model_name, version.as_deref()) {
        instances = model.config.instances.max(1);
        // Real-time requests go first: the rows wait until none is queued.
        while model.batcher.queued() > 0 {
            tokio::time::sleep(BUSY_POLL).await;
        }
    }
    let rows: Vec<Queued> = queued
        .into_iter()
        .filter(|row| row.model == model_name && row.version == version)
        .take(window * instances)
        .collect();
    let ran =
        futures_util::future::join_all(rows.into_iter().map(|row| run_row(gateway, row))).await;
    let total = ran.len();
    let finished: Vec<Finished> = ran.into_iter().flatten().collect();
    let passing = finished.len() < total;
    if !finished.is_empty() {
        commit(gateway, store, finished).await;
    }
    // Rows refused for a passing reason wait a moment rather than being retried at once.
    passing.then_some(IDLE_POLL)
}

/// Runs one row; `None` when it was refused for a passing reason and stays queued.
async fn run_row(gateway: &Gateway, row: Queued) -> Option<Finished> {
    let identities = gateway.metering.identities();
    let Some(caller) = identities.caller_by_name(&row.tenant) else {
        let error = format!("tenant `{}` is no longer configured", row.tenant);
        return Some(failed(row, error, None));
    };
    drop(identities);
    let body = bytes::Bytes::from(row.request.clone());
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
