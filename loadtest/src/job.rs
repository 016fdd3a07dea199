//! `--job N`: the workload's requests as one deferred job (`POST /v1/batches`), waited for
//! until it finishes, with what it took and cost.

use crate::protocol::http::HyperClient;
use crate::rng::Rng;
use crate::tensor::to_json;
use crate::workload::{Picker, Workload};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How often the job's status is read while it runs.
const POLL: Duration = Duration::from_millis(200);

pub struct JobPlan<'a> {
    pub target: &'a str,
    pub model: &'a str,
    pub version: Option<&'a str>,
    pub requests: u64,
    pub headers: &'a HeaderMap,
    /// The longest the job may take before the run gives up on it.
    pub limit: Duration,
    pub seed: u64,
}

/// Submits the job, waits for it and prints its figures; returns whether most rows succeeded.
pub async fn run(
    client: &HyperClient,
    plan: JobPlan<'_>,
    work: &Workload,
    picker: &Picker,
) -> Result<bool> {
    let mut rng = Rng::new(plan.seed);
    let mut requests = Vec::with_capacity(plan.requests as usize);
    for _ in 0..plan.requests {
        let set = &work.requests[picker.pick(&mut rng)];
        let inputs = set
            .iter()
            .map(|t| {
                Ok(
                    json!({"name": t.name, "shape": t.shape, "datatype": t.dtype.name(),
                          "data": to_json(t.dtype, &t.values)?}),
                )
            })
            .collect::<Result<Vec<Value>>>()?;
        requests.push(json!({ "inputs": inputs }));
    }
    let body = json!({"model": plan.model, "version": plan.version, "requests": requests});
    let started = Instant::now();
    let submitted = call(client, &plan, Method::POST, "/v1/batches", Some(body)).await?;
    let Some(id) = submitted["id"].as_str().map(str::to_string) else {
        bail!("the server did not accept the job: {submitted}");
    };
    eprintln!("job {id}: {} requests submitted", plan.requests);
    let job = loop {
        let job = call(
            client,
            &plan,
            Method::GET,
            &format!("/v1/batches/{id}"),
            None,
        )
        .await?;
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            break job;
        }
        if started.elapsed() > plan.limit {
            bail!("job {id} not finished after {:?}: {job}", plan.limit);
        }
        tokio::time::sleep(POLL).await;
    };
    let took = started.elapsed().as_secs_f64();
    let completed = job["completed"].as_u64().unwrap_or(0);
    let failed = job["failed"].as_u64().unwrap_or(0);
    println!("job {id}: {}", job["status"].as_str().unwrap_or("?"));
    println!(
        "  rows:       {completed} completed, {failed} failed of {}",
        plan.requests
    );
    println!(
        "  took:       {took:.2} s ({:.1} rows/s)",
        completed as f64 / took.max(1e-9)
    );
    println!(
        "  cost:       {} (saved by the cache: {})",
        job["cost_usd"], job["saved_usd"]
    );
    Ok(completed >= failed && job["status"] == "completed")
}

async fn call(
    client: &HyperClient,
    plan: &JobPlan<'_>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", plan.target))
        .header("content-type", "application/json");
    for (name, value) in plan.headers {
        request = request.header(name, value);
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let reply = client
        .request(
            request
                .body(Full::new(body))
                .context("building the request")?,
        )
        .await
        .with_context(|| format!("{path}: no answer"))?;
    let status = reply.status();
    let bytes = reply.into_body().collect().await?.to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{path}: {status} {value}");
    }
    Ok(value)
}
