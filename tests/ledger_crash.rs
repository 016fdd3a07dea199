//! `kill -9` of the gateway under load: with `ledger.durability = "sync"` every response a
//! client received has its usage record on disk (in the SQLite file, or in a real PostgreSQL
//! ledger); with "async", everything older than the commit window does.

mod common;

use bytes::Bytes;
use common::postgres::Postgres;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tollgate::metering::ledger::{Ledger, LedgerSettings};

/// Where the gateway keeps its ledger: the `[ledger]` line naming it, and the same settings
/// for reading it back after the kill.
struct Target {
    toml: String,
    settings: LedgerSettings,
}

impl Target {
    fn sqlite() -> Target {
        let path = common::scratch_dir().join("ledger.sqlite");
        Target {
            toml: format!("path = \"{}\"", path.display()),
            settings: LedgerSettings::new(path),
        }
    }

    fn postgres(server: &Postgres) -> Target {
        Target {
            toml: format!("url = \"{}\"", server.url()),
            settings: LedgerSettings {
                url: Some(server.url()),
                ..LedgerSettings::new(common::scratch_dir().join("unused.sqlite"))
            },
        }
    }
}

struct Running {
    child: std::process::Child,
    base: String,
}

fn start(durability: &str, ledger: &Target) -> Running {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = common::scratch_dir();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhttp_addr = \"127.0.0.1:{port}\"\ngrpc_addr = \"127.0.0.1:0\"\n[cache]\nenabled = false\n[ledger]\n{}\ndurability = \"{durability}\"\n[[models]]\nname = \"digits\"\npath = \"{}\"\nmax_batch_size = 8\n",
            ledger.toml,
            common::model_path("digits").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(common::repo())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (ready, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.contains("serving") {
                let _ = ready.send(());
            }
        }
    });
    seen.recv_timeout(Duration::from_secs(60))
        .expect("the gateway starts");
    Running {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Sends requests from 8 concurrent clients until stopped; returns the request ids of every
/// response received, with when it was received.
async fn load(
    base: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(String, std::time::Instant)> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut tasks = Vec::new();
    for worker in 0..8usize {
        let (client, base, stop, received) =
            (client.clone(), base.clone(), stop.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let row: Vec<f32> = (0..64)
                    .map(|i| ((worker * 31 + n * 7 + i) % 16) as f32)
                    .collect();
                let body = common::digits_body(&[row]).to_string();
                let request = hyper::Request::post(format!("{base}/v2/models/digits/infer"))
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let Ok(response) = client.request(request).await else {
                    break;
                };
                let id = response
                    .headers()
                    .get("x-tollgate-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let ok = response.status().is_success();
                let _ = response.into_body().collect().await;
                if let (true, Some(id)) = (ok, id) {
                    received
                        .lock()
                        .unwrap()
                        .push((id, std::time::Instant::now()));
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let received = received.lock().unwrap().clone();
    received
}

async fn crash_under_load(
    durability: &str,
    target: Target,
) -> (
    Vec<(String, std::time::Instant)>,
    std::time::Instant,
    Ledger,
) {
    let mut running = start(durability, &target);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = tokio::spawn(load(running.base.clone(), stop.clone()));
    // Let load build up, then kill the gateway mid-flight with SIGKILL: no shutdown code runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = std::time::Instant::now();
    running.child.kill().unwrap();
    running.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let received = loader.await.unwrap();
    assert!(
        received.len() > 20,
        "too little load to mean anything: {}",
        received.len()
    );
    let ledger = Ledger::open(target.settings).unwrap();
    (received, killed_at, ledger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_durability_keeps_the_record_of_every_answered_request() {
    let (received, _, ledger) = crash_under_load("sync", Target::sqlite()).await;
    assert_every_answer_recorded(&received, &ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_durability_on_postgres_keeps_the_record_of_every_answered_request() {
    let server = Postgres::start();
    let (received, _, ledger) = crash_under_load("sync", Target::postgres(&server)).await;
    assert_every_answer_recorded(&received, &ledger);
}

fn assert_every_answer_recorded(received: &[(String, std::time::Instant)], ledger: &Ledger) {
    let missing: Vec<&String> = received
        .iter()
        .map(|(id, _)| id)
        .filter(|id| ledger.usage(id).unwrap().is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no record: {missing:?}",
        missing.len(),
        received.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_durability_loses_at_most_the_last_commit_window() {
    let (received, killed_at, ledger) = crash_under_load("async", Target::sqlite()).await;
    // Group commits close within 50 ms; anything answered well before the kill is on disk.
    let settled: Vec<&String> = received
        .iter()
        .filter(|(_, at)| killed_at.duration_since(*at) > Duration::from_millis(250))
        .map(|(id, _)| id)
        .collect();
    assert!(!settled.is_empty());
    let missing: Vec<&&String> = settled
        .iter()
        .filter(|id| ledger.usage(id).unwrap().is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} settled records lost: {missing:?}",
        missing.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_load_records_every_request_exactly_once() {
    let mut server = Postgres::start();
    let target = Target::postgres(&server);
    let mut running = start("async", &target);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = tokio::spawn(load(running.base.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let received = loader.await.unwrap();
    assert!(received.len() > 20, "too little load: {}", received.len());
    // The gateway writes what it held once the server is back (retries back off up to 5 s).
    let count = |sql: &str| -> u64 { server.psql("tollgate", sql).parse().unwrap() };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count("SELECT COUNT(*) FROM usage") < received.len() as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "records never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give a wrongly repeated group its chance to show before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rows = count("SELECT COUNT(*) FROM usage");
    let distinct = count("SELECT COUNT(DISTINCT request_id) FROM usage");
    // Idle records (device time, no request) count rows but no requests in the rollups.
    let answered = count("SELECT COUNT(*) FROM usage WHERE tenant <> '__idle__'");
    let requests = count("SELECT COALESCE(SUM(requests), 0) FROM usage_rollup");
    assert_eq!(rows, distinct, "a record was written twice");
    assert_eq!(requests, answered, "the rollups count what the rows hold");
    let ledger = Ledger::open(target.settings).unwrap();
    assert_every_answer_recorded(&received, &ledger);
    // The outage was real: the gateway's writer failed while the server was away.
    let metrics = common::Client::new(&running.base);
    let failures = metrics
        .metric("tollgate_ledger_write_errors_total", &[])
        .await;
    assert!(failures > 0.0, "no failed commit during the outage");
    running.child.kill().unwrap();
    running.child.wait().unwrap();
}
