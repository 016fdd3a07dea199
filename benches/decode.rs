//! Wire decoding and encoding of KServe V2 REST bodies: JSON tensors and the binary tensor
//! extension for a 64-row digits request and a 1 MiB FP32 tensor, and the JSON encoding of
//! outputs. Throughput is in body bytes, so criterion reports MB/s of what the server reads or
//! writes (the JSON text of a tensor is about twice its binary size).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use tollgate::api::http::infer::{decode, encode};
use tollgate::kserve::json::{parse as parse_json_data, write as write_json_data};
use tollgate::request::{CacheStatus, InferResponse, Served};
use tollgate::tensor::{DataType, Tensor};

/// Deterministic pseudo-random FP32 inputs: multiples of 1/64 in [0, 16), as the load
/// generator sends, so JSON text has the realistic length of such numbers.
fn input_values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % 1024) as f32 / 64.0
        })
        .collect()
}

/// Output-like floats (softmax probabilities): full-precision values with long shortest
/// representations, the expensive case for JSON encoding.
fn output_values(count: usize) -> Vec<f32> {
    let mut state = 0x9e3779b97f4a7c15u64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn json_numbers(values: &[f32]) -> String {
    let parts: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// A JSON-data request body for one FP32 input.
fn json_body(name: &str, shape: &[usize], values: &[f32]) -> Bytes {
    let shape_text: Vec<String> = shape.iter().map(usize::to_string).collect();
    Bytes::from(format!(
        r#"{{"inputs":[{{"name":"{name}","shape":[{}],"datatype":"FP32","data":{}}}]}}"#,
        shape_text.join(","),
        json_numbers(values)
    ))
}

/// A binary-extension request body for one FP32 input, and its JSON header length.
fn binary_body(name: &str, shape: &[usize], values: &[f32]) -> (Bytes, usize) {
    let raw = le_bytes(values);
    let shape_text: Vec<String> = shape.iter().map(usize::to_string).collect();
    let header = format!(
        r#"{{"inputs":[{{"name":"{name}","shape":[{}],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}],"parameters":{{"binary_data_output":true}}}}"#,
        shape_text.join(","),
        raw.len()
    );
    let header_length = header.len();
    let mut body = header.into_bytes();
    body.extend_from_slice(&raw);
    (Bytes::from(body), header_length)
}

struct Case {
    label: &'static str,
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            label: "digits_64rows",
            shape: vec![64, 64],
            values: input_values(64 * 64, 1),
        },
        Case {
            label: "fp32_1MiB",
            shape: vec![1, 262_144],
            values: input_values(262_144, 2),
        },
    ]
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for case in cases() {
        let json = json_body("input", &case.shape, &case.values);
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_with_input(BenchmarkId::new("json", case.label), &json, |b, body| {
            b.iter(|| decode("digits", None, black_box(body), None).expect("valid JSON body"))
        });

        let (binary, header_length) = binary_body("input", &case.shape, &case.values);
        group.throughput(Throughput::Bytes(binary.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("binary", case.label),
            &binary,
            |b, body| {
                b.iter(|| {
                    decode("digits", None, black_box(body), Some(header_length))
                        .expect("valid binary body")
                })
            },
        );

        // The tensor-data parser alone, without the surrounding serde pass over the body.
        let text = json_numbers(&case.values);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("json_data_only", case.label),
            &text,
            |b, text| {
                b.iter(|| {
                    parse_json_data(black_box(text), DataType::Fp32, case.values.len())
                        .expect("numbers")
                })
            },
        );
    }
    group.finish();
}

fn response(outputs: Vec<Tensor>) -> InferResponse {
    InferResponse {
        model: "digits".into(),
        version: "1".into(),
        id: None,
        outputs: outputs.into(),
        served: Served {
            request_id: "0123abcd-00000001".into(),
            cache: CacheStatus::Miss,
            rows: 64,
            batch_rows: 64,
            queue_us: 812,
            compute_us: 95,
            cost_usd: 4.1e-11,
            saved_usd: 0.0,
            cold_start_us: 0,
            device: "cpu".into(),
            variant: None,
        },
    }
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let labels: Vec<u8> = (0..64i64).flat_map(|i| (i % 10).to_le_bytes()).collect();
    let digits = response(vec![
        Tensor {
            name: "label".into(),
            dtype: DataType::Int64,
            shape: vec![64],
            data: Bytes::from(labels),
        },
        Tensor {
            name: "probabilities".into(),
            dtype: DataType::Fp32,
            shape: vec![64, 10],
            data: Bytes::from(le_bytes(&output_values(640))),
        },
    ]);
    let large = response(vec![Tensor {
        name: "output".into(),
        dtype: DataType::Fp32,
        shape: vec![1, 262_144],
        data: Bytes::from(le_bytes(&output_values(262_144))),
    }]);
    // The encoding a JSON request gets back (all outputs as JSON numbers), taken from decode.
    let json_request = json_body("input", &[1, 4], &[0.0; 4]);
    let (_, json_encoding) = decode("digits", None, &json_request, None).expect("valid body");
    let (binary_request, header_length) = binary_body("input", &[1, 4], &[0.0; 4]);
    let (_, binary_encoding) =
        decode("digits", None, &binary_request, Some(header_length)).expect("valid body");

    for (label, value) in [("digits_64rows", &digits), ("fp32_1MiB", &large)] {
        let size = encode(value, &json_encoding).0.len();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("json", label), value, |b, value| {
            b.iter(|| encode(black_box(value), &json_encoding))
        });
        let size = encode(value, &binary_encoding).0.len();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("binary", label), value, |b, value| {
            b.iter(|| encode(black_box(value), &binary_encoding))
        });
    }
    // The number writer alone for the large tensor.
    let Some(first) = large.outputs.iter().next() else {
        return;
    };
    let data = first.data.clone();
    let mut out = Vec::with_capacity(data.len() * 3);
    write_json_data(&mut out, DataType::Fp32, &data);
    group.throughput(Throughput::Bytes(out.len() as u64));
    group.bench_function("json_data_only/fp32_1MiB", |b| {
        b.iter(|| {
            out.clear();
            write_json_data(&mut out, DataType::Fp32, black_box(&data));
            out.len()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_decode, bench_encode
}
criterion_main!(benches);
