//! Deferred jobs through the real HTTP API: submitting, waiting, and checking that a finished
//! job answered every row once and billed each once.

use super::Client;
use hyper::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Rows of the bundled slow model, `distinct` different ones in turn.
pub fn slow_rows(total: u64, distinct: u64) -> Vec<Value> {
    (0..total)
        .map(|i| {
            json!({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32",
                "data": [vec![(i % distinct) as f32 / distinct as f32; 256]]}]})
        })
        .collect()
}

/// Submits a job and returns its id.
pub async fn submit(client: &Client, model: &str, requests: Vec<Value>) -> String {
    let body = json!({"model": model, "requests": requests});
    let submitted = client.post_json("/v1/batches", &body).await;
    assert_eq!(
        submitted.status,
        StatusCode::ACCEPTED,
        "{}",
        submitted.json()
    );
    submitted.json()["id"].as_str().unwrap().to_string()
}

pub async fn status(client: &Client, id: &str) -> Value {
    let job = client.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(job.status, StatusCode::OK, "{}", job.json());
    job.json()
}

/// Polls the job until `done` says so (two minutes at most).
pub async fn wait_for(client: &Client, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = status(client, id).await;
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job not done in time: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn lines(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

/// A completed job of `total` rows, all the anonymous tenant's: its results hold each row once
/// in input order, and the ledger counts as many requests as rows, at the job's cost.
pub async fn assert_answered_and_billed_once(client: &Client, id: &str, total: u64) {
    let job = wait_for(client, id, |job| job["status"] == "completed").await;
    assert_eq!(job["completed"], total);
    let answers = lines(&client.get(&format!("/v1/batches/{id}/results")).await.body);
    let indices: Vec<u64> = answers
        .iter()
        .map(|a| a["index"].as_u64().unwrap())
        .collect();
    assert_eq!(
        indices,
        (0..total).collect::<Vec<_>>(),
        "every row once, in order"
    );
    let costs = client.get("/v1/costs?group_by=tenant").await.json();
    let row = costs["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"]["tenant"] == "anonymous")
        .cloned()
        .unwrap();
    assert_eq!(row["requests"], total, "each row billed once");
    let cost = job["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0);
    assert!((row["cost_usd"].as_f64().unwrap() - cost).abs() <= cost * 1e-9);
}
