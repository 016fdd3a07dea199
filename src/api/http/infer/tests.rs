//! Decoding checks that need no model: framing, sizes and the binary extension.

use super::*;

fn binary_body(json: &str, payload: &[u8]) -> (Bytes, usize) {
    let mut body = json.as_bytes().to_vec();
    body.extend_from_slice(payload);
    (Bytes::from(body), json.len())
}

#[test]
fn json_and_binary_carry_the_same_tensor() {
    let json = r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[[1.0,2.0]]}]}"#;
    let (from_json, _) = decode("m", None, &Bytes::from(json), None).unwrap();
    let payload: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#;
    let (body, length) = binary_body(header, &payload);
    let (from_binary, encoding) = decode("m", Some("1"), &body, Some(length)).unwrap();
    assert_eq!(from_json.inputs, from_binary.inputs);
    assert!(encoding.is_binary("y"));
    assert_eq!(from_binary.version.as_deref(), Some("1"));
}

#[test]
fn malformed_bodies_name_the_field() {
    let cases: &[(&str, &[u8], Option<usize>, &str)] = &[
        ("{", b"", None, "not a valid KServe V2 inference request"),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP33","data":[1]}]}"#,
            b"",
            None,
            "inputs[0].datatype",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[-1,2],"datatype":"FP32","data":[1]}]}"#,
            b"",
            None,
            "dimension -1 is negative",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1000000000000,64],"datatype":"FP32","data":[1]}]}"#,
            b"",
            None,
            "more elements than",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1]}]}"#,
            b"",
            None,
            "inputs[0].data",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32"}]}"#,
            b"",
            None,
            "missing",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#,
            b"",
            None,
            "Inference-Header-Content-Length",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":16}}]}"#,
            b"12345678",
            Some(0),
            "only 8 remain",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#,
            b"12345678",
            Some(0),
            "not claimed",
        ),
        (
            r#"{"inputs":[],"parameters":{"priority":"high"}}"#,
            b"",
            None,
            "parameters.priority",
        ),
    ];
    for (json, payload, header_length, fragment) in cases {
        let (body, length) = binary_body(json, payload);
        let header_length = header_length.map(|_| length);
        let message = decode("m", None, &body, header_length)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(fragment),
            "{json}: `{message}` lacks `{fragment}`"
        );
    }
    let err = decode("m", None, &Bytes::from_static(b"{}"), Some(10)).unwrap_err();
    assert!(err.to_string().contains("beyond"));
}

fn response(id: Option<&str>, outputs: Vec<Tensor>) -> InferResponse {
    InferResponse {
        model: "m\"odel".into(),
        version: "1".into(),
        id: id.map(str::to_string),
        outputs: outputs.into(),
        served: crate::request::Served {
            request_id: "abc-00000001".into(),
            cache: crate::request::CacheStatus::Hit,
            rows: 1,
            batch_rows: 0,
            queue_us: 0,
            compute_us: 0,
            cost_usd: 0.0,
            saved_usd: 1.25e-7,
            cold_start_us: 0,
            device: "cpu".into(),
            variant: None,
        },
    }
}

fn fp32(name: &str, values: &[f32]) -> Tensor {
    Tensor {
        name: name.into(),
        dtype: DataType::Fp32,
        shape: vec![1, values.len()],
        data: values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
    }
}

#[test]
fn encoded_json_is_valid_escaped_and_complete() {
    let outputs = vec![fp32("y", &[0.5, -2.0]), fp32("z\n", &[1.0])];
    let cases: &[(Option<&str>, Option<&str>)] =
        &[(None, None), (Some("a\"b\\c"), Some("a\"b\\c"))];
    for (id, expected_id) in cases {
        let (body, length) = encode(&response(*id, outputs.clone()), &OutputEncoding::default());
        assert_eq!(length, None);
        let json: Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(json["model_name"], "m\"odel");
        assert_eq!(json["model_version"], "1");
        assert_eq!(json["id"].as_str(), *expected_id);
        let parameters = &json["parameters"];
        assert_eq!(parameters["cache"], "hit");
        assert_eq!(parameters["request_id"], "abc-00000001");
        assert_eq!(parameters["batch_size"], 0);
        assert_eq!(parameters["saved_usd"].as_f64(), Some(1.25e-7));
        assert_eq!(json["outputs"][0]["data"], serde_json::json!([0.5, -2.0]));
        assert_eq!(json["outputs"][0]["shape"], serde_json::json!([1, 2]));
        assert_eq!(json["outputs"][1]["name"], "z\n");
        assert_eq!(json["outputs"][1]["datatype"], "FP32");
    }
}

#[test]
fn binary_outputs_follow_the_json_header() {
    let outputs = vec![fp32("y", &[0.5, -2.0]), fp32("z", &[1.0])];
    let encoding = OutputEncoding {
        binary: vec!["z".into()],
        all_binary: false,
    };
    let (body, length) = encode(&response(None, outputs), &encoding);
    let length = length.expect("a binary output gives a header length");
    let json: Value = serde_json::from_slice(&body[..length]).expect("valid JSON header");
    assert_eq!(json["outputs"][1]["parameters"]["binary_data_size"], 4);
    assert!(json["outputs"][1].get("data").is_none());
    assert_eq!(json["outputs"][0]["data"], serde_json::json!([0.5, -2.0]));
    assert_eq!(&body[length..], &1.0f32.to_le_bytes());
}
