//! The dynamic batcher with the real model: concurrent single rows share batches and each gets
//! its own answer; deadlines answer 504 without running; a flood beyond the queue gets fast
//! 429s while admitted requests still succeed; a closed loop that never fills a batch waits
//! the delay only with the fixed wait.

mod common;

use hyper::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[cache]
enabled = false

[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 64
max_queue_delay_us = 5000

# The same model run one request at a time: the reference answers.
[[models]]
name = "digits_direct"
path = "models/digits/1/model.onnx"
max_batch_size = 0

# A closed loop of eight never fills these batches: the two waits side by side.
[[models]]
name = "digits_adaptive"
path = "models/digits/1/model.onnx"
max_batch_size = 64
max_queue_delay_us = 20000
batch_wait = "adaptive"

[[models]]
name = "digits_fixed"
path = "models/digits/1/model.onnx"
max_batch_size = 64
max_queue_delay_us = 20000
batch_wait = "fixed"

# Deliberately slow (milliseconds per row), so it always runs on its instance thread and a
# flood outpaces it. (A model as fast as digits runs on the runtime once measured and can drain
# a short queue as fast as HTTP fills it.)
[[models]]
name = "slow_tight"
path = "models/slow/1/model.onnx"
max_batch_size = 2
max_queue_delay_us = 1000000
max_queue_size = 4
"#;

/// One row of the slow model's 256-float input.
fn slow_body(seed: usize) -> serde_json::Value {
    let row: Vec<f32> = (0..256)
        .map(|i| ((i * 7 + seed) % 13) as f32 / 13.0)
        .collect();
    json!({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": [row]}]})
}

/// 64 distinct rows: the bundled test rows, each also shifted a little.
fn rows() -> Vec<Vec<f32>> {
    let (base, _) = common::digits_rows();
    (0..64)
        .map(|i| {
            base[i % base.len()]
                .iter()
                .map(|v| v + (i / base.len()) as f32 * 0.5)
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_single_rows_share_batches_and_each_gets_its_own_answer() {
    let gateway = Arc::new(common::start(CONFIG).await);
    let rows = rows();
    let mut expected = Vec::new();
    for row in &rows {
        let reply = gateway
            .infer(
                "digits_direct",
                &common::digits_body(std::slice::from_ref(row)),
            )
            .await;
        assert_eq!(reply.header("x-tollgate-batch-size"), "1");
        expected.push(reply.json()["outputs"].clone());
    }
    let tasks: Vec<_> = rows
        .iter()
        .cloned()
        .map(|row| {
            let gateway = gateway.clone();
            tokio::spawn(async move { gateway.infer("digits", &common::digits_body(&[row])).await })
        })
        .collect();
    let mut largest_batch = 0;
    for (index, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        let outputs = reply.json()["outputs"].clone();
        assert_eq!(
            outputs[0], expected[index][0],
            "row {index}: label differs from its direct run"
        );
        let (got, want) = (&outputs[1]["data"], &expected[index][1]["data"]);
        for (g, w) in got.as_array().unwrap().iter().zip(want.as_array().unwrap()) {
            assert!(
                (g.as_f64().unwrap() - w.as_f64().unwrap()).abs() <= 1e-5,
                "row {index}: {g} vs {w}"
            );
        }
        let batch: usize = reply.header("x-tollgate-batch-size").parse().unwrap();
        assert_eq!(reply.json()["parameters"]["batch_size"], batch);
        largest_batch = largest_batch.max(batch);
    }
    assert!(
        largest_batch > 1,
        "64 concurrent requests never shared a batch"
    );
    let executions = gateway
        .metric("tollgate_executions_total", &["model=\"digits\""])
        .await;
    assert!(executions < 64.0, "{executions} executions for 64 requests");
    assert!(
        gateway
            .metric("tollgate_batch_size_count", &["model=\"digits\""])
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_microsecond_timeout_under_load_is_a_504_without_running() {
    let gateway = Arc::new(common::start(CONFIG).await);
    let rows = rows();
    let load: Vec<_> = rows[..16]
        .iter()
        .cloned()
        .map(|row| {
            let gateway = gateway.clone();
            tokio::spawn(async move { gateway.infer("digits", &common::digits_body(&[row])).await })
        })
        .collect();
    let mut hurried = common::digits_body(&rows[20..21]);
    hurried["parameters"] = json!({"timeout": 1});
    let reply = gateway.infer("digits", &hurried).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("timed out"), "{error}");
    for task in load {
        assert_eq!(task.await.unwrap().status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_beyond_the_queue_gets_fast_429s_while_admitted_requests_succeed() {
    let gateway = Arc::new(common::start(CONFIG).await);
    let tasks: Vec<_> = (0..64)
        .map(|seed| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let reply = gateway.infer("slow_tight", &slow_body(seed)).await;
                (reply, started.elapsed())
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let (reply, took) = task.await.unwrap();
        match reply.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert_eq!(reply.header("retry-after"), "1");
                assert!(reply.json()["error"]
                    .as_str()
                    .unwrap()
                    .contains("max_queue_size"));
                // Refused at the door, not after sitting out the one-second queue delay.
                assert!(took < Duration::from_secs(1), "a 429 took {took:?}");
            }
            other => panic!("unexpected {other}: {:?}", reply.body),
        }
    }
    assert!(refused > 0, "nothing was refused");
    assert!(ok >= 4, "only {ok} admitted requests succeeded");
    assert!(
        gateway
            .metric("tollgate_rejections_total", &["reason=\"queue_full\""])
            .await
            >= refused as f64
    );
}

/// Median latency of eight clients that each send the next request once answered.
async fn closed_loop_median(gateway: &Arc<common::Gateway>, model: &'static str) -> Duration {
    let rows = rows();
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let gateway = gateway.clone();
            let rows = rows.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for round in 0..25 {
                    let body =
                        common::digits_body(&[rows[(client * 25 + round) % rows.len()].clone()]);
                    let sent = Instant::now();
                    let reply = gateway.infer(model, &body).await;
                    latencies.push(sent.elapsed());
                    assert_eq!(reply.status, StatusCode::OK, "{model}");
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.unwrap());
    }
    latencies.sort();
    latencies[latencies.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_that_never_fills_a_batch_waits_the_delay_only_with_the_fixed_wait() {
    let gateway = Arc::new(common::start(CONFIG).await);
    let adaptive = closed_loop_median(&gateway, "digits_adaptive").await;
    let fixed = closed_loop_median(&gateway, "digits_fixed").await;
    assert!(
        adaptive < Duration::from_millis(5),
        "adaptive median {adaptive:?}"
    );
    assert!(fixed >= Duration::from_millis(19), "fixed median {fixed:?}");
    // The adaptive batches still hold several callers' rows.
    let rows = gateway
        .metric(
            "tollgate_inference_rows_total",
            &["model=\"digits_adaptive\""],
        )
        .await;
    let runs = gateway
        .metric("tollgate_executions_total", &["model=\"digits_adaptive\""])
        .await;
    assert_eq!(rows, 200.0);
    assert!(rows / runs >= 2.0, "{rows} rows in {runs} runs");
}
