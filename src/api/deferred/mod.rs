//! Deferred jobs (`/v1/batches`): a job's requests are checked and stored at once, then run by
//! `runner` on idle capacity. This is a third front end: it reads requests from the job store
//! instead of a socket and hands them to the gateway like the others. The store blocks (SQLite,
//! or the PostgreSQL ledger's own runtime): the HTTP handlers call in here from
//! `block_in_place`.

pub mod runner;

use crate::api::http::infer;
use crate::gateway::{Error, Gateway};
use crate::metering::clock;
use crate::metering::identity::Caller;
use crate::metering::ledger::jobs::{Job, JobStore, QUEUED};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission<'a> {
    model: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(borrow)]
    requests: Vec<&'a RawValue>,
}

/// The job store, or why there is none.
pub fn store(gateway: &Gateway) -> Result<&Arc<JobStore>, Error> {
    gateway.metering.jobs.as_ref().ok_or_else(|| {
        Error::LedgerUnavailable(
            "deferred jobs are off on this replica: its PostgreSQL ledger (ledger.url) was \
             unreachable when it started"
                .into(),
        )
    })
}

/// Checks every request of a job as the model would and stores the job: all of it, or (a
/// request that would be refused, a limit reached) nothing.
pub fn submit(gateway: &Gateway, caller: &Caller, body: &[u8]) -> Result<Job, Error> {
    let store = store(gateway)?;
    let submission: Submission<'_> = serde_json::from_slice(body).map_err(|e| {
        Error::Decode(format!(
            "body: {e} (want {{\"model\", \"requests\": [...]}})"
        ))
    })?;
    let limits = &gateway.config.deferred;
    let total = submission.requests.len();
    if total == 0 {
        return Err(Error::Decode(
            "requests: a job needs at least one request".into(),
        ));
    }
    if total > limits.max_requests_per_job {
        return Err(Error::Decode(format!(
            "requests: {total} requests; a job holds at most {} (deferred.max_requests_per_job)",
            limits.max_requests_per_job
        )));
    }
    let version = submission.version.as_deref().filter(|v| !v.is_empty());
    let model = gateway.model(&submission.model, version)?;
    for (index, request) in submission.requests.iter().enumerate() {
        let body = bytes::Bytes::copy_from_slice(request.get().as_bytes());
        let checked = infer::decode(&submission.model, version, &body, None)
            .and_then(|(request, _)| crate::model::prepare(&model, request).map_err(Error::from));
        if let Err(error) = checked {
            return Err(Error::Decode(format!("requests[{index}]: {error}")));
        }
    }
    let tenant = caller.tenant.name.to_string();
    let holding = store
        .holding(&tenant)
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?;
    if holding.jobs as usize >= limits.max_jobs_per_tenant {
        return Err(Error::JobLimit(format!(
            "tenant `{tenant}` has {} unfinished jobs, its limit (deferred.max_jobs_per_tenant); \
             retry when one finishes",
            holding.jobs
        )));
    }
    if holding.rows as usize + total > limits.max_rows_per_tenant {
        return Err(Error::JobLimit(format!(
            "tenant `{tenant}` has {} rows waiting; {total} more would pass its limit of {} \
             (deferred.max_rows_per_tenant)",
            holding.rows, limits.max_rows_per_tenant
        )));
    }
    let job = Job {
        id: job_id(),
        tenant,
        model: model.name.clone(),
        version: version.map(str::to_string),
        status: QUEUED.into(),
        total: total as u64,
        completed: 0,
        failed: 0,
        cost_usd: 0.0,
        saved_usd: 0.0,
        created_ms: clock::now_ms(),
        finished_ms: None,
    };
    let requests: Vec<&[u8]> = submission
        .requests
        .iter()
        .map(|r| r.get().as_bytes())
        .collect();
    store
        .create(&job, &requests)
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?;
    runner::wake(gateway);
    Ok(job)
}

/// A job, if `caller` may see it (its tenant's, or any for the admin).
pub fn find(gateway: &Gateway, caller: &Caller, id: &str) -> Result<Job, Error> {
    let job = store(gateway)?
        .get(id)
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?;
    match job {
        Some(job) if caller.admin || job.tenant == caller.tenant.name.as_str() => Ok(job),
        // Another tenant's job is as unknown as a job that does not exist.
        _ => Err(Error::NotFound(format!("no batch job `{id}`"))),
    }
}

pub fn view(job: &Job) -> Value {
    json!({
        "id": job.id,
        "model": job.model,
        "version": job.version,
        "tenant": job.tenant,
        "status": job.status,
        "total": job.total,
        "completed": job.completed,
        "failed": job.failed,
        "cost_usd": job.cost_usd,
        "saved_usd": job.saved_usd,
        "created": clock::iso8601(job.created_ms),
        "finished": job.finished_ms.map(clock::iso8601),
    })
}

/// The finished rows' answers as NDJSON, in input order.
pub fn results(gateway: &Gateway, job: &Job) -> Result<Vec<u8>, Error> {
    let answers = store(gateway)?
        .answers(&job.id)
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?;
    let mut body = Vec::with_capacity(answers.iter().map(|(_, a)| a.len() + 1).sum());
    for (_, answer) in answers {
        body.extend_from_slice(answer.as_bytes());
        body.push(b'\n');
    }
    Ok(body)
}

pub fn cancel(gateway: &Gateway, job: &Job) -> Result<Job, Error> {
    let store = store(gateway)?;
    store
        .cancel(&job.id, clock::now_ms())
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?;
    store
        .get(&job.id)
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?
        .ok_or_else(|| Error::NotFound(format!("no batch job `{}`", job.id)))
}

/// 128 random bits, from the standard library's randomly seeded hasher and the clock.
fn job_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = |salt: u64| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.write_i64(clock::now_ms());
        hasher.finish()
    };
    format!("batch_{:016x}{:016x}", half(1), half(2))
}
