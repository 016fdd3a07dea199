//! The prediction cache against the real server and model: hits, keys, single flight, errors,
//! TTL, the byte bound, and purging.

mod common;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::json;

const CONFIG: &str = r#"
[cache]
max_bytes = "64KiB"

[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 64

[[models]]
name = "row_sum"
path = "models/row_sum/1/model.onnx"
max_batch_size = 8

# A long queue delay keeps the first request waiting, so identical ones arrive while it is in
# flight.
[[models]]
name = "digits_slow"
path = "models/digits/1/model.onnx"
max_batch_size = 64
max_queue_delay_us = 200000

# The same, for the single-flight test alone: metrics are per process and tests share it.
[[models]]
name = "digits_flight"
path = "models/digits/1/model.onnx"
max_batch_size = 64
max_queue_delay_us = 200000

[[models]]
name = "digits_short_ttl"
path = "models/digits/1/model.onnx"
cache_ttl_seconds = 1

# The body memo's tests read its counters: a model of their own.
[[models]]
name = "digits_memo"
path = "models/digits/1/model.onnx"

[[models]]
name = "digits_uncached"
path = "models/digits/1/model.onnx"
cache = false

[[models]]
name = "digits_twice"
path = "models/digits/1/model.onnx"
cache_min_uses = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_is_a_hit_with_identical_outputs_and_no_execution() {
    let gateway = common::start(CONFIG).await;
    let (rows, _) = common::digits_rows();
    let body = common::digits_body(&rows[..3]);
    let first = gateway.infer("digits", &body).await;
    assert_eq!(first.header("x-tollgate-cache"), "miss");
    let executions = gateway
        .metric("tollgate_executions_total", &["model=\"digits\""])
        .await;
    let second = gateway.infer("digits", &body).await;
    assert_eq!(second.header("x-tollgate-cache"), "hit");
    assert_eq!(second.json()["parameters"]["cache"], "hit");
    assert_eq!(
        first.json()["outputs"],
        second.json()["outputs"],
        "hits return the same outputs"
    );
    // The first hit formats the answer and keeps its text; the next ones copy that text.
    let third = gateway.infer("digits", &body).await;
    assert_eq!(third.header("x-tollgate-cache"), "hit");
    assert_eq!(first.json()["outputs"], third.json()["outputs"]);
    assert_eq!(
        gateway
            .metric("tollgate_executions_total", &["model=\"digits\""])
            .await,
        executions,
        "a hit does not run the model"
    );
    // The binary encoding of the same tensor is the same key.
    let payload: Vec<u8> = rows[..3]
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let header = json!({"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32",
        "parameters": {"binary_data_size": payload.len()}}]})
    .to_string();
    let mut raw = header.clone().into_bytes();
    raw.extend_from_slice(&payload);
    let binary = gateway
        .send(
            Method::POST,
            "/v2/models/digits/infer",
            &[("inference-header-content-length", header.len().to_string())],
            Bytes::from(raw),
        )
        .await;
    assert_eq!(
        binary.header("x-tollgate-cache"),
        "hit",
        "JSON and binary share a key"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_min_uses_two_the_second_computation_is_stored_and_the_third_request_hits() {
    let gateway = common::start(CONFIG).await;
    let (rows, labels) = common::digits_rows();
    let body = common::digits_body(&rows[4..5]);
    let executions = || gateway.metric("tollgate_executions_total", &["model=\"digits_twice\""]);
    let not_stored = || {
        gateway.metric(
            "tollgate_cache_not_admitted_total",
            &["model=\"digits_twice\""],
        )
    };
    let mut served = Vec::new();
    for _ in 0..3 {
        let response = gateway.infer("digits_twice", &body).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.output("label")["data"][0], labels[4]);
        served.push(response.header("x-tollgate-cache").to_string());
    }
    assert_eq!(served, ["miss", "miss", "hit"]);
    assert_eq!(executions().await, 2.0, "computed twice, then answered");
    assert_eq!(
        not_stored().await,
        1.0,
        "the first computation was not stored"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_bytes_with_another_shape_or_dtype_are_not_a_hit() {
    let gateway = common::start(CONFIG).await;
    let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
    let send = |shape: [usize; 2]| json!({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": values}]});
    let wide = gateway.infer("row_sum", &send([1, 8])).await;
    assert_eq!(wide.header("x-tollgate-cache"), "miss");
    assert_eq!(wide.output("sum")["data"], json!([28.0]));
    let square = gateway.infer("row_sum", &send([2, 4])).await;
    assert_eq!(
        square.header("x-tollgate-cache"),
        "miss",
        "another shape is another key"
    );
    assert_eq!(square.output("sum")["data"], json!([6.0, 22.0]));
    // The same 32 bytes read as INT32 are refused by the model rather than served from cache.
    let ints: Vec<i32> = values.iter().map(|v| v.to_bits() as i32).collect();
    let as_int = gateway
        .infer(
            "row_sum",
            &json!({"inputs": [{"name": "x", "shape": [1, 8], "datatype": "INT32", "data": ints}]}),
        )
        .await;
    assert_eq!(as_int.status, StatusCode::BAD_REQUEST);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_identical_misses_run_the_model_once() {
    let gateway = std::sync::Arc::new(common::start(CONFIG).await);
    let (rows, labels) = common::digits_rows();
    let body = common::digits_body(&rows[5..6]);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let gateway = gateway.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            gateway.infer("digits_flight", &body).await
        }));
    }
    let mut statuses = std::collections::HashMap::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.output("label")["data"][0],
            labels[5],
            "every waiter gets the answer"
        );
        *statuses
            .entry(reply.header("x-tollgate-cache").to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(
        gateway
            .metric("tollgate_executions_total", &["model=\"digits_flight\""])
            .await,
        1.0,
        "one execution for all 100 ({statuses:?})"
    );
    assert_eq!(statuses.get("miss"), Some(&1), "{statuses:?}");
    assert_eq!(
        statuses.get("coalesced").copied().unwrap_or(0) + statuses.get("hit").copied().unwrap_or(0),
        99
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_is_not_cached() {
    let gateway = common::start(CONFIG).await;
    let (rows, labels) = common::digits_rows();
    let mut failing = common::digits_body(&rows[7..8]);
    // One microsecond cannot cover the 200 ms queue delay: the request times out unrun.
    failing["parameters"] = json!({"timeout": 1});
    let timed_out = gateway.infer("digits_slow", &failing).await;
    assert_eq!(
        timed_out.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{:?}",
        timed_out.body
    );
    let retry = gateway
        .infer("digits_slow", &common::digits_body(&rows[7..8]))
        .await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(
        retry.header("x-tollgate-cache"),
        "miss",
        "the failure left nothing behind"
    );
    assert_eq!(retry.output("label")["data"][0], labels[7]);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_their_model_ttl() {
    let gateway = common::start(CONFIG).await;
    let (rows, _) = common::digits_rows();
    let body = common::digits_body(&rows[..1]);
    assert_eq!(
        gateway
            .infer("digits_short_ttl", &body)
            .await
            .header("x-tollgate-cache"),
        "miss"
    );
    assert_eq!(
        gateway
            .infer("digits_short_ttl", &body)
            .await
            .header("x-tollgate-cache"),
        "hit"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(
        gateway
            .infer("digits_short_ttl", &body)
            .await
            .header("x-tollgate-cache"),
        "miss"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_controls_from_the_client_and_the_config_are_honoured() {
    let gateway = common::start(CONFIG).await;
    let (rows, _) = common::digits_rows();
    let body = common::digits_body(&rows[2..3]);
    let mut bypass = body.clone();
    bypass["parameters"] = json!({"cache": "bypass"});
    assert_eq!(
        gateway
            .infer("digits", &bypass)
            .await
            .header("x-tollgate-cache"),
        "bypass"
    );
    assert_eq!(
        gateway
            .infer("digits", &body)
            .await
            .header("x-tollgate-cache"),
        "miss",
        "bypass stored nothing"
    );
    let no_cache = gateway
        .send(
            Method::POST,
            "/v2/models/digits/infer",
            &[("cache-control", "no-cache".into())],
            Bytes::from(body.to_string()),
        )
        .await;
    assert_eq!(
        no_cache.header("x-tollgate-cache"),
        "miss",
        "no-cache skips the lookup"
    );
    let uncached = gateway.infer("digits_uncached", &body).await;
    assert_eq!(uncached.header("x-tollgate-cache"), "bypass");
    assert_eq!(
        gateway
            .infer("digits_uncached", &body)
            .await
            .header("x-tollgate-cache"),
        "bypass"
    );
    // Purging one model empties its entries.
    let purge = gateway
        .send(Method::DELETE, "/v1/cache?model=digits", &[], Bytes::new())
        .await;
    assert_eq!(purge.status, StatusCode::OK);
    assert_eq!(
        gateway
            .infer("digits", &body)
            .await
            .header("x-tollgate-cache"),
        "miss"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_tier_stays_within_max_bytes_under_a_flood() {
    let gateway = common::start(CONFIG).await;
    // 300 distinct 64-row answers of ~3 KiB each: about 15 times the 64 KiB bound.
    for seed in 0..300u32 {
        let rows: Vec<Vec<f32>> = (0..64)
            .map(|r| {
                (0..64)
                    .map(|c| seed as f32 * 0.01 + r as f32 + c as f32 / 64.0)
                    .collect()
            })
            .collect();
        let reply = gateway.infer("digits", &common::digits_body(&rows)).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    if let Some(cache) = &gateway.server.gateway.cache {
        cache.settle().await;
    }
    let bytes = gateway.metric("tollgate_cache_bytes", &[]).await;
    assert!(
        bytes > 0.0 && bytes <= 64.0 * 1024.0,
        "cache holds {bytes} bytes"
    );
    // Once full, an answer either pushes another out or, new to the doorkeeper, is not stored.
    let evicted = gateway.metric("tollgate_cache_evictions_total", &[]).await;
    let declined = gateway
        .metric("tollgate_cache_not_admitted_total", &["model=\"digits\""])
        .await;
    assert!(
        evicted + declined > 0.0,
        "{evicted} evicted, {declined} declined"
    );
    gateway.stop().await;
}

/// Hits answered from a remembered body, without decoding it, so far.
async fn recalled(gateway: &common::Gateway, model: &str) -> f64 {
    let label = format!("model=\"{model}\"");
    gateway
        .metric("tollgate_cache_recalled_total", &[label.as_str()])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_body_is_answered_without_decoding_while_its_answer_is_cached() {
    let gateway = common::start(CONFIG).await;
    let (rows, _) = common::digits_rows();
    let mut body = common::digits_body(&rows[2..4]);
    body["id"] = json!("repeat-7");
    let first = gateway.infer("digits_memo", &body).await;
    assert_eq!(first.header("x-tollgate-cache"), "miss");
    // The first hit is decoded as usual and leaves its recall for the next one.
    let decoded = gateway.infer("digits_memo", &body).await;
    assert_eq!(decoded.header("x-tollgate-cache"), "hit");
    assert_eq!(recalled(&gateway, "digits_memo").await, 0.0);
    let executions = gateway
        .metric("tollgate_executions_total", &["model=\"digits_memo\""])
        .await;
    let answered = gateway.infer("digits_memo", &body).await;
    assert_eq!(answered.header("x-tollgate-cache"), "hit");
    assert_eq!(recalled(&gateway, "digits_memo").await, 1.0);
    // The same answer as a decoded hit, but a request of its own, with its own id.
    let without_request_id = |reply: &common::Reply| {
        let mut json = reply.json();
        let request_id = json["parameters"]["request_id"].take();
        (json, request_id)
    };
    let (answered_json, answered_id) = without_request_id(&answered);
    let (decoded_json, decoded_id) = without_request_id(&decoded);
    assert_eq!(answered_json, decoded_json);
    assert_ne!(answered_id, decoded_id);
    assert_eq!(answered.json()["id"], "repeat-7");
    assert_eq!(answered.output("label"), first.output("label"));
    // One more byte (another id) is another body: decoded, and still a hit on the same key.
    body["id"] = json!("repeat-8");
    let other_id = gateway.infer("digits_memo", &body).await;
    assert_eq!(other_id.header("x-tollgate-cache"), "hit");
    assert_eq!(other_id.json()["id"], "repeat-8");
    assert_eq!(recalled(&gateway, "digits_memo").await, 1.0);
    // A client's cache directive takes the whole path: no-cache computes afresh.
    let headers = [("cache-control", "no-cache".to_string())];
    let path = "/v2/models/digits_memo/infer";
    let fresh = gateway
        .send(Method::POST, path, &headers, Bytes::from(body.to_string()))
        .await;
    assert_eq!(fresh.header("x-tollgate-cache"), "miss");
    // After a purge the remembered body finds nothing: it is decoded, computed and stored.
    body["id"] = json!("repeat-7");
    let purge = gateway
        .send(
            Method::DELETE,
            "/v1/cache?model=digits_memo",
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(purge.status, StatusCode::OK);
    let after_purge = gateway.infer("digits_memo", &body).await;
    assert_eq!(after_purge.header("x-tollgate-cache"), "miss");
    assert_eq!(after_purge.output("label"), first.output("label"));
    assert_eq!(recalled(&gateway, "digits_memo").await, 1.0);
    assert_eq!(
        gateway
            .metric("tollgate_executions_total", &["model=\"digits_memo\""])
            .await,
        executions + 2.0,
        "only the no-cache request and the one after the purge ran the model"
    );
    // Binary tensors are remembered as well, by their framing and bytes.
    let payload: Vec<u8> = rows[5].iter().flat_map(|v| v.to_le_bytes()).collect();
    let json = r#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","parameters":{"binary_data_size":256}}]}"#;
    let mut binary = json.as_bytes().to_vec();
    binary.extend_from_slice(&payload);
    let framing = [("inference-header-content-length", json.len().to_string())];
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let reply = gateway
            .send(Method::POST, path, &framing, Bytes::from(binary.clone()))
            .await;
        statuses.push(reply.header("x-tollgate-cache").to_string());
    }
    assert_eq!(statuses, ["miss", "hit", "hit"]);
    assert_eq!(recalled(&gateway, "digits_memo").await, 2.0);
    // A long id is not kept in the memo: each repeat is decoded, and still a hit.
    body["id"] = json!("x".repeat(600));
    for _ in 0..3 {
        let reply = gateway.infer("digits_memo", &body).await;
        assert_eq!(reply.header("x-tollgate-cache"), "hit");
    }
    assert_eq!(recalled(&gateway, "digits_memo").await, 2.0);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_tenant_scope_a_remembered_body_answers_its_own_tenant_only() {
    let hash = |key: &str| blake3::hash(key.as_bytes()).to_hex().to_string();
    let config = format!(
        r#"
[cache]
scope = "tenant"

[metering]
allowed_tags = ["env"]

[[models]]
name = "digits"
path = "models/digits/1/model.onnx"

[[tenants]]
name = "search"
api_key_blake3 = "{}"

[[tenants]]
name = "ads"
api_key_blake3 = "{}"
"#,
        hash("search-key"),
        hash("ads-key")
    );
    let gateway = common::start(&config).await;
    let (rows, _) = common::digits_rows();
    let mut body = common::digits_body(&rows[..1]);
    body["parameters"] = json!({"tags": "env=prod"});
    let body = Bytes::from(body.to_string());
    let bearer = |tenant: &str| [("authorization", format!("Bearer {tenant}-key"))];
    let last_request = std::sync::Mutex::new(String::new());
    let send = |tenant: &str| {
        let headers = bearer(tenant);
        let body = body.clone();
        let (gateway, last_request) = (&gateway, &last_request);
        async move {
            let reply = gateway
                .send(Method::POST, "/v2/models/digits/infer", &headers, body)
                .await;
            *last_request.lock().unwrap() = reply.header("x-tollgate-request-id").to_string();
            reply.header("x-tollgate-cache").to_string()
        }
    };
    for expected in ["miss", "hit", "hit"] {
        assert_eq!(send("search").await, expected);
    }
    assert_eq!(recalled(&gateway, "digits").await, 1.0);
    // The same bytes from another tenant are another key: never the first tenant's answer.
    assert_eq!(send("ads").await, "miss");
    assert_eq!(recalled(&gateway, "digits").await, 1.0);
    for expected in ["hit", "hit"] {
        assert_eq!(send("ads").await, expected);
    }
    assert_eq!(recalled(&gateway, "digits").await, 2.0);
    // Its usage record is a hit's, with the caller and the tags of the body it never decoded.
    let usage_path = format!("/v1/usage/{}", last_request.lock().unwrap());
    let mut usage = None;
    for _ in 0..100 {
        let reply = gateway
            .send(Method::GET, &usage_path, &bearer("ads"), Bytes::new())
            .await;
        if reply.status == StatusCode::OK {
            usage = Some(reply.json());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let usage = usage.expect("the recalled hit's usage record is committed");
    assert_eq!(usage["tenant"], "ads");
    assert_eq!(usage["cache"], "hit");
    assert_eq!(usage["outcome"], "success");
    assert_eq!(usage["tags"], json!({"env": "prod"}));
    assert_eq!(usage["rows"], 1);
    assert!(usage["saved_usd"].as_f64() > Some(0.0), "{usage}");
    // The memo now holds the second tenant's recall; the first tenant's request is decoded
    // and still finds its own answer.
    assert_eq!(send("search").await, "hit");
    assert_eq!(recalled(&gateway, "digits").await, 2.0);
    gateway.stop().await;
}

/// What `max_bytes` buys: a digits answer (48 bytes of outputs) must not weigh several times
/// that, or the tier holds a fraction of the answers its size suggests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digits_answer_weighs_a_few_hundred_bytes() {
    let gateway = common::start(
        "[[models]]\nname = \"digits\"\npath = \"models/digits/1/model.onnx\"\nmax_batch_size = 64\n",
    )
    .await;
    for n in 0..500u32 {
        let row: Vec<f32> = (0..64)
            .map(|i| ((n * 64 + i) % 17) as f32 + n as f32 / 1000.0)
            .collect();
        let reply = gateway.infer("digits", &common::digits_body(&[row])).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    if let Some(cache) = &gateway.server.gateway.cache {
        cache.settle().await;
    }
    let entries = gateway.metric("tollgate_cache_entries", &[]).await;
    let bytes = gateway.metric("tollgate_cache_bytes", &[]).await;
    assert_eq!(entries, 500.0);
    assert!(
        bytes / entries <= 400.0,
        "{bytes} bytes for {entries} entries"
    );
    gateway.stop().await;
}
