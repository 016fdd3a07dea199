//! ONNX Runtime called directly in-process, with no gateway around it: the ceiling the gateway's
//! compute-bound throughput is compared against. It uses the gateway's own engine
//! (`OnnxEngine::run`, the same library found the same way and the same session options), so the
//! only thing missing is the gateway: HTTP, decoding, the cache, the batcher and its threads.
//!
//! Throughput is in rows (elements), so criterion prints rows/s per batch size.
//!   * `ort_direct_alexnet/batch/N`: the generated AlexNet (`scripts/make_alexnet.py`) at
//!     batch sizes 1, 4, 8, 16 (override with TOLLGATE_BENCH_BATCHES="1,8"), with
//!     TOLLGATE_BENCH_ORT_THREADS intra-op threads (default 2). Skipped if the model is missing.
//!   * `ort_direct_digits/batch/N`: the digits MLP at batch 1 and 64 with one thread, the
//!     per-call floor of the overhead-bound model.

use bytes::Bytes;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use std::path::Path;
use std::time::Duration;
use tollgate::backend::onnx::{OnnxEngine, OnnxSettings};
use tollgate::backend::{BatchInput, Engine};
use tollgate::config::Device;
use tollgate::tensor::DataType;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn batch_sizes(default: &[usize]) -> Vec<usize> {
    match std::env::var("TOLLGATE_BENCH_BATCHES") {
        Ok(list) => {
            let parsed: Vec<usize> = list
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .filter(|&n| n > 0)
                .collect();
            if parsed.is_empty() {
                default.to_vec()
            } else {
                parsed
            }
        }
        Err(_) => default.to_vec(),
    }
}

fn load(model: &str, relative: &str, threads: usize) -> Option<OnnxEngine> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    if !path.is_file() {
        eprintln!(
            "ort_direct: {} is missing; skipping {model}",
            path.display()
        );
        return None;
    }
    let settings = OnnxSettings {
        model: model.to_string(),
        path,
        device: Device::Cpu,
        cpu_fallback: false,
        intra_op_threads: threads,
        // ONNX Runtime's own default: the runtime alone, at its best, is the limit measured.
        intra_op_spinning: true,
        runtime: tollgate::config::RuntimeLibrary::Auto,
    };
    match OnnxEngine::load(&settings) {
        Ok(engine) => Some(engine),
        Err(error) => {
            eprintln!("ort_direct: cannot load {model}: {error}; skipping");
            None
        }
    }
}

/// One FP32 input of `rows` rows of `row_elements` values, multiples of 1/64 in [0, 16) like
/// the load generator's, as a single part (a batch of one member).
fn fp32_input(name: &str, rows: usize, row_shape: &[usize]) -> BatchInput {
    let per_row: usize = row_shape.iter().product();
    let data: Vec<u8> = (0..rows * per_row)
        .flat_map(|i| (((i * 37) % 1024) as f32 / 64.0).to_le_bytes())
        .collect();
    let mut shape = vec![rows];
    shape.extend_from_slice(row_shape);
    BatchInput {
        name: name.to_string(),
        dtype: DataType::Fp32,
        shape,
        parts: vec![Bytes::from(data)],
    }
}

fn bench_model(
    c: &mut Criterion,
    group_name: &str,
    mut engine: OnnxEngine,
    input: &str,
    row_shape: &[usize],
    sizes: &[usize],
    heavy: bool,
) {
    let mut group = c.benchmark_group(group_name);
    if heavy {
        // Each AlexNet call takes 50-900 ms: one call per sample, as few samples as allowed.
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
    }
    for &rows in sizes {
        let inputs = [fp32_input(input, rows, row_shape)];
        if let Err(error) = engine.run(&inputs) {
            eprintln!("ort_direct: {group_name} batch {rows} failed: {error}; skipping it");
            continue;
        }
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_with_input(BenchmarkId::new("batch", rows), &inputs, |b, inputs| {
            b.iter(|| engine.run(inputs).expect("the model runs"))
        });
    }
    group.finish();
}

fn bench_ort(c: &mut Criterion) {
    let threads = env_number("TOLLGATE_BENCH_ORT_THREADS", 2);
    if let Some(engine) = load("alexnet", "models/alexnet/1/model.onnx", threads) {
        eprintln!(
            "ort_direct: alexnet with {threads} intra-op thread(s) on {}",
            engine.provider()
        );
        let sizes = batch_sizes(&[1, 4, 8, 16]);
        bench_model(
            c,
            "ort_direct_alexnet",
            engine,
            "data_0",
            &[3, 224, 224],
            &sizes,
            true,
        );
    }
    if std::env::var_os("TOLLGATE_BENCH_ONLY_ALEXNET").is_none() {
        if let Some(engine) = load("digits", "models/digits/1/model.onnx", 1) {
            bench_model(
                c,
                "ort_direct_digits",
                engine,
                "input",
                &[64],
                &[1, 64],
                false,
            );
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_ort
}
criterion_main!(benches);
