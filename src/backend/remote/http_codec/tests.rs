//! The client codec checked against our own server codec: whatever one side writes, the other
//! must read back to the same tensors, in both the binary and the JSON form.

use super::*;
use crate::api::http::infer;
use crate::request::{CacheStatus, InferResponse, Served};
use crate::tensor::DataType;

fn floats(values: &[f32]) -> Bytes {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

fn words(items: &[&str]) -> Bytes {
    crate::tensor::strings::encode(items.iter().map(|w| w.as_bytes()))
        .unwrap()
        .into()
}

/// A batch of two members (one row each) of a [N, 3] FP32 input and a [N, 2] BYTES one.
fn batch() -> Vec<BatchInput> {
    vec![
        BatchInput {
            name: "x".into(),
            dtype: DataType::Fp32,
            shape: vec![2, 3],
            parts: vec![floats(&[1.0, 2.5, -3.0]), floats(&[0.1, 0.0, 7.0])],
        },
        BatchInput {
            name: "w".into(),
            dtype: DataType::Bytes,
            shape: vec![2, 2],
            parts: vec![words(&["a \"quoted\" word", ""]), words(&["é", "\n"])],
        },
    ]
}

fn response(outputs: Vec<Tensor>) -> InferResponse {
    InferResponse {
        model: "m".into(),
        version: "1".into(),
        id: None,
        outputs: outputs.into(),
        served: Served {
            request_id: "r".into(),
            cache: CacheStatus::Miss,
            rows: 2,
            batch_rows: 2,
            queue_us: 0,
            compute_us: 0,
            cost_usd: 0.0,
            saved_usd: 0.0,
            cold_start_us: 0,
            device: "cpu".into(),
            variant: None,
        },
    }
}

fn outputs() -> Vec<Tensor> {
    vec![
        Tensor {
            name: "label".into(),
            dtype: DataType::Int64,
            shape: vec![2],
            data: [3i64, -1]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        },
        Tensor {
            name: "p".into(),
            dtype: DataType::Fp32,
            shape: vec![2, 2],
            data: floats(&[0.25, 0.75, 1.0, 0.0]),
        },
        Tensor {
            name: "text".into(),
            dtype: DataType::Bytes,
            shape: vec![2],
            data: words(&["ünïcode", ""]),
        },
    ]
}

#[test]
fn requests_read_back_as_the_batch_in_either_form() {
    let wanted = vec!["label".to_string(), "p".to_string(), "text".to_string()];
    for binary in [true, false] {
        let body = encode_request(&batch(), &wanted, binary).unwrap();
        assert_eq!(body.header_length.is_some(), binary);
        let (request, _) = infer::decode("m", None, &body.bytes, body.header_length).unwrap();
        for (input, sent) in request.inputs.iter().zip(batch()) {
            assert_eq!(input.shape, sent.shape, "binary={binary}");
            assert_eq!(input.dtype, sent.dtype, "binary={binary}");
            assert_eq!(
                input.data,
                Bytes::from(sent.concatenated()),
                "binary={binary}"
            );
        }
        let named = if binary { wanted.clone() } else { Vec::new() };
        assert_eq!(request.outputs, named, "binary={binary}");
    }
}

#[test]
fn responses_read_back_as_the_outputs_in_either_form() {
    // JSON outputs: the server's default encoding.
    let (body, length) = infer::encode(&response(outputs()), &Default::default());
    assert_eq!(length, None);
    assert_eq!(
        decode_response(&Bytes::from(body), None).unwrap(),
        outputs()
    );
    // Binary outputs: the encoding a binary request of ours asks for.
    let request =
        encode_request(&batch(), &["label".into(), "p".into(), "text".into()], true).unwrap();
    let (_, encoding) = infer::decode("m", None, &request.bytes, request.header_length).unwrap();
    let (body, length) = infer::encode(&response(outputs()), &encoding);
    assert!(length.is_some());
    assert_eq!(
        decode_response(&Bytes::from(body), length).unwrap(),
        outputs()
    );
}

#[test]
fn malformed_responses_are_refused_with_a_reason() {
    let cases: &[(&str, Option<usize>, &str)] = &[
        ("{}", None, "not a KServe V2"),
        (
            r#"{"outputs":[{"name":"a","datatype":"FP32","shape":[2],"data":[1]}]}"#,
            None,
            "1 elements",
        ),
        (
            r#"{"outputs":[{"name":"a","datatype":"FLOAT","shape":[1],"data":[1]}]}"#,
            None,
            "unknown datatype",
        ),
        (
            r#"{"outputs":[{"name":"a","datatype":"FP32","shape":[-1],"data":[1]}]}"#,
            None,
            "negative",
        ),
        (
            r#"{"outputs":[{"name":"a","datatype":"FP32","shape":[1]}]}"#,
            None,
            "no data",
        ),
        (
            r#"{"outputs":[{"name":"a","datatype":"BYTES","shape":[2],"data":["x"]}]}"#,
            None,
            "1 elements",
        ),
        (
            r#"{"outputs":[{"name":"a","datatype":"BYTES","shape":[1],"data":[7]}]}"#,
            None,
            "not a string",
        ),
        (
            r#"{"outputs":[{"name":"a","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":8}}]}"#,
            None,
            "more than the body holds",
        ),
        (r#"{"outputs":[]}"#, Some(999), "beyond"),
    ];
    for (json, length, fragment) in cases {
        let message = decode_response(&Bytes::from(json.to_string()), *length).unwrap_err();
        assert!(
            message.contains(fragment),
            "{json}: `{message}` lacks `{fragment}`"
        );
    }
}

#[test]
fn error_bodies_and_metadata_decode() {
    assert_eq!(error_message(br#"{"error":"bad input"}"#), "bad input");
    assert_eq!(
        error_message(b"  upstream exploded \n"),
        "upstream exploded"
    );
    assert_eq!(error_message(b""), "(empty body)");
    let long = "x".repeat(1000);
    assert!(error_message(long.as_bytes()).chars().count() < 400);
    let metadata = decode_metadata(
        br#"{"name":"d","versions":["1"],"platform":"onnxruntime_onnx",
            "inputs":[{"name":"input","datatype":"FP32","shape":[-1,64]}],
            "outputs":[{"name":"label","datatype":"INT64","shape":[-1]}],"parameters":{"x":1}}"#,
    )
    .unwrap();
    assert_eq!(metadata.platform, "onnxruntime_onnx");
    assert_eq!(metadata.spec.inputs[0].shape, vec![-1, 64]);
    assert_eq!(metadata.spec.outputs[0].dtype, DataType::Int64);
}

#[test]
fn bytes_that_are_not_text_go_binary_and_never_into_json() {
    // Our front end answers such an output in binary even when JSON was asked for.
    let raw = Tensor {
        name: "blob".into(),
        dtype: DataType::Bytes,
        shape: vec![1],
        data: crate::tensor::strings::encode([&b"\xff\x00\xfe"[..]])
            .unwrap()
            .into(),
    };
    let (body, length) = infer::encode(&response(vec![raw.clone()]), &Default::default());
    assert!(length.is_some());
    assert_eq!(
        decode_response(&Bytes::from(body), length).unwrap(),
        vec![raw.clone()]
    );
    // A JSON-only upstream cannot be sent them.
    let input = BatchInput {
        name: "blob".into(),
        dtype: DataType::Bytes,
        shape: vec![1],
        parts: vec![raw.data.clone()],
    };
    let message = encode_request(std::slice::from_ref(&input), &[], false).unwrap_err();
    assert!(message.contains("not UTF-8"), "{message}");
    assert!(encode_request(&[input], &[], true).is_ok());
}
