//! Helpers for the upstream tests: an upstream Tollgate on ports that can be bound again after
//! it stops, front configs that point at it, and polling with a deadline.
#![allow(dead_code)]

use super::common;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tollgate::server::Server;

/// A port that was free a moment ago (bound and released), for a server that must come back on
/// the same address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Fixed HTTP and gRPC addresses for an upstream that will be stopped and started again.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
}

impl Ports {
    pub fn pick() -> Ports {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Ports {
            http: at(free_port()),
            grpc: at(free_port()),
        }
    }
}

/// An upstream gateway serving `toml` on `ports`. Binding can briefly fail right after the
/// previous server on these ports stopped, so it is retried for a few seconds.
pub async fn start_at(ports: Ports, toml: &str) -> Server {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut config = common::config(toml);
        config.server.http_addr = ports.http;
        config.server.grpc_addr = ports.grpc;
        config.server.shutdown_grace_ms = 500;
        match Server::start(config).await {
            Ok(server) => return server,
            Err(error) if Instant::now() < deadline => {
                eprintln!("upstream not started yet ({error}); retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the upstream gateway did not start: {error}"),
        }
    }
}

/// An upstream Tollgate config serving the digits model under each of `names`.
pub fn upstream_config(models: &[(&str, &str)]) -> String {
    let mut toml = String::from("[cache]\nenabled = false\n");
    for (name, extra) in models {
        toml.push_str(&format!(
            "\n[[models]]\nname = \"{name}\"\npath = \"models/digits/1/model.onnx\"\n{extra}\n"
        ));
    }
    toml
}

/// A front config with one model served by `upstream` (`upstream = ...` or `upstreams = [...]`
/// already spelled out), tuned for quick tests.
pub fn front_config(name: &str, upstream_model: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[models]]\nname = \"{name}\"\nupstream_model = \"{upstream_model}\"\n{upstream}\n\
         upstream_health_interval_ms = 100\nupstream_breaker_cooldown_ms = 300\n{extra}\n"
    )
}

/// Polls `check` until it returns true or `limit` passes; returns whether it did.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `count` distinct digit rows: the bundled rows, shifted a little more on each pass.
pub fn rows(count: usize, salt: f32) -> Vec<Vec<f32>> {
    let (base, _) = common::digits_rows();
    (0..count)
        .map(|i| {
            let shift = (i / base.len()) as f32 * 0.5 + salt;
            base[i % base.len()].iter().map(|v| v + shift).collect()
        })
        .collect()
}
