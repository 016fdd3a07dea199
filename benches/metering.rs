//! The per-request cost: one batch's device time split by row share. It runs on every request
//! that computes, so it has to cost nanoseconds.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;
use tollgate::metering::cost::share_of_batch;

fn bench_share(c: &mut Criterion) {
    let mut group = c.benchmark_group("metering");
    group.bench_function("share_of_batch", |b| {
        b.iter(|| share_of_batch(black_box(1_234), black_box(3), black_box(64), black_box(0.10)))
    });
    // A whole batch's worth of shares, as a worker replying to 64 members would compute.
    group.bench_function("share_of_batch_x64", |b| {
        b.iter(|| {
            (0..64usize)
                .map(|i| share_of_batch(black_box(1_234), black_box(1 + i % 2), 96, 0.10))
                .sum::<f64>()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = bench_share
}
criterion_main!(benches);
