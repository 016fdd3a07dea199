//! `tollgate-fixed-server`: the baseline for the gateway benchmarks. It answers every POST with
//! one fixed body and a fixed set of headers (by default `x-tollgate-cache: hit`), and every GET
//! with a second fixed body (the model metadata the load generator asks for first). It does no
//! decoding, hashing or inference, so the gap between it and the gateway, measured with the same
//! load generator settings, is what the gateway's own work costs.
//!
//! It runs the same HTTP stack as the gateway (hyper 1 through hyper-util's HTTP/1.1 + h2c
//! connection builder on a multi-threaded tokio runtime, TCP_NODELAY set) and reads each request
//! body in full before answering, so the comparison isolates the gateway's request path rather
//! than differences in servers.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

const USAGE: &str = "\
usage: tollgate-fixed-server --addr HOST:PORT (--body-file F | --body-json STRING)
                             [--get-body-file F | --get-body-json STRING]
                             [--header NAME:VALUE]... [--content-type TYPE] [--threads N]

Answers every POST with the fixed body (and `x-tollgate-cache: hit` unless a --header sets
x-tollgate-cache), and every GET with the GET body (default `{}`). Runs until killed.";

/// The fixed answers, built once and shared by every connection.
struct Answers {
    post_body: Bytes,
    get_body: Bytes,
    content_type: HeaderValue,
    headers: Vec<(HeaderName, HeaderValue)>,
}

struct Options {
    addr: SocketAddr,
    answers: Answers,
    threads: Option<usize>,
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("tollgate-fixed-server: {message}\n{USAGE}");
    std::process::exit(2);
}

fn read_file(path: &str) -> Bytes {
    match std::fs::read(path) {
        Ok(bytes) => Bytes::from(bytes),
        Err(error) => fail(format!("cannot read {path}: {error}")),
    }
}

fn parse_options() -> Options {
    let mut addr = None;
    let mut post_body = None;
    let mut get_body = Bytes::from_static(b"{}");
    let mut content_type = HeaderValue::from_static("application/json");
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    let mut threads = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .unwrap_or_else(|| fail(format!("{flag} needs a value")));
        match flag.as_str() {
            "--addr" => {
                addr = Some(
                    value
                        .parse::<SocketAddr>()
                        .unwrap_or_else(|e| fail(format!("--addr {value}: {e}"))),
                )
            }
            "--body-file" => post_body = Some(read_file(&value)),
            "--body-json" => post_body = Some(Bytes::from(value.into_bytes())),
            "--get-body-file" => get_body = read_file(&value),
            "--get-body-json" => get_body = Bytes::from(value.into_bytes()),
            "--content-type" => {
                content_type = HeaderValue::from_str(&value)
                    .unwrap_or_else(|e| fail(format!("--content-type: {e}")))
            }
            "--header" => {
                let (name, text) = value
                    .split_once(':')
                    .unwrap_or_else(|| fail(format!("--header {value}: expected NAME:VALUE")));
                let name = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                    .unwrap_or_else(|e| fail(format!("--header {value}: {e}")));
                let text = HeaderValue::from_str(text.trim())
                    .unwrap_or_else(|e| fail(format!("--header {value}: {e}")));
                headers.push((name, text));
            }
            "--threads" => {
                threads = Some(
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                        .unwrap_or_else(|| fail("--threads must be a positive integer")),
                )
            }
            other => fail(format!("unknown flag {other}")),
        }
    }
    let addr = addr.unwrap_or_else(|| fail("--addr is required"));
    let post_body = post_body.unwrap_or_else(|| fail("--body-file or --body-json is required"));
    // The load generator counts cache statuses from this header, so the baseline says "hit"
    // like a gateway answering from its cache, unless told otherwise.
    if !headers.iter().any(|(name, _)| name == "x-tollgate-cache") {
        headers.push((
            HeaderName::from_static("x-tollgate-cache"),
            HeaderValue::from_static("hit"),
        ));
    }
    Options {
        addr,
        answers: Answers {
            post_body,
            get_body,
            content_type,
            headers,
        },
        threads,
    }
}

async fn answer(answers: &Answers, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let is_post = request.method() == Method::POST;
    // Read the whole body, as the gateway must before it can decode a request.
    let _ = request.into_body().collect().await;
    let body = if is_post {
        answers.post_body.clone()
    } else {
        answers.get_body.clone()
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, answers.content_type.clone());
    if is_post {
        for (name, value) in &answers.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    response
}

async fn serve(listener: TcpListener, answers: Arc<Answers>) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("tollgate-fixed-server: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let answers = answers.clone();
        let service = hyper::service::service_fn(move |request| {
            let answers = answers.clone();
            async move { Ok::<_, Infallible>(answer(&answers, request).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

fn main() {
    let options = parse_options();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = options.threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start the async runtime: {e}")));
    runtime.block_on(async move {
        let listener = TcpListener::bind(options.addr)
            .await
            .unwrap_or_else(|e| fail(format!("cannot listen on {}: {e}", options.addr)));
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        eprintln!("tollgate-fixed-server listening on {local}");
        serve(listener, Arc::new(options.answers)).await;
    });
}
