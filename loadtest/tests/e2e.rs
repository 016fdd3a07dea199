//! End-to-end runs of the real binary against an in-process mock KServe V2 server, over all three protocols.

mod mock;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-loadtest");
const ROWS: usize = 20;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Rows whose sums are easy to state: row i is [i, 0.5, 0.25].
fn row(i: usize) -> [f32; 3] {
    [i as f32, 0.5, 0.25]
}

fn write_fixtures(tag: &str, wrong: bool) -> (PathBuf, PathBuf) {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({ROWS}, 3), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    for i in 0..ROWS {
        npy.extend(row(i).iter().flat_map(|v| v.to_le_bytes()));
    }
    let sums: Vec<f32> = (0..ROWS)
        .map(|i| row(i).iter().sum::<f32>() + if wrong && i == 3 { 1.0 } else { 0.0 })
        .collect();
    let verify = serde_json::json!({"output": "sum", "expected": sums});
    let (npy_path, verify_path) = (
        scratch(&format!("{tag}.npy")),
        scratch(&format!("{tag}.json")),
    );
    std::fs::write(&npy_path, npy).unwrap();
    std::fs::write(&verify_path, verify.to_string()).unwrap();
    (npy_path, verify_path)
}

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(BIN).args(args).output().unwrap())
        .await
        .unwrap()
}

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

/// Runs a load test with .npy inputs and --verify, returning the exit code and the JSON report.
async fn load(tag: &str, target: &str, extra: &str, wrong: bool) -> (i32, Value) {
    let (npy, verify) = write_fixtures(tag, wrong);
    let json = scratch(&format!("{tag}-report.json"));
    let line = format!(
        "--target {target} --model adder --npy {} --verify {} --json {} --no-progress --zipf 1.0 {extra}",
        npy.display(),
        verify.display(),
        json.display()
    );
    let out = run(args(&line)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = std::fs::read_to_string(&json).unwrap_or_else(|_| panic!("{stdout}\n{stderr}"));
    assert!(stdout.contains("latency ms"), "{stdout}");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&report).unwrap(),
    )
}

fn assert_healthy(r: &Value) {
    let ok = r["ok"].as_u64().unwrap();
    assert!(ok > 0, "{r:#}");
    assert_eq!(r["errors_total"], 0, "{r:#}");
    assert_eq!(r["verified"].as_u64(), Some(ok));
    let cache = &r["cache"];
    let (hit, miss) = (
        cache["hit"].as_u64().unwrap(),
        cache["miss"].as_u64().unwrap(),
    );
    assert_eq!(hit + miss, ok);
    // The mock caches exactly, so each distinct body misses at most once.
    assert!(miss <= ROWS as u64, "{cache}");
    let cost = r["cost_usd"].as_f64().unwrap() + r["saved_usd"].as_f64().unwrap();
    assert!((cost - 0.001 * ok as f64).abs() < 1e-6, "{cost}");
    assert!(r["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(r["run"]["distinct"], ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_closed_loop_with_metrics() {
    let mock = Arc::new(mock::Mock::default());
    let addr = mock::start_http(mock.clone()).await;
    let extra = format!("--concurrency 4 --duration 1s --metrics-url http://{addr}/metrics");
    let (code, r) = load("json", &addr.to_string(), &extra, false).await;
    assert_eq!(code, 0);
    assert_healthy(&r);
    let server = &r["server_metrics"];
    assert_eq!(
        server["requests_total"].as_f64(),
        r["ok"].as_f64(),
        "{server}"
    );
    assert_eq!(
        server["cache_requests_by_status"]["hit"],
        r["cache"]["hit"].as_f64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_binary_stops_after_request_budget() {
    let mock = Arc::new(mock::Mock::default());
    let addr = mock::start_http(mock).await;
    let (code, r) = load(
        "bin",
        &addr.to_string(),
        "--protocol http-binary --concurrency 3 --requests 150",
        false,
    )
    .await;
    assert_eq!(code, 0);
    assert_healthy(&r);
    assert_eq!(r["ok"], 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_open_loop_keeps_the_schedule() {
    let mock = Arc::new(mock::Mock::default());
    let addr = mock::start_grpc(mock).await;
    let extra = "--protocol grpc --rate 200 --arrivals constant --duration 1s --warmup 200ms";
    let (code, r) = load("grpc", &addr.to_string(), extra, false).await;
    assert_eq!(code, 0);
    assert_healthy(&r);
    let ok = r["ok"].as_u64().unwrap();
    assert!((190..=210).contains(&ok), "{ok} requests for 200/s over 1s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatches_are_counted_and_fail_the_run() {
    let mock = Arc::new(mock::Mock::default());
    let addr = mock::start_http(mock).await;
    let (code, r) = load(
        "bad",
        &addr.to_string(),
        "--concurrency 2 --requests 100 --zipf 0",
        true,
    )
    .await;
    assert_eq!(code, 3);
    assert!(r["errors"]["mismatch"].as_u64().unwrap() > 0, "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_inputs_and_json_only_path() {
    let mock = Arc::new(mock::Mock::default());
    let addr = mock::start_http(mock).await;
    let line = format!("--target {addr} --model adder --concurrency 2 --requests 50 --distinct 5 --batch-rows 4 --no-progress");
    let out = run(args(&line)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("50 ok, 0 errors"), "{stdout}");
    assert!(stdout.contains("miss 5"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_for_bad_flags_and_missing_server() {
    let out = run(args(
        "--target 127.0.0.1:1 --model m --concurrency 1 --protocol soap",
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--protocol"));
    let out = run(args("--help")).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--concurrency"));
    let mock = Arc::new(mock::Mock::default());
    let addr = mock::start_http(mock).await;
    let out = run(args(&format!(
        "--target {addr} --model nope --concurrency 1 --duration 1s"
    )))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}
