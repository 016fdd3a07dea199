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
