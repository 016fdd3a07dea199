//! Batch assembly for 64 single-row digits requests: gathering the members' inputs into one
//! batch input (shared parts, no copy), concatenating them into the contiguous buffer an engine
//! needs, and scattering the batch outputs back into each member's rows.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use tollgate::batch::split::{gather, scatter};
use tollgate::tensor::{DataType, Tensor};

const MEMBERS: usize = 64;

fn member(index: usize) -> Vec<Tensor> {
    let data: Vec<u8> = (0..256).map(|i| ((i + index * 7) % 251) as u8).collect();
    vec![Tensor {
        name: "input".into(),
        dtype: DataType::Fp32,
        shape: vec![1, 64],
        data: Bytes::from(data),
    }]
}

fn batch_outputs() -> Vec<Tensor> {
    vec![
        Tensor {
            name: "label".into(),
            dtype: DataType::Int64,
            shape: vec![MEMBERS],
            data: Bytes::from(vec![3u8; MEMBERS * 8]),
        },
        Tensor {
            name: "probabilities".into(),
            dtype: DataType::Fp32,
            shape: vec![MEMBERS, 10],
            data: Bytes::from(vec![1u8; MEMBERS * 40]),
        },
    ]
}

fn bench_batch(c: &mut Criterion) {
    let members: Vec<Vec<Tensor>> = (0..MEMBERS).map(member).collect();
    let views: Vec<&[Tensor]> = members.iter().map(Vec::as_slice).collect();
    let outputs = batch_outputs();
    let rows = vec![1usize; MEMBERS];

    let mut group = c.benchmark_group("batch_64x1_digits");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    group.bench_function("gather", |b| b.iter(|| gather(black_box(&views))));
    group.bench_function("gather_concatenate", |b| {
        b.iter(|| {
            let inputs = gather(black_box(&views));
            inputs.iter().map(|i| i.concatenated()).collect::<Vec<_>>()
        })
    });
    group.bench_function("scatter", |b| {
        // scatter takes the batch's outputs; handing it a copy is left out of the timing.
        b.iter_batched(
            || outputs.clone(),
            |outputs| scatter(black_box(outputs), black_box(&rows)).expect("rows add up"),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("gather_scatter", |b| {
        b.iter_batched(
            || outputs.clone(),
            |outputs| {
                let inputs = gather(black_box(&views));
                let split = scatter(black_box(outputs), &rows).expect("rows add up");
                (inputs, split)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_batch
}
criterion_main!(benches);
