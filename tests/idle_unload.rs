//! Idle unload with the real model: after `idle_unload_after_s` without a request the model's
//! session is dropped (`tollgate_model_loaded` 0) and no idle cost accrues; the model stays ready,
//! and the next request is answered correctly, saying how long it waited for the load.

mod common;

use hyper::StatusCode;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[metering]
idle_interval_seconds = 1

[cache]
enabled = false

[[models]]
name = "digits_idle"
path = "models/digits/1/model.onnx"
max_batch_size = 8
idle_unload_after_s = 2
price_per_hour = 3.6
"#;

async fn gauge(gateway: &common::Gateway, name: &str) -> f64 {
    gateway.metric(name, &["model=\"digits_idle\""]).await
}

async fn until_loaded(gateway: &common::Gateway, want: f64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if gauge(gateway, "tollgate_model_loaded").await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_model_unloads_costs_nothing_meanwhile_and_answers_the_next_request() {
    let gateway = common::start(CONFIG).await;
    let (rows, labels) = common::digits_rows();
    let body = common::digits_body(&rows[..1]);
    let first = gateway.infer("digits_idle", &body).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first.header("x-tollgate-cold-start-us"),
        "",
        "it was loaded"
    );
    assert!(until_loaded(&gateway, 1.0, Duration::from_secs(2)).await);

    assert!(
        until_loaded(&gateway, 0.0, Duration::from_secs(6)).await,
        "the session was not unloaded after idling"
    );
    let ready = gateway.get("/v2/models/digits_idle/ready").await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "an unloaded model is still ready"
    );
    // One idle tick settles the time before the unload; after it the idle cost stands still.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle_before = gauge(&gateway, "tollgate_idle_cost_usd_total").await;
    assert!(idle_before > 0.0, "the loaded stretch was billed as idle");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let idle_unloaded = gauge(&gateway, "tollgate_idle_cost_usd_total").await;
    assert_eq!(
        idle_unloaded, idle_before,
        "no idle cost accrues while unloaded"
    );

    let cold = gateway.infer("digits_idle", &body).await;
    assert_eq!(cold.status, StatusCode::OK);
    assert_eq!(
        cold.output("label")["data"][0],
        labels[0],
        "the reloaded model answers right"
    );
    let header: u64 = cold
        .header("x-tollgate-cold-start-us")
        .parse()
        .expect("the request that loaded the model says so");
    assert!(header > 0);
    assert_eq!(cold.json()["parameters"]["cold_start_us"], header);
    // The load is not the batch's computation.
    let compute: u64 = cold.header("x-tollgate-compute-us").parse().unwrap();
    assert!(compute < header, "compute {compute} µs, load {header} µs");
    assert!(until_loaded(&gateway, 1.0, Duration::from_secs(2)).await);
    let warm = gateway.infer("digits_idle", &body).await;
    assert_eq!(warm.header("x-tollgate-cold-start-us"), "");
    // Loaded again, its idle time is billed again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(gauge(&gateway, "tollgate_idle_cost_usd_total").await > idle_unloaded);
    gateway.stop().await;
}
