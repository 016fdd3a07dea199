//! Connection limits on the HTTP port against real sockets: request heads that never finish,
//! idle keep-alive connections, and more connections than `server.max_connections`.

mod common;

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MODEL: &str = "[[models]]\nname = \"digits\"\npath = \"models/digits/1/model.onnx\"\n";

fn address(gateway: &common::Gateway) -> String {
    gateway.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection or `limit` passes; true when it closed.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // The server may say 408 before closing; keep reading until it closes.
            Ok(Ok(_)) => continue,
        }
    }
}

fn infer_request(address: &str) -> Vec<u8> {
    let (rows, _) = common::digits_rows();
    let body = common::digits_body(&rows[..1]).to_string();
    format!(
        "POST /v2/models/digits/infer HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_are_closed_after_the_timeout_while_others_are_served() {
    let gateway = common::start(&format!("[server]\nheader_read_timeout_ms = 800\n{MODEL}")).await;
    let address = address(&gateway);
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"POST /v2/models/digits/infer HTTP/1.1\r\nhost: x\r\ncontent-le")
            .await
            .unwrap();
        stalled.push(stream);
    }
    let started = Instant::now();
    // Served meanwhile, on connections of their own.
    let (rows, _) = common::digits_rows();
    for row in rows.iter().take(5) {
        let reply = gateway
            .infer("digits", &common::digits_body(std::slice::from_ref(row)))
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    assert!(
        !closed_within(&mut stalled[0], Duration::from_millis(100)).await
            || started.elapsed() >= Duration::from_millis(800),
        "a stalled head was closed before its timeout"
    );
    for (i, stream) in stalled.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "stalled connection {i} still open"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(700));
    let reply = gateway.get("/v2/health/ready").await;
    assert_eq!(reply.status, 200);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_timeout() {
    let gateway = common::start(&format!("[server]\nheader_read_timeout_ms = 600\n{MODEL}")).await;
    let address = address(&gateway);
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream.write_all(&infer_request(&address)).await.unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Keep-alive: the same connection serves a second request at once.
    stream.write_all(&infer_request(&address)).await.unwrap();
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await);
    assert!(
        idle.elapsed() >= Duration::from_millis(300),
        "{:?}",
        idle.elapsed()
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let gateway = common::start(&format!(
        "[server]\nmax_connections = 3\nheader_read_timeout_ms = 60000\n{MODEL}"
    ))
    .await;
    let address = address(&gateway);
    let mut held = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    for _ in 0..3 {
        // An answer on each shows the server has accepted it; kept open (keep-alive) after.
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(&infer_request(&address)).await.unwrap();
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let mut fourth = TcpStream::connect(&address).await.unwrap();
    fourth.write_all(&infer_request(&address)).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), fourth.read(&mut buf)).await;
    assert!(early.is_err(), "answered beyond the limit: {early:?}");
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(10), fourth.read(&mut buf))
        .await
        .expect("answered once a connection closed")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    gateway.stop().await;
}

/// Reads one response head off `stream` within `limit`: its status line, or None.
async fn status_within(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(limit, stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.lines().next().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_large_bodies_are_refused_unread_beyond_the_body_budget() {
    // Room for two bodies of 400 KiB, not three.
    let gateway = common::start(&format!(
        "[server]\nmax_body_bytes = \"512KiB\"\nmax_body_bytes_in_flight = \"1MiB\"\n{MODEL}"
    ))
    .await;
    let address = address(&gateway);
    let declared = 400 << 10;
    let head = format!(
        "POST /v2/models/digits/infer HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n{{\"inputs\": ["
    );
    let mut flood = Vec::new();
    for _ in 0..10 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        flood.push(stream);
    }
    // Eight of them are refused at once, with 429, their bodies unread; two hold the budget
    // and are still waiting for the rest of theirs.
    let mut refused = 0;
    let mut waiting = Vec::new();
    for mut stream in flood {
        match status_within(&mut stream, Duration::from_millis(1500)).await {
            Some(status) => {
                assert!(status.starts_with("HTTP/1.1 429"), "{status}");
                refused += 1;
            }
            None => waiting.push(stream),
        }
    }
    assert_eq!((refused, waiting.len()), (8, 2));
    // A small request still fits beside them.
    let (rows, _) = common::digits_rows();
    let reply = gateway
        .infer("digits", &common::digits_body(&rows[..1]))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    // Once the two give up, their share is back: a large body fits again.
    drop(waiting);
    let mut ok = false;
    for _ in 0..50 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        if status_within(&mut stream, Duration::from_millis(300))
            .await
            .is_none()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ok,
        "the budget did not come back after the trickling clients left"
    );
    gateway.stop().await;
}
