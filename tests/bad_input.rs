//! Every malformed request gets a 4xx naming the field, against the real server and model, and
//! the server keeps serving correct answers afterwards.

mod common;

use bytes::Bytes;
use hyper::{Method, StatusCode};

const CONFIG: &str = r#"
[server]
max_body_bytes = "64KiB"

[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 8
"#;

/// (case, path, extra headers, body, expected status, fragment of the error)
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, String)>,
    Vec<u8>,
    StatusCode,
    &'static str,
);

fn row_json(values: usize) -> String {
    vec!["0.5"; values].join(",")
}

fn binary(header: &str, payload: &[u8]) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(payload);
    (
        vec![("inference-header-content-length", header.len().to_string())],
        body,
    )
}

fn cases() -> Vec<Case> {
    let infer = "/v2/models/digits/infer";
    let json = |text: String| text.into_bytes();
    let good_row = row_json(64);
    let bad_binary_size = binary(
        r#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","parameters":{"binary_data_size":300}}]}"#,
        &[0u8; 256],
    );
    let short_binary = binary(
        r#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","parameters":{"binary_data_size":128}}]}"#,
        &[0u8; 128],
    );
    let header_too_long = (
        vec![("inference-header-content-length", "100000".to_string())],
        b"{}".to_vec(),
    );
    vec![
        (
            "broken JSON",
            infer,
            vec![],
            json("{\"inputs\": [".into()),
            StatusCode::BAD_REQUEST,
            "not a valid KServe V2 inference request",
        ),
        (
            "unknown model",
            "/v2/models/nope/infer",
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":[{good_row}]}}]}}"#
            )),
            StatusCode::NOT_FOUND,
            "unknown model `nope`",
        ),
        (
            // Two things are wrong; the missing model is the one to name.
            "unknown model and short data",
            "/v2/models/nope/infer",
            vec![],
            json(
                r#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":[1,2]}]}"#
                    .into(),
            ),
            StatusCode::NOT_FOUND,
            "unknown model `nope`",
        ),
        (
            "FP32 out of range",
            infer,
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":[1e40,{}]}}]}}"#,
                row_json(63)
            )),
            StatusCode::BAD_REQUEST,
            "element 0 (1e40): out of range for FP32",
        ),
        (
            "unknown version",
            "/v2/models/digits/versions/9/infer",
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":[{good_row}]}}]}}"#
            )),
            StatusCode::NOT_FOUND,
            "no version `9`",
        ),
        (
            "unknown input",
            infer,
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"pixels","shape":[1,64],"datatype":"FP32","data":[{good_row}]}}]}}"#
            )),
            StatusCode::BAD_REQUEST,
            "inputs[0].name",
        ),
        (
            "missing input",
            infer,
            vec![],
            json(r#"{"inputs":[]}"#.into()),
            StatusCode::BAD_REQUEST,
            "missing input `input`",
        ),
        (
            "wrong datatype",
            infer,
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP64","data":[{good_row}]}}]}}"#
            )),
            StatusCode::BAD_REQUEST,
            "got FP64, the model expects FP32",
        ),
        (
            "unknown datatype",
            infer,
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"input","shape":[1,64],"datatype":"FLOAT","data":[{good_row}]}}]}}"#
            )),
            StatusCode::BAD_REQUEST,
            "inputs[0].datatype",
        ),
        (
            "shape does not match the model",
            infer,
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"input","shape":[1,63],"datatype":"FP32","data":[{}]}}]}}"#,
                row_json(63)
            )),
            StatusCode::BAD_REQUEST,
            "dimension 1 must be 64",
        ),
        (
            "wrong rank",
            infer,
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"input","shape":[64],"datatype":"FP32","data":[{good_row}]}}]}}"#
            )),
            StatusCode::BAD_REQUEST,
            "expected 2 dimensions",
        ),
        (
            "data length differs from the shape",
            infer,
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"input","shape":[2,64],"datatype":"FP32","data":[{good_row}]}}]}}"#
            )),
            StatusCode::BAD_REQUEST,
            "64 elements for a shape that holds 128",
        ),
        (
            "a string where numbers belong",
            infer,
            vec![],
            json(
                r#"{"inputs":[{"name":"input","shape":[1,1],"datatype":"FP32","data":["x"]}]}"#
                    .into(),
            ),
            StatusCode::BAD_REQUEST,
            "is a string",
        ),
        (
            "negative dimension",
            infer,
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"input","shape":[-1,64],"datatype":"FP32","data":[{good_row}]}}]}}"#
            )),
            StatusCode::BAD_REQUEST,
            "dimension -1 is negative",
        ),
        (
            "absurd dimension",
            infer,
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"input","shape":[1000000000000,64],"datatype":"FP32","data":[{good_row}]}}]}}"#
            )),
            StatusCode::BAD_REQUEST,
            "more elements than",
        ),
        (
            "more rows than max_batch_size",
            infer,
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"input","shape":[9,64],"datatype":"FP32","data":[{}]}}]}}"#,
                row_json(9 * 64)
            )),
            StatusCode::BAD_REQUEST,
            "exceed the model's max_batch_size of 8",
        ),
        (
            "unknown output",
            infer,
            vec![],
            json(format!(
                r#"{{"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":[{good_row}]}}],"outputs":[{{"name":"logits"}}]}}"#
            )),
            StatusCode::BAD_REQUEST,
            "outputs[0].name",
        ),
        (
            "bad priority",
            infer,
            vec![],
            json(format!(
                r#"{{"parameters":{{"priority":7}},"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":[{good_row}]}}]}}"#
            )),
            StatusCode::BAD_REQUEST,
            "parameters.priority",
        ),
        (
            "binary_data_size beyond the bytes present",
            infer,
            bad_binary_size.0,
            bad_binary_size.1,
            StatusCode::BAD_REQUEST,
            "300 bytes declared but only 256 remain",
        ),
        (
            "binary_data_size short of the shape",
            infer,
            short_binary.0,
            short_binary.1,
            StatusCode::BAD_REQUEST,
            "needs 256 bytes, got 128",
        ),
        (
            "Inference-Header-Content-Length beyond the body",
            infer,
            header_too_long.0,
            header_too_long.1,
            StatusCode::BAD_REQUEST,
            "beyond the 2-byte body",
        ),
        (
            "body over max_body_bytes",
            infer,
            vec![],
            vec![b' '; 70 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "exceeds the limit of 65536 bytes",
        ),
        (
            "unknown endpoint",
            "/v2/nothing",
            vec![],
            vec![],
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_clear_4xx_and_the_server_keeps_serving() {
    let gateway = common::start(CONFIG).await;
    let (rows, labels) = common::digits_rows();
    for (case, path, headers, body, status, fragment) in cases() {
        let reply = gateway
            .send(Method::POST, path, &headers, Bytes::from(body))
            .await;
        assert_eq!(
            reply.status,
            status,
            "{case}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            error.contains(fragment),
            "{case}: error `{error}` lacks `{fragment}`"
        );
        // Nothing is lost: a good request right after still gets the right answer.
        let good = gateway
            .infer("digits", &common::digits_body(&rows[..1]))
            .await;
        assert_eq!(
            good.status,
            StatusCode::OK,
            "{case}: the server stopped serving"
        );
        assert_eq!(good.output("label")["data"][0], labels[0], "{case}");
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_refused_with_json() {
    let gateway = common::start(CONFIG).await;
    let reply = gateway.get("/v2/models/digits/infer").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(reply.json()["error"].as_str().unwrap().contains("GET"));
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_segments_are_percent_decoded() {
    let gateway = common::start(CONFIG).await;
    let cases: &[(&str, StatusCode)] = &[
        ("/v2/models/dig%69ts", StatusCode::OK),
        ("/v2/models/digits/versions/%31/ready", StatusCode::OK),
        ("/v2/%6Dodels/digits/stats", StatusCode::OK),
        // Not UTF-8 once decoded: no such route.
        ("/v2/models/%FF", StatusCode::NOT_FOUND),
        ("/v2/models/digits%2Fready", StatusCode::NOT_FOUND),
    ];
    for &(path, want) in cases {
        let reply = gateway.get(path).await;
        assert_eq!(reply.status, want, "{path}: {:?}", reply.body);
    }
    gateway.stop().await;
}
