//! The bundled right-sized variants of digits (`scripts/make_variants.py`) load in the gateway's
//! own ONNX Runtime and answer the bundled test rows with the primary's labels.

mod common;

use hyper::StatusCode;

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
        let got: Vec<i64> = reply.output("label")["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
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
        let got: Vec<i64> = reply.output("label")["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
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
