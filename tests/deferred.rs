//! Deferred jobs with the real models and server: a 2,000-request job answered in input order
//! with the model's own answers, repeats counted as savings, priced at `deferred.price_factor`;
//! a bad request refused whole; a job outside its off-peak window waits and is cancelled; and a
//! `kill -9` mid-job, after which the restarted gateway finishes it with every row answered and
//! billed exactly once.

mod common;

use common::jobs::{lines, wait_for};

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The bundled slow model (about 3 ms a row, one at a time, no cache), deferred rows 4 at once.
const SLOW: &str = r#"
[deferred]
batch_rows = 4

[[models]]
name = "slow"
path = "models/slow/1/model.onnx"
max_batch_size = 0
cache = false
"#;

fn digits_config(price_factor: f64, extra: &str) -> String {
    format!(
        r#"
[deferred]
price_factor = {price_factor}
batch_rows = 8
{extra}

[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 32
max_queue_delay_us = 500
price_per_hour = 3.6
"#
    )
}

fn digits_request(row: &[f32]) -> Value {
    json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [row]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_job_is_answered_in_order_with_the_models_answers_at_its_price() {
    let (rows, labels) = common::digits_rows();
    let gateway = common::start(&digits_config(0.5, "")).await;
    let total = 2000;
    let requests: Vec<Value> = (0..total)
        .map(|i| digits_request(&rows[i % rows.len()]))
        .collect();
    let id = common::jobs::submit(&gateway, "digits", requests).await;
    assert_eq!(common::jobs::status(&gateway, &id).await["total"], total);

    let job = wait_for(&gateway, &id, |job| job["status"] == "completed").await;
    assert_eq!(
        (job["completed"].as_u64(), job["failed"].as_u64()),
        (Some(2000), Some(0))
    );
    let results = gateway.get(&format!("/v1/batches/{id}/results")).await;
    assert_eq!(results.status, StatusCode::OK);
    assert_eq!(results.header("content-type"), "application/x-ndjson");
    let answers = lines(&results.body);
    assert_eq!(answers.len(), total);
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer["index"], i, "input order");
        let label = answer["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "label")
            .unwrap();
        assert_eq!(label["data"][0], labels[i % rows.len()], "row {i}");
    }
    // Every input after the first few is a repeat: answered from the cache, counted as saved.
    let (cost, saved) = (
        job["cost_usd"].as_f64().unwrap(),
        job["saved_usd"].as_f64().unwrap(),
    );
    assert!(cost > 0.0 && saved > cost, "cost {cost}, saved {saved}");
    let hits = answers
        .iter()
        .filter(|a| a["parameters"]["cache"] == "hit")
        .count();
    assert!(hits >= total - rows.len() * 2, "{hits} hits");

    // The ledger bills them once each, at the job's cost.
    common::jobs::assert_answered_and_billed_once(&gateway, &id, total as u64).await;
    // The FOCUS export says which rows were deferred.
    let focus = gateway.get("/v1/costs/focus").await;
    assert_eq!(focus.status, StatusCode::OK);
    let focus = String::from_utf8_lossy(&focus.body).to_string();
    assert!(
        focus.lines().next().unwrap().ends_with(",x_Lane"),
        "{focus}"
    );
    let deferred_line = focus
        .lines()
        .find(|l| l.ends_with(",deferred"))
        .expect("a deferred row");
    assert!(
        deferred_line.contains("Deferred inference"),
        "{deferred_line}"
    );
    // A computed row costs half its share of the batch's device time (3.6 $/h = 1e-9 $/µs).
    for answer in answers
        .iter()
        .filter(|a| a["parameters"]["cache"] == "miss")
    {
        let p = &answer["parameters"];
        let share = p["compute_us"].as_f64().unwrap() * 1e-9 / p["batch_size"].as_f64().unwrap();
        let cost = p["cost_usd"].as_f64().unwrap();
        assert!((cost - 0.5 * share).abs() <= share * 1e-9, "{p}");
        assert!(
            p["batch_size"].as_u64().unwrap() <= 8,
            "deferred batches stay small: {p}"
        );
    }
    // The gauges follow the job tables (brought up to date every second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rows_done = gateway
        .metric("tollgate_deferred_rows", &["state=\"completed\""])
        .await;
    assert_eq!(rows_done, total as f64);
    let jobs_done = gateway
        .metric("tollgate_deferred_jobs", &["status=\"completed\""])
        .await;
    assert_eq!(jobs_done, 1.0);
    assert_eq!(
        gateway
            .metric("tollgate_deferred_rows", &["state=\"queued\""])
            .await,
        0.0
    );
    gateway.stop().await;

    // At a price factor of 0 the same job costs nothing.
    let free = common::start(&digits_config(0.0, "")).await;
    let requests: Vec<Value> = (0..50)
        .map(|i| digits_request(&rows[i % rows.len()]))
        .collect();
    let id = common::jobs::submit(&free, "digits", requests).await;
    let job = wait_for(&free, &id, |job| job["status"] == "completed").await;
    assert_eq!(job["completed"], 50);
    assert_eq!(job["cost_usd"].as_f64(), Some(0.0));
    free.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_one_bad_request_is_refused_whole_naming_it() {
    let (rows, _) = common::digits_rows();
    let gateway = common::start(&digits_config(0.5, "")).await;
    let mut requests: Vec<Value> = (0..5).map(|i| digits_request(&rows[i])).collect();
    let short = vec![0.0f32; 63];
    requests[3] = json!({"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32",
        "data": [short]}]});
    let cases = [
        (
            json!({"model": "digits", "requests": requests}),
            "requests[3]",
        ),
        (json!({"model": "digits", "requests": []}), "at least one"),
        (
            json!({"model": "nope", "requests": [digits_request(&rows[0])]}),
            "nope",
        ),
        (json!({"model": "digits"}), "body"),
    ];
    for (body, named) in cases {
        let refused = gateway.post_json("/v1/batches", &body).await;
        assert!(
            refused.status.is_client_error(),
            "{body}: {}",
            refused.status
        );
        let error = refused.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(named), "{error}");
    }
    let unknown = gateway.get("/v1/batches/batch_0000").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let wrong = gateway
        .send(Method::PUT, "/v1/batches", &[], bytes::Bytes::new())
        .await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outside_its_off_peak_window_waits_and_can_be_cancelled() {
    let (rows, _) = common::digits_rows();
    // A window that starts two hours from now and lasts one: not open during the test.
    let now_minute = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60
        % 1440) as u32;
    let at = |m: u32| format!("{:02}:{:02}", (m % 1440) / 60, m % 60);
    let window = format!(
        "off_peak_utc = [\"{}-{}\"]\nmax_jobs_per_tenant = 1",
        at(now_minute + 120),
        at(now_minute + 180)
    );
    let gateway = common::start(&digits_config(0.5, &window)).await;
    let requests: Vec<Value> = (0..20)
        .map(|i| digits_request(&rows[i % rows.len()]))
        .collect();
    let id = common::jobs::submit(&gateway, "digits", requests).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let job = gateway.get(&format!("/v1/batches/{id}")).await.json();
    assert_eq!(job["status"], "queued");
    assert_eq!(job["completed"], 0);

    // One unfinished job is this tenant's limit here: a second is refused until it ends.
    let one = json!({"model": "digits", "requests": [digits_request(&rows[0])]});
    let second = gateway.post_json("/v1/batches", &one).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(second.json()["error"]
        .as_str()
        .unwrap()
        .contains("deferred.max_jobs_per_tenant"));

    let cancelled = gateway
        .send(
            Method::DELETE,
            &format!("/v1/batches/{id}"),
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.json()["status"], "cancelled");
    assert!(cancelled.json()["finished"].is_string());
    let results = gateway.get(&format!("/v1/batches/{id}/results")).await;
    assert!(results.body.is_empty());
    assert_eq!(
        gateway.post_json("/v1/batches", &one).await.status,
        StatusCode::ACCEPTED
    );
    gateway.stop().await;
}

#[test]
fn a_job_killed_mid_way_finishes_after_a_restart_every_row_once() {
    let dir = common::scratch_dir();
    // About 3 ms a row, one at a time, no cache: long enough to be killed half-way.
    let config = format!(
        r#"
[ledger]
path = "{}"

[deferred]
batch_rows = 4

[[models]]
name = "slow"
path = "models/slow/1/model.onnx"
max_batch_size = 0
cache = false
price_per_hour = 3.6
"#,
        dir.join("ledger.sqlite").display()
    );
    let total = 600;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let first = common::spawn(&config);
    let id = runtime.block_on(async {
        let id = common::jobs::submit(&first, "slow", common::jobs::slow_rows(total, 17)).await;
        wait_for(&first, &id, |job| {
            job["completed"].as_u64().unwrap_or(0) >= 50
        })
        .await;
        id
    });
    // SIGKILL: no shutdown code runs.
    drop(first);
    let second = common::spawn(&config);
    runtime.block_on(async {
        let before = common::jobs::status(&second, &id).await;
        assert!(
            before["completed"].as_u64().unwrap() < total,
            "killed mid-job: {before}"
        );
        common::jobs::assert_answered_and_billed_once(&second, &id, total).await;
    });
}

/// Median of `n` sequential real-time requests, in milliseconds; `body` makes the i-th.
async fn median_ms(
    gateway: &common::Gateway,
    model: &str,
    body: impl Fn(usize) -> Value,
    n: usize,
) -> f64 {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let request = body(i);
        let started = Instant::now();
        let reply = gateway.infer(model, &request).await;
        assert_eq!(reply.status, StatusCode::OK);
        took.push(started.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    took[n / 2]
}

/// Real-time requests to `model` alone, then beside a running job of `job` rows: their
/// medians are within 2x of each other, and the job progresses meanwhile.
async fn within_twice_beside_a_job(
    gateway: &common::Gateway,
    model: &str,
    body: impl Fn(usize) -> Value + Copy,
    job: Vec<Value>,
    n: usize,
) {
    median_ms(gateway, model, body, 3).await;
    let alone = median_ms(gateway, model, body, n).await;
    let id = common::jobs::submit(gateway, model, job).await;
    let started = |job: &Value| job["completed"].as_u64().unwrap_or(0) > 2;
    let before = wait_for(gateway, &id, started).await["completed"]
        .as_u64()
        .unwrap();
    let beside = median_ms(gateway, model, body, n).await;
    let after = common::jobs::status(gateway, &id).await["completed"]
        .as_u64()
        .unwrap();
    eprintln!("{model}: median {alone:.2} ms alone, {beside:.2} ms beside the job ({before} -> {after} rows)");
    assert!(
        after > before,
        "the job progressed meanwhile ({before} -> {after})"
    );
    assert!(
        beside <= 2.0 * alone,
        "median {beside:.2} ms beside the job, {alone:.2} ms alone"
    );
    let cancelled = gateway
        .send(
            Method::DELETE,
            &format!("/v1/batches/{id}"),
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK);
}

fn slow_row(i: usize) -> Value {
    json!({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32",
        "data": [vec![0.001 * i as f32; 256]]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_time_requests_beside_a_running_job_wait_for_one_row_at_most() {
    let gateway = common::start(SLOW).await;
    let job = common::jobs::slow_rows(3000, 13);
    within_twice_beside_a_job(&gateway, "slow", slow_row, job, 40).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_their_own_jobs_and_the_admin_sees_every_job() {
    let (rows, _) = common::digits_rows();
    let hash = |key: &str| blake3::hash(key.as_bytes()).to_hex().to_string();
    let config = format!(
        r#"
[server]
admin_token_blake3 = "{}"
[auth]
required = true
[[tenants]]
name = "alpha"
api_key_blake3 = "{}"
budget_usd = 10.0
[[tenants]]
name = "beta"
api_key_blake3 = "{}"
{}"#,
        hash("root"),
        hash("alpha-key"),
        hash("beta-key"),
        digits_config(0.5, "")
    );
    let gateway = common::start(&config).await;
    let bearer = |key: &str| vec![("authorization", format!("Bearer {key}"))];
    let body = json!({"model": "digits", "requests": [digits_request(&rows[0])]});
    let anonymous = gateway.post_json("/v1/batches", &body).await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "a key is needed as for inference"
    );
    let alpha = gateway
        .send(
            Method::POST,
            "/v1/batches",
            &bearer("alpha-key"),
            bytes::Bytes::from(body.to_string()),
        )
        .await;
    assert_eq!(alpha.status, StatusCode::ACCEPTED);
    let path = format!("/v1/batches/{}", alpha.json()["id"].as_str().unwrap());
    let cases = [
        (Method::GET, "alpha-key", StatusCode::OK),
        (Method::GET, "beta-key", StatusCode::NOT_FOUND),
        (Method::GET, "root", StatusCode::OK),
        (Method::DELETE, "beta-key", StatusCode::NOT_FOUND),
    ];
    for (method, key, want) in cases {
        let got = gateway
            .send(method.clone(), &path, &bearer(key), bytes::Bytes::new())
            .await;
        assert_eq!(got.status, want, "{method} as {key}");
        if got.status == StatusCode::OK {
            assert_eq!(got.json()["tenant"], "alpha");
        }
    }
    // The job's cost counts against its tenant's budget.
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let now = gateway
            .send(Method::GET, &path, &bearer("root"), bytes::Bytes::new())
            .await
            .json();
        if now["status"] == "completed" {
            break now;
        }
        assert!(Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let budgets = gateway
        .send(
            Method::GET,
            "/v1/budgets",
            &bearer("root"),
            bytes::Bytes::new(),
        )
        .await
        .json();
    let alpha = &budgets["budgets"][0];
    assert_eq!(alpha["tenant"], "alpha");
    let cost = done["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0);
    assert!(
        (alpha["spent_usd"].as_f64().unwrap() - cost).abs() <= cost * 1e-9,
        "{budgets}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_time_alexnet_requests_beside_a_running_alexnet_job_stay_within_twice_alone() {
    // The bundled AlexNet does the full network's work (its weights are constant fills), so
    // every answer is the same: the cache is off, or every request after the first would hit.
    let gateway = common::start(
        r#"
[deferred]
batch_rows = 1

[[models]]
name = "alexnet"
path = "models/alexnet/1/model.onnx"
max_batch_size = 8
max_queue_delay_us = 500
cache = false
"#,
    )
    .await;
    // Whole numbers keep the JSON small: a job of these stays under the body limit.
    let image = vec![1u8; 3 * 224 * 224];
    let body = json!({"inputs": [{"name": "data_0", "shape": [1, 3, 224, 224], "datatype": "FP32",
        "data": image}]});
    let job: Vec<Value> = (0..120).map(|_| body.clone()).collect();
    within_twice_beside_a_job(&gateway, "alexnet", |_| body.clone(), job, 15).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_mid_way_stops_at_once() {
    let gateway = common::start(SLOW).await;
    let id = common::jobs::submit(&gateway, "slow", common::jobs::slow_rows(2000, 19)).await;
    wait_for(&gateway, &id, |job| {
        job["completed"].as_u64().unwrap_or(0) >= 20
    })
    .await;
    let cancelled = gateway
        .send(
            Method::DELETE,
            &format!("/v1/batches/{id}"),
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(cancelled.json()["status"], "cancelled");
    let executions = r#"model="slow""#;
    let at_cancel = gateway
        .metric("tollgate_executions_total", &[executions])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Rows already submitted finish (at most the window, 4); no new row starts.
    let after = gateway
        .metric("tollgate_executions_total", &[executions])
        .await;
    assert!(
        after - at_cancel <= 4.0,
        "rows kept running after the cancel"
    );
    let job = common::jobs::status(&gateway, &id).await;
    assert_eq!(job["status"], "cancelled");
    let answered = lines(&gateway.get(&format!("/v1/batches/{id}/results")).await.body).len();
    assert_eq!(
        answered as u64,
        job["completed"].as_u64().unwrap(),
        "answers = rows counted"
    );
    assert!(answered < 2000);
    gateway.stop().await;
}
