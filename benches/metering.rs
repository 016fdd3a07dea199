//! The metering hot path: the per-request cost share, and what settling an answered request
//! adds to the request path with async durability (budgets, anomaly minute, metrics, and the
//! hand-off of its usage record to the ledger's writer thread). Goal: under 1 µs.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;
use tollgate::config::Config;
use tollgate::metering::cost::share_of_batch;
use tollgate::metering::meter::Metering;
use tollgate::metering::record::{self, UsageRecord};

// Shared with the tests, which also stop and restart it.
#[allow(dead_code)]
#[path = "../tests/common/postgres.rs"]
mod postgres;

fn bench_share(c: &mut Criterion) {
    let mut group = c.benchmark_group("metering");
    group.bench_function("share_of_batch", |b| {
        b.iter(|| {
            share_of_batch(
                black_box(1_234),
                black_box(3),
                black_box(64),
                black_box(0.10),
            )
        })
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

const GROUP: u64 = 1_000;

const TIME_MS: i64 = 1_795_906_800_000;

/// A record as the gateway fills it: its id in the gateway's form, static or shared text.
fn record(n: u64) -> UsageRecord {
    UsageRecord {
        request_id: record::request_id("4f9a3da8", n, TIME_MS).into(),
        time_ms: TIME_MS,
        tenant: "search".into(),
        team: "discovery".into(),
        project: "ranking".into(),
        model: "digits".into(),
        version: "1".into(),
        protocol: "http".into(),
        cache: "miss".into(),
        rows: 1,
        batch_size: 8,
        compute_us: 95,
        latency_us: 400,
        cost_usd: 2.6e-9,
        outcome: "success".into(),
        device: "cpu".into(),
        ..UsageRecord::default()
    }
}

fn bench_settle(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tollgate-bench-metering-{}", std::process::id()));
    let mut config = Config::default();
    config.ledger.path = dir.join("ledger.sqlite");
    let metering = runtime
        .block_on(async { Metering::open(&config) })
        .expect("metering opens");
    let mut group = c.benchmark_group("metering");
    // The record is prepared outside the timing; building it is the gateway's part.
    let mut n = 0u64;
    group.bench_function("account", |b| {
        b.iter_batched(
            || record(0),
            |r| metering.account(black_box(&r)),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("account_and_enqueue", |b| {
        b.iter_batched(
            || {
                n += 1;
                record(n)
            },
            |r| {
                metering.account(&r);
                metering.enqueue(black_box(r));
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("build_record", |b| {
        b.iter(|| black_box(record(black_box(7))))
    });
    group.finish();
    let _ = runtime.block_on(metering.ledger.flush());
    drop(metering);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The writer's side: a thousand records enqueued and committed as one group, on the SQLite
/// ledger and on a real PostgreSQL one (started here when its programs are installed), side
/// by side in one invocation. Divide by 1,000 for the ledger's CPU per request, which is off
/// the request path.
fn bench_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tollgate-bench-commit-{}", std::process::id()));
    let mut config = Config::default();
    config.ledger.path = dir.join("ledger.sqlite");
    let mut group = c.benchmark_group("ledger");
    group.throughput(criterion::Throughput::Elements(GROUP));
    commit_groups(&mut group, &runtime, "enqueue_and_commit_1000", &config);
    let server = std::path::Path::new("/usr/lib/postgresql")
        .exists()
        .then(postgres::Postgres::start);
    match &server {
        Some(server) => {
            config.ledger.url = Some(server.url());
            commit_groups(
                &mut group,
                &runtime,
                "enqueue_and_commit_1000_postgres",
                &config,
            );
        }
        None => eprintln!("ledger: PostgreSQL is not installed (make postgres); its side skipped"),
    }
    group.finish();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn commit_groups(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    config: &Config,
) {
    let metering = runtime
        .block_on(async { Metering::open(config) })
        .expect("metering opens");
    let mut n = 0u64;
    group.bench_function(name, |b| {
        b.iter_batched(
            || {
                (0..GROUP)
                    .map(|_| {
                        n += 1;
                        record(n)
                    })
                    .collect::<Vec<_>>()
            },
            |records| {
                for r in records {
                    let _ = metering.ledger.record(r);
                }
                runtime
                    .block_on(metering.ledger.flush())
                    .expect("the group commits");
            },
            criterion::BatchSize::LargeInput,
        )
    });
    let _ = runtime.block_on(metering.ledger.flush());
}

/// A free port for the PostgreSQL cluster (the starter shared with the tests asks for one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = bench_share, bench_settle, bench_commit
}
criterion_main!(benches);
