//! The bundled right-sized variants of digits (`scripts/make_variants.py`) load in the gateway's
//! own ONNX Runtime and answer the bundled test rows with the primary's labels.

mod common;

use hyper::StatusCode;

/// The `label` output of a digits answer.
fn labels_of(reply: &common::Reply) -> Vec<i64> {
    reply.output("label")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

const CONFIG: &str = r#"
[cache]
enabled = false

[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 16

[[models]]
name = "digits_int8"
path = "models/digits/1/model.int8.onnx"
max_batch_size = 16

[[models]]
name = "digits_fp16"
path = "models/digits/1/model.fp16.onnx"
max_batch_size = 16
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_variants_give_the_primarys_labels_on_the_test_rows() {
    let gateway = common::start(CONFIG).await;
    let (rows, labels) = common::digits_rows();
    let body = common::digits_body(&rows);
    for model in ["digits", "digits_int8", "digits_fp16"] {
        let reply = gateway.infer(model, &body).await;
        assert_eq!(reply.status, StatusCode::OK, "{model}: {}", reply.json());
        let got = labels_of(&reply);
        assert_eq!(got, labels, "{model}");
        let probabilities = reply.output("probabilities");
        assert_eq!(probabilities["datatype"], "FP32", "{model}: fp32 out");
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_variant_parameter_picks_a_variant_which_says_so_and_is_billed_apart() {
    let gateway = common::start(
        r#"
[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 16
price_per_hour = 3.6

[[models.variants]]
name = "int8"
path = "models/digits/1/model.int8.onnx"
price_per_hour = 1.8

[[models.variants]]
name = "fp16"
path = "models/digits/1/model.fp16.onnx"
"#,
    )
    .await;
    let (rows, labels) = common::digits_rows();
    let with = |variant: Option<&str>| {
        let mut body = common::digits_body(&rows);
        if let Some(name) = variant {
            body["parameters"] = serde_json::json!({"variant": name});
        }
        body
    };
    for (asked, answered) in [
        (None, "primary"),
        (Some("primary"), "primary"),
        (Some("int8"), "int8"),
        (Some("fp16"), "fp16"),
    ] {
        let reply = gateway.infer("digits", &with(asked)).await;
        assert_eq!(reply.status, StatusCode::OK, "{asked:?}: {}", reply.json());
        assert_eq!(reply.header("x-tollgate-variant"), answered, "{asked:?}");
        let json = reply.json();
        assert_eq!(json["parameters"]["variant"], answered);
        assert_eq!(
            json["model_name"], "digits",
            "a variant answers under its model's name"
        );
        let got = labels_of(&reply);
        assert_eq!(got, labels, "{asked:?}");
    }
    let unknown = gateway.infer("digits", &with(Some("int4"))).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let error = unknown.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("parameters.variant") && error.contains("int8"),
        "{error}"
    );

    // Each variant is counted and billed as its own model, at its own price.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let costs = gateway.get("/v1/costs?group_by=model").await.json();
    let requests = |model: &str| {
        costs["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"]["model"] == model)
            .map(|r| r["requests"].as_u64().unwrap())
    };
    // The primary's two answers and the refused `int4` request (recorded, at no cost).
    assert_eq!(requests("digits"), Some(3), "{costs}");
    assert_eq!(requests("digits:int8"), Some(1), "{costs}");
    assert_eq!(requests("digits:fp16"), Some(1), "{costs}");
    let executions = gateway
        .metric("tollgate_executions_total", &["model=\"digits:int8\""])
        .await;
    assert_eq!(executions, 1.0);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadowed_requests_measure_the_variant_and_rightsizing_reports_it() {
    let gateway = common::start(
        r#"
[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 16
max_queue_delay_us = 200
price_per_hour = 3.6
shadow_sample_ratio = 1.0

[[models.variants]]
name = "int8"
path = "models/digits/1/model.int8.onnx"
price_per_hour = 3.6
"#,
    )
    .await;
    let (rows, _) = common::digits_rows();
    // Distinct inputs near the bundled rows: every one is computed, and shadowed.
    for i in 0..300 {
        let row: Vec<f32> = rows[i % rows.len()]
            .iter()
            .enumerate()
            .map(|(j, v)| {
                if j == i % 64 {
                    (v + 1.0 + (i / 64) as f32).min(16.0)
                } else {
                    *v
                }
            })
            .collect();
        let reply = gateway.infer("digits", &common::digits_body(&[row])).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.header("x-tollgate-variant"),
            "primary",
            "shadowing never answers"
        );
    }
    // Shadow runs take idle capacity after the answers: wait until their count settles (a
    // repeated body is answered from the body memo and not shadowed again).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut last = None;
    let report = loop {
        let report = gateway.get("/v1/rightsizing").await;
        assert_eq!(report.status, StatusCode::OK, "{}", report.json());
        let report = report.json();
        let samples = report["models"][0]["variants"][1]["samples"].as_u64();
        if (samples >= Some(100) && samples == last) || std::time::Instant::now() > deadline {
            break report;
        }
        last = samples;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let model = &report["models"][0];
    assert_eq!(model["model"], "digits");
    let (primary, int8) = (&model["variants"][0], &model["variants"][1]);
    assert_eq!(
        (primary["name"].as_str(), int8["name"].as_str()),
        (Some("primary"), Some("int8"))
    );
    assert!(int8["samples"].as_u64().unwrap() >= 100, "{report}");
    let agreement = int8["agreement"].as_f64().unwrap();
    assert!((0.85..=1.0).contains(&agreement), "{report}");
    for variant in [primary, int8] {
        assert!(
            variant["cost_per_1k_rows_usd"].as_f64().unwrap() > 0.0,
            "{report}"
        );
        assert!(variant["p50_compute_us"].as_u64().unwrap() > 0, "{report}");
    }
    let instances = &model["instances"];
    assert_eq!(instances["count"], 1);
    assert!(
        instances["batch_fill"]
            .as_f64()
            .is_some_and(|f| f > 0.0 && f <= 1.0),
        "{report}"
    );
    assert!(instances["utilization"].as_f64().is_some(), "{report}");
    let said = model["recommendations"].as_array().unwrap();
    assert!(
        said.iter()
            .any(|r| r.as_str().unwrap().starts_with("int8 agrees on")),
        "{report}"
    );
    // Shadow runs are billed apart, to their own internal tenant.
    let costs = gateway.get("/v1/costs?group_by=tenant,model").await.json();
    let shadow = costs["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"]["tenant"] == "__shadow__")
        .cloned()
        .unwrap_or_default();
    assert_eq!(shadow["group"]["model"], "digits:int8", "{costs}");
    assert!(shadow["requests"].as_u64().unwrap() >= 100);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_a_downgrade_budget_is_answered_by_the_cheapest_variant() {
    let hash = |key: &str| blake3::hash(key.as_bytes()).to_hex().to_string();
    let gateway = common::start(&format!(
        r#"
[[tenants]]
name = "thrifty"
api_key_blake3 = "{}"
budget_usd = 0.0
budget_action = "downgrade"

[[tenants]]
name = "flush"
api_key_blake3 = "{}"
budget_usd = 1000.0
budget_action = "downgrade"

[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 16
price_per_hour = 3.6

[[models.variants]]
name = "fp16"
path = "models/digits/1/model.fp16.onnx"
price_per_hour = 3.0

[[models.variants]]
name = "int8"
path = "models/digits/1/model.int8.onnx"
price_per_hour = 1.2
"#,
        hash("thrifty-key"),
        hash("flush-key")
    ))
    .await;
    let (rows, labels) = common::digits_rows();
    let body = bytes::Bytes::from(common::digits_body(&rows).to_string());
    for (key, answered) in [("flush-key", "primary"), ("thrifty-key", "int8")] {
        let headers = vec![("authorization", format!("Bearer {key}"))];
        let reply = gateway
            .send(
                hyper::Method::POST,
                "/v2/models/digits/infer",
                &headers,
                body.clone(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{key}: {}", reply.json());
        assert_eq!(reply.header("x-tollgate-variant"), answered, "{key}");
        let got = labels_of(&reply);
        assert_eq!(got, labels, "{key}");
    }
    // Billed as the variant that ran, at its price.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let costs = gateway.get("/v1/costs?group_by=tenant,model").await.json();
    let row = costs["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"]["tenant"] == "thrifty")
        .cloned()
        .unwrap();
    assert_eq!(row["group"]["model"], "digits:int8", "{costs}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_can_run_on_an_upstream_server() {
    // The upstream: another gateway serving the int8 file under the primary's name.
    let upstream = common::start(
        r#"
[[models]]
name = "digits"
path = "models/digits/1/model.int8.onnx"
max_batch_size = 16
"#,
    )
    .await;
    let gateway = common::start(&format!(
        r#"
[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 16

[[models.variants]]
name = "remote"
upstream = "{}"
"#,
        upstream.base
    ))
    .await;
    let (rows, labels) = common::digits_rows();
    let mut body = common::digits_body(&rows);
    body["parameters"] = serde_json::json!({"variant": "remote"});
    let reply = gateway.infer("digits", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json());
    assert_eq!(reply.header("x-tollgate-variant"), "remote");
    let got = labels_of(&reply);
    assert_eq!(got, labels);
    let served = upstream
        .metric(
            "tollgate_requests_total",
            &["model=\"digits\"", "outcome=\"success\""],
        )
        .await;
    assert_eq!(served, 1.0, "the upstream answered it");
    gateway.stop().await;
    upstream.stop().await;
}
