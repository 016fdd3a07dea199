//! The prediction cache's hot paths: computing a key (blake3 over model, version, names,
//! datatypes, shapes and bytes) next to a bare `blake3::hash` of the same input bytes, which is
//! the floor a key can reach; a memory-tier hit through `Cache::serve`; and misses through it,
//! stored into a growing tier or turned away by a full one. Two more key rows
//! cover the layouts' other paths: fields too long to be the blake3 key as they are (hashed
//! first, one extra compression) and two inputs (sorted, hashed with a streaming hasher).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use tollgate::cache::key::{compute, CacheKey, KeyParts};
use tollgate::cache::value::CachedValue;
use tollgate::cache::ModelCache;

/// The cache as the gateway runs it, carrying the gateway's error.
type Cache = tollgate::cache::Cache<tollgate::gateway::Error>;
use tollgate::config::CacheConfig;
use tollgate::request::CacheControl;
use tollgate::tensor::{DataType, Tensor};

// The gateway's allocator: what a stored miss costs depends on it as much as on the cache.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn fp32_tensor(bytes: usize) -> Tensor {
    let data: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
    Tensor {
        name: "input".into(),
        dtype: DataType::Fp32,
        shape: vec![1, bytes / 4],
        data: Bytes::from(data),
    }
}

fn key_of(inputs: &[Tensor]) -> CacheKey {
    key_with(None, inputs)
}

fn key_with(tenant: Option<&str>, inputs: &[Tensor]) -> CacheKey {
    compute(&KeyParts {
        model: "digits",
        version: "1",
        tenant,
        inputs,
    })
}

fn bench_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_key");
    for (label, size) in [("4KiB", 4096usize), ("1MiB", 1 << 20)] {
        let inputs = [fp32_tensor(size)];
        group.throughput(Throughput::Bytes(size as u64));
        // Side by side: the full key and a bare hash of the same bytes.
        group.bench_with_input(
            BenchmarkId::new("key_compute", label),
            &inputs,
            |b, inputs| b.iter(|| key_of(black_box(inputs))),
        );
        group.bench_with_input(
            BenchmarkId::new("blake3_hash", label),
            &inputs,
            |b, inputs| b.iter(|| blake3::hash(black_box(&inputs[0].data))),
        );
    }
    // A digits row: 256 bytes, where the fixed fields dominate.
    let row = [fp32_tensor(256)];
    group.throughput(Throughput::Bytes(256));
    group.bench_function("key_compute/digits_row_256B", |b| {
        b.iter(|| key_of(black_box(&row)))
    });
    group.bench_function("blake3_hash/digits_row_256B", |b| {
        b.iter(|| blake3::hash(black_box(&row[0].data)))
    });
    // The same 4 KiB with a tenant scope whose name pushes the fields past the 30 bytes that
    // can be the blake3 key as they are, so they are hashed first; compare with blake3_hash/4KiB.
    let four = [fp32_tensor(4096)];
    group.throughput(Throughput::Bytes(4096));
    group.bench_function("key_compute/4KiB_hashed_fields", |b| {
        b.iter(|| {
            key_with(
                black_box(Some("a-tenant-with-a-long-name")),
                black_box(&four),
            )
        })
    });
    // Two inputs of 2 KiB, listed out of name order: the multi-input path.
    let mut second = fp32_tensor(2048);
    second.name = "another".into();
    let two = [fp32_tensor(2048), second];
    group.bench_function("key_compute/2x2KiB", |b| b.iter(|| key_of(black_box(&two))));
    group.finish();
}

fn digits_value() -> CachedValue {
    CachedValue {
        outputs: vec![
            Tensor {
                name: "label".into(),
                dtype: DataType::Int64,
                shape: vec![1],
                data: Bytes::from(7i64.to_le_bytes().to_vec()),
            },
            Tensor {
                name: "probabilities".into(),
                dtype: DataType::Fp32,
                shape: vec![1, 10],
                data: Bytes::from(vec![0u8; 40]),
            },
        ]
        .into(),
        cost_usd: 1e-10,
        compute_us: 20,
        rows: 1,
        batch_rows: 1,
        queue_us: 5,
        cold_start_us: 0,
        model: Arc::from("digits"),
        ttl: Duration::from_secs(3600),
    }
}

fn bench_serve(c: &mut Criterion) {
    // The gateway records cache metrics on every lookup; install the same recorder so the
    // measured hit includes that work.
    tollgate::telemetry::metrics_handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cache = std::sync::Arc::new(Cache::new(&CacheConfig::default()));
    let digits = ModelCache::new("digits", Duration::from_secs(3600));
    let row = [fp32_tensor(256)];
    let key = key_of(&row);
    runtime.block_on(async {
        cache
            .serve(key, &digits, CacheControl::default(), async {
                Ok(digits_value())
            })
            .await
            .expect("first call computes");
        cache.settle().await;
    });

    let mut group = c.benchmark_group("cache_serve");
    group.bench_function("hit", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let (value, status) = cache
                    .serve(black_box(key), &digits, CacheControl::default(), async {
                        Ok(digits_value())
                    })
                    .await
                    .expect("hit");
                black_box((value, status))
            })
        })
    });
    // What the gateway does per request: key the digits row, then look it up.
    group.bench_function("key_and_hit", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let key = key_of(black_box(&row));
                cache
                    .serve(key, &digits, CacheControl::default(), async {
                        Ok(digits_value())
                    })
                    .await
                    .expect("hit")
            })
        })
    });
    // The runtime entry alone, to read the two figures above net of it.
    group.bench_function("block_on_overhead", |b| {
        b.iter(|| runtime.block_on(async { black_box(1) }))
    });
    group.finish();
    bench_store(c, &runtime, &digits);
}

/// Misses, next to the same computation without a cache: their difference is what the cache
/// adds to a miss's CPU, net of the key (benched above) and of anything outside this process
/// (the HTTP path, other threads). One miss is stored in a tier that grows from empty (each
/// sample starts a fresh cache, large enough never to evict); the other meets a full one.
fn bench_store(c: &mut Criterion, runtime: &tokio::runtime::Runtime, digits: &ModelCache) {
    let config = CacheConfig {
        max_bytes: tollgate::config::ByteSize(512 << 20),
        ..CacheConfig::default()
    };
    let next_row = std::cell::Cell::new(0u64);
    let distinct_keys = |count: u64| -> Vec<CacheKey> {
        let first = next_row.get();
        next_row.set(first + count);
        (first..first + count)
            .map(|i| {
                let mut row = fp32_tensor(256);
                let mut data = row.data.to_vec();
                data[..8].copy_from_slice(&i.to_le_bytes());
                row.data = Bytes::from(data);
                key_of(&[row])
            })
            .collect()
    };
    let serve_all = |cache: &Arc<Cache>, keys: Vec<CacheKey>| {
        runtime.block_on(async {
            let started = std::time::Instant::now();
            for key in keys {
                let served = cache
                    .serve(key, digits, CacheControl::default(), async {
                        Ok(digits_value())
                    })
                    .await;
                black_box(served.expect("computed"));
            }
            started.elapsed()
        })
    };
    let mut group = c.benchmark_group("cache_serve");
    group.bench_function("miss_stored_growing", |b| {
        b.iter_custom(|iters| serve_all(&Arc::new(Cache::new(&config)), distinct_keys(iters)))
    });
    // The floor under the row above: moka alone, with the least configuration a tier bounded by
    // bytes needs, inserting the same values under the same keys.
    group.bench_function("moka_insert_growing", |b| {
        b.iter_custom(|iters| {
            let keys = distinct_keys(iters);
            let memory: moka::future::Cache<CacheKey, Arc<CachedValue>> =
                moka::future::Cache::builder()
                    .max_capacity(config.max_bytes.0)
                    .weigher(|_key: &CacheKey, value: &Arc<CachedValue>| value.weight())
                    .build();
            runtime.block_on(async {
                let started = std::time::Instant::now();
                for key in keys {
                    memory.insert(key, Arc::new(digits_value())).await;
                }
                started.elapsed()
            })
        })
    });
    // The steady state: a full tier (1 MiB, filled first) turns away answers whose keys its
    // doorkeeper has not seen, so a miss costs the lookup, the flight and that check.
    let full = Arc::new(Cache::new(&CacheConfig {
        max_bytes: tollgate::config::ByteSize(1 << 20),
        ..CacheConfig::default()
    }));
    serve_all(&full, distinct_keys(20_000));
    group.bench_function("miss_full_not_admitted", |b| {
        b.iter_custom(|iters| serve_all(&full, distinct_keys(iters)))
    });
    group.bench_function("uncached_compute", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = std::time::Instant::now();
                for _ in 0..iters {
                    let computed = async { Ok::<_, ()>(Arc::new(digits_value())) }.await;
                    black_box(computed.expect("computed"));
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_key, bench_serve
}
criterion_main!(benches);
