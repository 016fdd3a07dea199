//! Gateways sharing a real Redis: a fill on one is a hit on the other (on one server with a
//! password and a database index, and on a real 3-node Redis Cluster), a value tampered with
//! in Redis is a miss with the right answer, and Redis dying mid-run never fails a request.

mod common;

use hyper::StatusCode;
use std::time::Duration;

fn config(redis_url: &str) -> String {
    format!(
        r#"
[cache]
redis_url = {redis_url}
redis_timeout_ms = 50

[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 16
"#
    )
}

fn quoted(url: &str) -> String {
    format!("\"{url}\"")
}

/// Fills `rows[range]` on `first` and waits until `second` answers it from Redis.
async fn filled_on_one_is_a_hit_on_the_other(
    first: &common::Gateway,
    second: &common::Gateway,
    range: std::ops::Range<usize>,
) {
    let (rows, labels) = common::digits_rows();
    let body = common::digits_body(&rows[range.clone()]);
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
                serde_json::json!(labels[range.clone()])
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
}

async fn redis_hits(gateway: &common::Gateway) -> f64 {
    gateway
        .metric(
            "tollgate_cache_requests_total",
            &["tier=\"redis\"", "status=\"hit\""],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_on_one_replica_is_a_hit_on_the_other() {
    let redis = common::Redis::start();
    let first = common::start(&config(&quoted(&redis.url()))).await;
    let second = common::start(&config(&quoted(&redis.url()))).await;
    filled_on_one_is_a_hit_on_the_other(&first, &second, 3..5).await;
    assert!(redis_hits(&second).await >= 1.0);
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_and_the_database_of_the_url_are_honoured() {
    let redis = common::Redis::start_on(common::free_port(), &["--requirepass", "s3cret"]);
    let url = quoted(&format!("{}/3", redis.url()));
    let first = common::start(&config(&url)).await;
    let second = common::start(&config(&url)).await;
    filled_on_one_is_a_hit_on_the_other(&first, &second, 0..2).await;
    let keys = |db: u8| -> Vec<String> {
        redis::cmd("KEYS")
            .arg("tollgate:*")
            .query(&mut redis.connect(db))
            .unwrap()
    };
    assert!(!keys(3).is_empty(), "the fill went to database 3");
    assert!(
        keys(0).is_empty(),
        "nothing was written to database 0: {:?}",
        keys(0)
    );
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_are_hits_across_replicas_on_a_redis_cluster_and_a_purge_reaches_every_node() {
    let cluster = common::RedisCluster::start(3);
    let first = common::start(&config(&cluster.toml_urls())).await;
    let second = common::start(&config(&cluster.toml_urls())).await;
    // Several inputs, so their keys fall in the slots of more than one node.
    for start in 0..6 {
        filled_on_one_is_a_hit_on_the_other(&first, &second, start..start + 1).await;
    }
    let sizes = |cluster: &common::RedisCluster| -> Vec<u64> {
        cluster
            .nodes
            .iter()
            .map(|n| redis::cmd("DBSIZE").query(&mut n.connect(0)).unwrap())
            .collect()
    };
    let before = sizes(&cluster);
    assert!(
        before.iter().filter(|&&n| n > 0).count() >= 2,
        "keys spread over the nodes: {before:?}"
    );
    let purged = first
        .send(hyper::Method::DELETE, "/v1/cache", &[], bytes::Bytes::new())
        .await;
    assert_eq!(purged.status, StatusCode::OK, "{:?}", purged.body);
    assert_eq!(
        sizes(&cluster),
        vec![0, 0, 0],
        "the purge reached every node"
    );
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_tampered_with_in_redis_is_a_miss_with_the_right_answer() {
    let redis = common::Redis::start();
    let gateway = common::start(&config(&quoted(&redis.url()))).await;
    let (rows, labels) = common::digits_rows();
    let body = common::digits_body(&rows[7..8]);
    assert_eq!(
        gateway
            .infer("digits", &body)
            .await
            .header("x-tollgate-cache"),
        "miss"
    );
    let mut connection = redis.connect(0);
    let mut keys: Vec<String> = Vec::new();
    for _ in 0..100 {
        keys = redis::cmd("KEYS")
            .arg("tollgate:*")
            .query(&mut connection)
            .unwrap();
        if !keys.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(keys.len(), 1, "{keys:?}");
    let mut value: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query(&mut connection)
        .unwrap();
    // The last bytes are the label tensor's data: flip them to another class.
    let last = value.len() - 1;
    value[last - 7] ^= 0x01;
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(value)
        .arg("KEEPTTL")
        .query(&mut connection)
        .unwrap();
    if let Some(cache) = &gateway.server.gateway.cache {
        cache.clear_memory_tier().await;
    }
    let reply = gateway.infer("digits", &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("x-tollgate-cache"),
        "miss",
        "a tampered value is never an answer"
    );
    assert_eq!(
        reply.output("label")["data"],
        serde_json::json!(labels[7..8])
    );
    assert_eq!(
        gateway
            .metric("tollgate_cache_redis_rejected_total", &["reason=\"tag\""])
            .await,
        1.0
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_succeeding_when_redis_dies() {
    let mut redis = common::Redis::start();
    let gateway = common::start(&config(&quoted(&redis.url()))).await;
    let (rows, labels) = common::digits_rows();
    for (index, row) in rows.iter().enumerate().take(4) {
        let reply = gateway
            .infer("digits", &common::digits_body(std::slice::from_ref(row)))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.output("label")["data"][0], labels[index]);
    }
    redis.kill();
    let failures = ["role=\"cache\"", "outcome=\"timeout\""];
    let refused = ["role=\"cache\"", "outcome=\"failed\""];
    let errors_before = gateway
        .metric("tollgate_redis_calls_total", &failures)
        .await
        + gateway.metric("tollgate_redis_calls_total", &refused).await;
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
        .metric("tollgate_redis_calls_total", &failures)
        .await
        + gateway.metric("tollgate_redis_calls_total", &refused).await
        - errors_before;
    assert!(
        (1.0..=8.0).contains(&failed_calls),
        "{failed_calls} calls reached the dead Redis"
    );
    assert_eq!(
        gateway
            .metric("tollgate_redis_breaker_open", &["role=\"cache\""])
            .await,
        1.0
    );
    gateway.stop().await;
}
