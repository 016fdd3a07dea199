//! Instances that follow the load, with the real (deliberately slow) model: under eight
//! closed-loop clients a second instance starts, and after the load stops it goes again; every
//! request meanwhile is answered.

mod common;

use hyper::StatusCode;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[cache]
enabled = false

[[models]]
name = "slow_scaled"
path = "models/slow/1/model.onnx"
max_batch_size = 0
instances = 1
min_instances = 1
max_instances = 2
"#;

fn body(seed: usize) -> serde_json::Value {
    let row: Vec<f32> = (0..256)
        .map(|i| ((i * 7 + seed) % 13) as f32 / 13.0)
        .collect();
    json!({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": [row]}]})
}

async fn instances(gateway: &common::Gateway) -> f64 {
    gateway
        .metric("tollgate_model_instances", &["model=\"slow_scaled\""])
        .await
}

async fn until(gateway: &common::Gateway, want: f64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if instances(gateway).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_starts_under_load_and_goes_after_it() {
    let gateway = Arc::new(common::start(CONFIG).await);
    assert_eq!(instances(&gateway).await, 1.0);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (gateway, stop, answered) = (gateway.clone(), stop.clone(), answered.clone());
            tokio::spawn(async move {
                let mut seed = client * 1000;
                while !stop.load(Ordering::Relaxed) {
                    let reply = gateway.infer("slow_scaled", &body(seed)).await;
                    assert_eq!(reply.status, StatusCode::OK);
                    answered.fetch_add(1, Ordering::Relaxed);
                    seed += 1;
                }
            })
        })
        .collect();
    let grew = until(&gateway, 2.0, Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert!(grew, "no second instance under a queue that stayed deep");
    assert!(answered.load(Ordering::Relaxed) > 0);
    // Both instances ran batches while the load lasted.
    for index in ["0", "1"] {
        let busy = gateway
            .metric(
                "tollgate_device_busy_seconds_total",
                &["model=\"slow_scaled\"", &format!("instance=\"{index}\"")],
            )
            .await;
        assert!(busy > 0.0, "instance {index} never ran");
    }
    assert!(
        until(&gateway, 1.0, Duration::from_secs(12)).await,
        "the second instance stayed after the load stopped"
    );
    // The one left still answers.
    assert_eq!(
        gateway.infer("slow_scaled", &body(7)).await.status,
        StatusCode::OK
    );
}
