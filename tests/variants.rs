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
