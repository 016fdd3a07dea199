//! The gateway's request path in-process, on the real digits model and ONNX Runtime, without
//! sockets: a cache hit, a miss that runs the model (`cache: bypass`), a hit including the
//! HTTP JSON decode and encode around it, the same hit answered from the body memo, and what
//! the memo costs a body it has never seen. Batching is off (`max_batch_size = 0`) so a lone
//! request runs at once instead of waiting for the queue delay.
//!
//! Needs the ONNX Runtime library (`make runtime`); without it the bench prints why and exits.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;
use tollgate::api::http::infer::{decode, encode};
use tollgate::api::http::memo::{BodyId, BodyMemo};
use tollgate::config::Config;
use tollgate::gateway::{Credentials, Gateway, Protocol};
use tollgate::request::{CacheControl, InferRequest, RequestOptions};
use tollgate::tensor::{DataType, Tensor};

const CONFIG: &str = r#"
[cache]
enabled = true
max_bytes = "256MiB"

[[models]]
name = "digits"
version = "1"
path = "models/digits/1/model.onnx"
instances = 1
intra_op_threads = 1
max_batch_size = 0
cache = true
"#;

fn digits_row() -> Vec<f32> {
    (0..64).map(|i| ((i * 37) % 1024) as f32 / 64.0).collect()
}

fn request(cache: CacheControl) -> InferRequest {
    let data: Vec<u8> = digits_row().iter().flat_map(|v| v.to_le_bytes()).collect();
    InferRequest {
        model: "digits".into(),
        version: None,
        id: None,
        inputs: vec![Tensor {
            name: "input".into(),
            dtype: DataType::Fp32,
            shape: vec![1, 64],
            data: Bytes::from(data),
        }],
        outputs: Vec::new(),
        options: RequestOptions {
            cache,
            ..RequestOptions::default()
        },
    }
}

fn json_request_body() -> Bytes {
    json_body_with_first(digits_row()[0])
}

/// The digits row as a JSON body, its first element replaced by `first`.
fn json_body_with_first(first: f32) -> Bytes {
    let mut row = digits_row();
    row[0] = first;
    let numbers: Vec<String> = row.iter().map(|v| v.to_string()).collect();
    Bytes::from(format!(
        r#"{{"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":[{}]}}]}}"#,
        numbers.join(",")
    ))
}

fn bench_gateway(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config =
        Config::parse(CONFIG, &root.join("bench.toml")).expect("bench config is valid");
    // Every request is written to the usage ledger; keep this bench's ledger out of the way.
    let ledger_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tollgate-bench-e2e-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&ledger_dir);
    config.ledger.path = ledger_dir.join("ledger.sqlite");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The server installs this recorder at start; the request path records into it.
    tollgate::telemetry::metrics_handle();
    let (_stop, shutdown) = tollgate::shutdown::channel();
    let gateway = match runtime.block_on(async { Gateway::start(config, shutdown) }) {
        Ok(gateway) => gateway,
        Err(error) => {
            eprintln!("e2e bench skipped: the gateway could not start: {error}");
            return;
        }
    };
    let anonymous = Credentials::default();
    let hit_request = request(CacheControl::default());
    let bypass_request = request(CacheControl::from_parameter("bypass").expect("known value"));
    runtime
        .block_on(gateway.infer(hit_request.clone(), Protocol::Http, &anonymous))
        .expect("the first request fills the cache");

    let mut group = c.benchmark_group("e2e_digits");
    group.bench_function("infer_cache_hit", |b| {
        b.iter(|| {
            runtime
                .block_on(gateway.infer(black_box(hit_request.clone()), Protocol::Http, &anonymous))
                .expect("hit")
        })
    });
    group.bench_function("infer_miss_bypass", |b| {
        b.iter(|| {
            runtime
                .block_on(gateway.infer(
                    black_box(bypass_request.clone()),
                    Protocol::Http,
                    &anonymous,
                ))
                .expect("model run")
        })
    });
    // A miss through the cache: every iteration sends an input never seen before, so it pays
    // for the key, the lookup, the single-flight entry and the insert on top of the model run.
    // Side by side with the bypass above, the difference is what the cache costs a miss.
    let cache_request = request(CacheControl::default());
    let mut counter = 0u64;
    group.bench_function("infer_miss_cache_on", |b| {
        b.iter(|| {
            counter += 1;
            let unique = fresh_input(&cache_request, counter);
            runtime
                .block_on(gateway.infer(unique, Protocol::Http, &anonymous))
                .expect("model run")
        })
    });
    // The same input preparation, sent with the cache bypassed, so both differ only in the cache.
    group.bench_function("infer_miss_bypass_fresh_input", |b| {
        b.iter(|| {
            counter += 1;
            let unique = fresh_input(&bypass_request, counter);
            runtime
                .block_on(gateway.infer(unique, Protocol::Http, &anonymous))
                .expect("model run")
        })
    });
    let body = json_request_body();
    group.bench_function("http_json_decode_infer_encode_hit", |b| {
        b.iter(|| {
            let (request, encoding) =
                decode("digits", None, black_box(&body), None).expect("valid body");
            let response = runtime
                .block_on(gateway.infer(request, Protocol::Http, &anonymous))
                .expect("hit");
            encode(&response.response, &encoding)
        })
    });
    // The same hit answered from the body memo: the body is fingerprinted and digested
    // instead of decoded, validated and keyed. Side by side with the decoded hit above.
    let Some(memo) = BodyMemo::new(65_536) else {
        return;
    };
    let id = BodyId {
        model: "digits",
        version: None,
        header_length: None,
        body: &body,
    };
    let (mut request, encoding) = decode("digits", None, &body, None).expect("valid body");
    request.options.recall = true;
    let response = runtime
        .block_on(gateway.infer(request, Protocol::Http, &anonymous))
        .expect("hit");
    let Some(recall) = response.recall else {
        eprintln!("e2e bench: a hit that asked for a recall got none");
        return;
    };
    memo.remember(memo.fingerprint(&id), &id, recall, encoding);
    group.bench_function("http_recalled_hit_infer_encode", |b| {
        b.iter(|| {
            let remembered = memo
                .find(memo.fingerprint(black_box(&id)), &id)
                .expect("remembered");
            let response = runtime
                .block_on(gateway.infer_recalled(&remembered.recall, Protocol::Http, &anonymous))
                .expect("still cached")
                .expect("hit");
            encode(&response.response, &remembered.encoding)
        })
    });
    // What every other request pays for the memo: a body never remembered is fingerprinted and
    // turned away.
    let unseen = json_body_with_first(0.5);
    group.bench_function("http_memo_probe_unseen", |b| {
        b.iter(|| {
            let id = BodyId {
                model: "digits",
                version: None,
                header_length: None,
                body: black_box(&unseen),
            };
            memo.find(memo.fingerprint(&id), &id).is_none()
        })
    });
    group.bench_function("block_on_overhead", |b| {
        b.iter(|| runtime.block_on(async { black_box(1) }))
    });
    group.finish();
    drop(gateway);
    let _ = std::fs::remove_dir_all(&ledger_dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_gateway
}
criterion_main!(benches);

/// The request with a different (finite) first element for each `n`: 16 + n / 2^20.
fn fresh_input(template: &InferRequest, n: u64) -> InferRequest {
    let mut unique = template.clone();
    let mut data = unique.inputs[0].data.to_vec();
    let value = 16.0f32 + (n % (1 << 22)) as f32 / (1u64 << 20) as f32;
    data[..4].copy_from_slice(&value.to_le_bytes());
    unique.inputs[0].data = Bytes::from(data);
    unique
}
