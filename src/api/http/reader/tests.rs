//! The reader against serde: whatever it accepts, serde accepts and reads the same way, and
//! data it has read equals what `data::parse` reads from the same text.

use super::*;

/// Everything a header holds, in one comparable line.
fn summary(header: &RequestHeader<'_>) -> String {
    let inputs: Vec<String> = header
        .inputs
        .iter()
        .map(|i| {
            format!(
                "{}|{:?}|{}|{:?}|{:?}",
                i.name, i.shape, i.datatype, i.parameters, i.data
            )
        })
        .collect();
    let outputs: Vec<String> = header
        .outputs
        .iter()
        .map(|o| format!("{}|{:?}", o.name, o.parameters))
        .collect();
    format!(
        "{:?} {:?} {inputs:?} {outputs:?}",
        header.id, header.parameters
    )
}

/// Checks `json` both ways; whether the reader took it.
fn agrees(json: &[u8]) -> bool {
    let Some(fast) = read(json) else {
        return false;
    };
    let slow: RequestHeader<'_> = match serde_json::from_slice(json) {
        Ok(header) => header,
        Err(e) => panic!(
            "the reader took what serde refuses ({e}): {}",
            String::from_utf8_lossy(json)
        ),
    };
    assert_eq!(
        summary(&fast),
        summary(&slow),
        "{}",
        String::from_utf8_lossy(json)
    );
    for input in &fast.inputs {
        if let (Some((dtype, bytes)), Some(text)) = (&input.read, input.data) {
            let size = dtype.element_size().unwrap_or(1);
            assert_eq!(
                crate::kserve::json::parse(text, *dtype, bytes.len() / size).as_ref(),
                Ok(bytes),
                "{text}"
            );
        }
    }
    true
}

const TAKEN: &[&str] = &[
    r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[0.5,-2,1e3]}]}"#,
    // The load generator's order: data before its datatype.
    r#"{"inputs": [{"data": [0.0, 0.578125, 13.296875], "datatype": "FP32", "name": "input", "shape": [1, 3]}]}"#,
    // tritonclient's binary form: sizes in parameters, no data.
    r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT64","parameters":{"binary_data_size":16}}],"outputs":[{"name":"y","parameters":{"binary_data":true}}],"parameters":{"binary_data_output":true}}"#,
    r#" { "id" : "r1" , "parameters" : { "priority" : 1 , "timeout" : 2.5e3 , "cache" : "bypass" } , "inputs" : [ { "name" : "a" , "shape" : [ 2 , 2 ] , "datatype" : "INT32" , "data" : [ [ 1 , -2 ] , [ 3 , 4 ] ] } ] , "outputs" : [ ] } "#,
    "{\"inputs\":[{\"name\":\"b\",\"shape\":[3],\"datatype\":\"BOOL\",\"data\":[true,false,1]}]}",
    r#"{"inputs":[{"name":"d","shape":[2],"datatype":"FP64","data":[0.1, 123456789.123456789]}]}"#,
    // Guessed FP32, then INT8: read again as INT8 by the caller.
    r#"{"inputs":[{"data":[1,2,300],"name":"i","shape":[3],"datatype":"INT8"}]}"#,
    r#"{"inputs":[{"data":[true,false],"name":"i","shape":[2],"datatype":"BOOL"}]}"#,
    r#"{"inputs":[{"name":"x","shape":[0],"datatype":"FP32","data":[]}],"outputs":[{"name":"y"}]}"#,
    "{\"inputs\":[{\"name\":\"caf\u{e9}\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1.0]}]}",
    r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[-0.0]},{"name":"y","shape":[1],"datatype":"FP32","data":[3.4028235e38]}]}"#,
    r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"NOPE","data":[1]}]}"#,
];

const DECLINED: &[&str] = &[
    // Valid, but left to serde.
    r#"{"inputs":[{"name":"x\"y","shape":[1],"datatype":"FP32","data":[1]}]}"#,
    r#"{"id":null,"inputs":[]}"#,
    r#"{"inputs":[],"extra":1}"#,
    r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["a"]}]}"#,
    r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"parameters":{"nested":{"a":1}}}"#,
    r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"p":null}}]}"#,
    r#"{"inputs":[{"name":"x","shape":[1.0],"datatype":"FP32","data":[1]}]}"#,
    // Refused by serde too.
    r#"{"inputs":[],"inputs":[]}"#,
    r#"{"inputs":[{"name":"x","name":"y","shape":[1],"datatype":"FP32"}]}"#,
    r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[01]}]}"#,
    r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1.]}]}"#,
    r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[.5]}]}"#,
    r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[+1]}]}"#,
    r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,,2]}]}"#,
    r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1,]}]}"#,
    r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1e]}]}"#,
    r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[NaN]}]}"#,
    r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[300]}]}"#,
    r#"{"inputs":[{"shape":[1],"datatype":"FP32","data":[1]}]}"#,
    r#"{"outputs":[]}"#,
    r#"{"inputs":[]} x"#,
    r#"{"inputs":[]"#,
    "",
    "[]",
];

#[test]
fn the_usual_bodies_are_read_as_serde_reads_them() {
    for body in TAKEN {
        assert!(agrees(body.as_bytes()), "declined: {body}");
    }
}

#[test]
fn what_the_reader_does_not_handle_is_left_to_serde() {
    for body in DECLINED {
        assert!(read(body.as_bytes()).is_none(), "taken: {body}");
    }
}

#[test]
fn data_read_on_the_way_is_what_parse_reads() {
    let body = r#"{"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[[0.5,-2,1e3],[1.2345678,1e-7,65504]]},{"data":[1,2],"name":"i","shape":[2],"datatype":"INT64"}]}"#;
    let header = read(body.as_bytes()).expect("taken");
    let (dtype, bytes) = header.inputs[0].read.clone().expect("read");
    assert_eq!(dtype, DataType::Fp32);
    let expected: Vec<u8> = [0.5f32, -2.0, 1e3, 1.234_567_8, 1e-7, 65504.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(bytes, expected);
    // Guessed as FP32 before its datatype came: kept as FP32, which the caller then ignores.
    assert_eq!(
        header.inputs[1].read.as_ref().map(|r| r.0),
        Some(DataType::Fp32)
    );
}

/// Random edits of the usual bodies: whatever the reader takes, serde takes the same way.
#[test]
fn edited_bodies_never_make_the_reader_disagree_with_serde() {
    let alphabet = b" ,:[]{}\"-.0123456789eE+truefalsn\\";
    let mut state: u64 = 0x5eed;
    let mut next = move |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % n.max(1)
    };
    let mut taken = 0;
    for round in 0..20_000 {
        let mut body = TAKEN[round % TAKEN.len()].as_bytes().to_vec();
        for _ in 0..1 + next(3) {
            let at = next(body.len() + 1);
            match next(3) {
                0 if at < body.len() => {
                    body.remove(at);
                }
                1 => body.insert(at, alphabet[next(alphabet.len())]),
                _ if at < body.len() => body[at] = alphabet[next(alphabet.len())],
                _ => {}
            }
        }
        taken += usize::from(agrees(&body));
    }
    // Most single edits break a body; some keep it valid, and those must agree.
    assert!(taken > 100, "only {taken} edited bodies were taken");
}
