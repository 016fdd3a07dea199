//! Shared helpers for the integration tests: a real gateway on port 0, a small HTTP client,
//! Prometheus text lookups, and a real redis-server on a free port.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tollgate::config::Config;
use tollgate::server::Server;

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
        client: Client::builder(TokioExecutor::new()).build_http(),
        server,
    }
}

pub struct Gateway {
    pub server: Server,
    pub base: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
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

impl Gateway {
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
            .client
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

    pub async fn stop(self) {
        self.server.stop().await;
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
    child: Child,
}

impl Redis {
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make redis)");
        // Owned from here, so that a start that never answers is still stopped on the panic.
        let redis = Redis { port, child };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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

pub fn model_path(name: &str) -> PathBuf {
    repo().join("models").join(name).join("1/model.onnx")
}
