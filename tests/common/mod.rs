//! Shared helpers for the integration tests: a real gateway on port 0, a small HTTP client,
//! Prometheus text lookups, a real redis-server on a free port, and a real PostgreSQL
//! (`postgres`).
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tollgate::config::Config;
use tollgate::server::Server;

pub mod jobs;
pub mod postgres;
pub mod tls;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A config from TOML text whose relative paths are read from the repository root, bound to
/// free ports.
pub fn config(toml: &str) -> Config {
    let mut config = Config::parse(toml, &repo().join("test.toml")).expect("test config is valid");
    config.server.http_addr = "127.0.0.1:0".parse().unwrap();
    config.server.grpc_addr = "127.0.0.1:0".parse().unwrap();
    // Each gateway gets a ledger of its own, so tests never read each other's records.
    if config.ledger.path.ends_with("data/ledger.sqlite") {
        config.ledger.path = scratch_dir().join("ledger.sqlite");
    }
    config
}

/// A fresh folder, unique per call, under Cargo's scratch folder for integration tests
/// (`target/tmp`), so test runs leave nothing in the system temp dir.
pub fn scratch_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tollgate-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn start(toml: &str) -> Gateway {
    let server = Server::start(config(toml)).await.expect("gateway starts");
    Gateway {
        base: format!("http://{}", server.http_addr),
        client: Client::new(&format!("http://{}", server.http_addr)),
        server,
    }
}

/// A gateway in this test process.
pub struct Gateway {
    pub server: Server,
    pub base: String,
    client: Client,
}

impl std::ops::Deref for Gateway {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Gateway {
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// A gateway running as its own process (`tollgate serve`), killed when dropped.
pub struct Process {
    child: Child,
    client: Client,
}

impl std::ops::Deref for Process {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tollgate serve` on the config `toml` (model paths from the repository root) on free
/// ports, and returns once it serves.
pub fn spawn(toml: &str) -> Process {
    let dir = scratch_dir();
    let path = dir.join("config.toml");
    // The config file lives in a scratch folder; model paths are the repository's.
    let mut text = toml.replace("\"models/", &format!("\"{}/models/", repo().display()));
    if !text.contains("[ledger]") {
        text.push_str(&format!(
            "\n[ledger]\npath = \"{}\"\n",
            dir.join("ledger.sqlite").display()
        ));
    }
    std::fs::write(&path, text).unwrap();
    let http = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tollgate serve starts");
    let stderr = child.stderr.take().unwrap();
    let (ready, seen) = std::sync::mpsc::channel();
    let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log = said.clone();
    std::thread::spawn(move || {
        let mut ready = Some(ready);
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.contains("serving") {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            } else if ready.is_some() {
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        }
    });
    if seen.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        let status = child.wait();
        std::thread::sleep(Duration::from_millis(100));
        panic!(
            "tollgate serve did not start ({status:?}): {}",
            said.lock().unwrap()
        );
    }
    Process {
        child,
        client: Client::new(&format!("http://127.0.0.1:{http}")),
    }
}

/// Requests to one gateway over HTTP.
pub struct Client {
    pub base: String,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn output(&self, name: &str) -> Value {
        self.json()["outputs"]
            .as_array()
            .and_then(|outputs| outputs.iter().find(|o| o["name"] == name).cloned())
            .unwrap_or(Value::Null)
    }
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.to_string(),
            http: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = self
            .http
            .request(request.body(Full::new(body)).unwrap())
            .await
            .expect("the gateway answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, &[], Bytes::from(body.to_string()))
            .await
    }

    pub async fn infer(&self, model: &str, body: &Value) -> Reply {
        self.post_json(&format!("/v2/models/{model}/infer"), body)
            .await
    }

    /// Sum of every sample of `name` whose labels contain all of `labels` (`key="value"`).
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = String::from_utf8(self.get("/metrics").await.body.to_vec()).unwrap();
        metric_in(&text, name, labels)
    }
}

pub fn metric_in(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The bundled digits test rows and the labels the model predicts for them.
pub fn digits_rows() -> (Vec<Vec<f32>>, Vec<i64>) {
    let text = std::fs::read_to_string(repo().join("models/digits/test_rows.json")).unwrap();
    let rows: Value = serde_json::from_str(&text).unwrap();
    let inputs = rows["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let labels = rows["label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    (inputs, labels)
}

pub fn digits_body(rows: &[Vec<f32>]) -> Value {
    serde_json::json!({
        "inputs": [{"name": "input", "shape": [rows.len(), 64], "datatype": "FP32", "data": rows}]
    })
}

/// A real redis-server on a free port, stopped (by its own pid) on drop.
pub struct Redis {
    pub port: u16,
    /// `:password@` when the server was started with one.
    auth: String,
    child: Child,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port(), &[])
    }

    /// On `port`, with extra redis-server arguments (`--requirepass` is remembered for URLs).
    pub fn start_on(port: u16, extra: &[&str]) -> Redis {
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        let auth = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|at| extra.get(at + 1))
            .map(|password| format!(":{password}@"))
            .unwrap_or_default();
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make redis)");
        // Owned from here, so that a start that never answers is still stopped on the panic.
        let redis = Redis { port, auth, child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://{}127.0.0.1:{}", self.auth, self.port)
    }

    /// A plain client of database `db`, to look at what the gateway wrote.
    pub fn connect(&self, db: u8) -> redis::Connection {
        redis::Client::open(format!("{}/{db}", self.url()))
            .unwrap()
            .get_connection()
            .expect("the test's Redis answers")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Redis Cluster of `nodes` primaries (no replicas), built with `redis-cli --cluster
/// create`; every node is stopped on drop.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
    _dir: PathBuf,
}

impl RedisCluster {
    pub fn start(nodes: usize) -> RedisCluster {
        let dir = scratch_dir();
        let nodes: Vec<Redis> = (0..nodes)
            .map(|_| {
                let port = free_port();
                let conf = dir.join(format!("nodes-{port}.conf"));
                Redis::start_on(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        conf.to_str().unwrap(),
                        "--dir",
                        dir.to_str().unwrap(),
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed (make redis)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = RedisCluster { nodes, _dir: dir };
        for node in &cluster.nodes {
            let mut connection = node.connect(0);
            let mut ok = false;
            for _ in 0..100 {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut connection)
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(ok, "the cluster never became ready on port {}", node.port);
        }
        cluster
    }

    /// The seed URLs, as a TOML array.
    pub fn toml_urls(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }
}

/// A real HTTP receiver for the alert webhook, collecting the JSON bodies it is sent.
pub async fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_webhook(stream, store.clone()));
        }
    });
    (url, received)
}

/// Serves one webhook connection (plain or TLS), keeping the JSON of every POST in `store`.
pub async fn serve_webhook<S>(stream: S, store: std::sync::Arc<std::sync::Mutex<Vec<Value>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let store = store.clone();
            async move {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                    store.lock().unwrap().push(value);
                }
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                    Bytes::from_static(b"ok"),
                )))
            }
        });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

pub fn model_path(name: &str) -> PathBuf {
    repo().join("models").join(name).join("1/model.onnx")
}
