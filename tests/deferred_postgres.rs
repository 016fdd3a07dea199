//! Deferred jobs on the fleet's PostgreSQL ledger (a real server started here): two gateways
//! on one ledger see the same job; one of them is killed with SIGKILL mid-job, and the other
//! finishes it, every row answered and billed exactly once.

mod common;

use common::postgres::Postgres;
use hyper::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn config(url: &str) -> String {
    format!(
        r#"
[ledger]
url = "{url}"

[deferred]
batch_rows = 4

[[models]]
name = "slow"
path = "models/slow/1/model.onnx"
max_batch_size = 0
cache = false
price_per_hour = 3.6
"#
    )
}

async fn job(client: &common::Client, id: &str) -> Value {
    let reply = client.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json());
    reply.json()
}

#[test]
fn a_job_on_the_fleet_ledger_survives_the_replica_that_ran_it() {
    let postgres = Postgres::start();
    let config = config(&postgres.url());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let total = 500u64;
    let requests: Vec<Value> = (0..total)
        .map(|i| {
            json!({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32",
            "data": [vec![(i % 11) as f32; 256]]}]})
        })
        .collect();
    let first = common::spawn(&config);
    let second = common::spawn(&config);
    let id = runtime.block_on(async {
        let submitted = first
            .post_json(
                "/v1/batches",
                &json!({"model": "slow", "requests": requests}),
            )
            .await;
        assert_eq!(
            submitted.status,
            StatusCode::ACCEPTED,
            "{}",
            submitted.json()
        );
        let id = submitted.json()["id"].as_str().unwrap().to_string();
        // The other replica reads the same job.
        assert_eq!(job(&second, &id).await["total"], total);
        let deadline = Instant::now() + Duration::from_secs(60);
        while job(&first, &id).await["completed"].as_u64().unwrap() < 40 {
            assert!(Instant::now() < deadline, "the job does not progress");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        id
    });
    drop(first);
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let done = loop {
            let now = job(&second, &id).await;
            if now["status"] == "completed" {
                break now;
            }
            assert!(Instant::now() < deadline, "not finished: {now}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(done["completed"], total);
        let results = second.get(&format!("/v1/batches/{id}/results")).await;
        let indices: Vec<u64> = String::from_utf8_lossy(&results.body)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["index"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            indices,
            (0..total).collect::<Vec<_>>(),
            "every row once, in order"
        );
        // Billed once each across both replicas: the fleet's ledger counts as many requests
        // as rows, and their cost is the job's.
        let costs = second.get("/v1/costs?group_by=tenant").await.json();
        let row = costs["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"]["tenant"] == "anonymous")
            .cloned()
            .unwrap();
        assert_eq!(row["requests"], total);
        let cost = done["cost_usd"].as_f64().unwrap();
        assert!(cost > 0.0);
        assert!((row["cost_usd"].as_f64().unwrap() - cost).abs() <= cost * 1e-9);
    });
}
