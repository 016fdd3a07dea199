//! Two gateways sharing one real redis-server: a fill on one is a hit on the other, and Redis
//! dying mid-run never fails a request.

mod common;

use hyper::StatusCode;
use std::time::Duration;

fn config(redis_url: &str) -> String {
    format!(
        r#"
[cache]
redis_url = "{redis_url}"
redis_timeout_ms = 50

[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 16
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_on_one_replica_is_a_hit_on_the_other() {
    let redis = common::Redis::start();
    let first = common::start(&config(&redis.url())).await;
    let second = common::start(&config(&redis.url())).await;
    let (rows, labels) = common::digits_rows();
    let body = common::digits_body(&rows[3..5]);
    let filled = first.infer("digits", &body).await;
    assert_eq!(filled.header("x-tollgate-cache"), "miss");
    // The shared write is in the background; give it a moment to land.
    let mut status = String::new();
    for _ in 0..50 {
        let reply = second.infer("digits", &body).await;
        assert_eq!(reply.status, StatusCode::OK);
        status = reply.header("x-tollgate-cache").to_string();
        if status == "hit" {
            assert_eq!(
                reply.output("label")["data"],
                serde_json::json!(labels[3..5])
            );
            assert_eq!(reply.json()["outputs"], filled.json()["outputs"]);
            break;
        }
        // A miss on the second replica fills its own memory; purge it so the next try asks Redis.
        if let Some(cache) = &second.server.gateway.cache {
            cache.clear_memory_tier().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, "hit",
        "the second replica never saw the first one's fill"
    );
    assert!(
        second
            .metric(
                "tollgate_cache_requests_total",
                &["tier=\"redis\"", "status=\"hit\""]
            )
            .await
            >= 1.0
    );
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_succeeding_when_redis_dies() {
    let mut redis = common::Redis::start();
    let gateway = common::start(&config(&redis.url())).await;
    let (rows, labels) = common::digits_rows();
    for (index, row) in rows.iter().enumerate().take(4) {
        let reply = gateway
            .infer("digits", &common::digits_body(std::slice::from_ref(row)))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.output("label")["data"][0], labels[index]);
    }
    redis.kill();
    let errors_before = gateway
        .metric("tollgate_cache_redis_errors_total", &[])
        .await;
    for round in 0..3 {
        for (index, row) in rows.iter().enumerate() {
            let mut row = row.clone();
            row[0] += round as f32 + 100.0; // new keys: every one goes past memory to Redis
            let reply = gateway.infer("digits", &common::digits_body(&[row])).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "request {index} failed with Redis down"
            );
        }
    }
    // 48 misses with Redis gone, yet only the few calls before the breaker opened (and its
    // occasional probe) went to Redis and waited for a timeout.
    let failed_calls = gateway
        .metric("tollgate_cache_redis_errors_total", &[])
        .await
        - errors_before;
    assert!(
        (1.0..=8.0).contains(&failed_calls),
        "{failed_calls} calls reached the dead Redis"
    );
    assert_eq!(
        gateway
            .metric("tollgate_cache_redis_breaker_open", &[])
            .await,
        1.0
    );
    gateway.stop().await;
}
