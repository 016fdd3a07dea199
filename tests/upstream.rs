//! Tollgate in front of another Tollgate, both real and in this process: answers match the
//! upstream's, repeats are served from the front's cache, single rows reach the upstream as
//! batches, an upstream outage is a fast 503 that heals when it returns, a slow upstream is a
//! 504, and the upstream's 4xx reach the caller with its message. Metrics are process-wide, so
//! every test uses model names of its own.

mod common;
#[path = "common/upstream.rs"]
mod peers;

use hyper::StatusCode;
use peers::{eventually, front_config, upstream_config, Ports};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn outputs(reply: &common::Reply) -> Value {
    reply.json()["outputs"].clone()
}

/// The upstream's own requests to a model, whatever their protocol or outcome.
async fn requests_to(gateway: &common::Gateway, model: &str) -> f64 {
    let label = format!("model=\"{model}\"");
    gateway.metric("tollgate_requests_total", &[&label]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_front_answers_like_the_upstream_and_serves_repeats_from_its_cache() {
    // (variant, scheme, extra front keys)
    let variants = [
        ("http", "http", "upstream_binary = true"),
        ("json", "http", "upstream_binary = false"),
        ("h2c", "h2c", ""),
        ("grpc", "grpc", ""),
    ];
    let (rows, labels) = common::digits_rows();
    for (variant, scheme, extra) in variants {
        let up_name = format!("digits_up_{variant}");
        let front_name = format!("digits_front_{variant}");
        let upstream = common::start(&upstream_config(&[(&up_name, "max_batch_size = 64")])).await;
        let address = match scheme {
            "grpc" => upstream.server.grpc_addr,
            _ => upstream.server.http_addr,
        };
        let url = format!("upstream = \"{scheme}://{address}\"");
        let extra = format!("max_batch_size = 64\n{extra}");
        let front = common::start(&front_config(&front_name, &up_name, &url, &extra)).await;

        let metadata = front.get(&format!("/v2/models/{front_name}")).await.json();
        let upstream_metadata = upstream.get(&format!("/v2/models/{up_name}")).await.json();
        assert_eq!(metadata["inputs"], upstream_metadata["inputs"], "{variant}");
        assert_eq!(
            metadata["outputs"], upstream_metadata["outputs"],
            "{variant}"
        );
        let ready = front.get(&format!("/v2/models/{front_name}/ready")).await;
        assert_eq!(ready.status, StatusCode::OK, "{variant}");

        let body = common::digits_body(&rows);
        let direct = upstream.infer(&up_name, &body).await;
        let through = front.infer(&front_name, &body).await;
        assert_eq!(
            through.status,
            StatusCode::OK,
            "{variant}: {:?}",
            through.body
        );
        assert_eq!(
            outputs(&through),
            outputs(&direct),
            "{variant}: answers differ"
        );
        assert_eq!(through.output("label")["data"], json!(labels), "{variant}");
        assert_eq!(through.header("x-tollgate-cache"), "miss", "{variant}");

        let before = requests_to(&front, &up_name).await;
        let again = front.infer(&front_name, &body).await;
        assert_eq!(again.header("x-tollgate-cache"), "hit", "{variant}");
        assert_eq!(outputs(&again), outputs(&direct), "{variant}");
        assert_eq!(
            requests_to(&front, &up_name).await,
            before,
            "{variant}: a hit reached the upstream"
        );
        front.stop().await;
        upstream.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_single_rows_reach_the_upstream_as_fewer_larger_requests() {
    let upstream = common::start(&upstream_config(&[
        (
            "digits_up_batch",
            "max_batch_size = 64\nmax_queue_delay_us = 1000",
        ),
        ("digits_up_reference", ""),
    ]))
    .await;
    let url = format!("upstream = \"http://{}\"", upstream.server.http_addr);
    let extra = "max_batch_size = 64\nmax_queue_delay_us = 20000\ninstances = 2\ncache = false";
    let front = Arc::new(
        common::start(&front_config(
            "digits_front_batch",
            "digits_up_batch",
            &url,
            extra,
        ))
        .await,
    );
    let rows = peers::rows(64, 0.0);
    let mut expected = Vec::new();
    for row in &rows {
        let reply = upstream
            .infer(
                "digits_up_reference",
                &common::digits_body(std::slice::from_ref(row)),
            )
            .await;
        expected.push(reply.output("label")["data"].clone());
    }
    let tasks: Vec<_> = rows
        .iter()
        .cloned()
        .map(|row| {
            let front = front.clone();
            tokio::spawn(async move {
                front
                    .infer("digits_front_batch", &common::digits_body(&[row]))
                    .await
            })
        })
        .collect();
    let mut largest = 0;
    for (index, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap();
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "row {index}: {:?}",
            reply.body
        );
        assert_eq!(
            reply.output("label")["data"],
            expected[index],
            "row {index}"
        );
        largest = largest.max(
            reply
                .header("x-tollgate-batch-size")
                .parse::<usize>()
                .unwrap(),
        );
    }
    assert!(largest > 1, "no two rows shared an upstream request");
    let sent = requests_to(&upstream, "digits_up_batch").await;
    let rows_seen = upstream
        .metric(
            "tollgate_inference_rows_total",
            &["model=\"digits_up_batch\""],
        )
        .await;
    assert_eq!(
        rows_seen, 64.0,
        "every row reached the upstream exactly once"
    );
    assert!(sent < 64.0, "{sent} upstream requests for 64 rows");
    let counted = front
        .metric(
            "tollgate_upstream_requests_total",
            &["model=\"digits_front_batch\"", "outcome=\"success\""],
        )
        .await;
    assert_eq!(
        counted, sent,
        "the front's upstream metrics count what the upstream saw"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_outage_is_a_fast_503_and_service_returns_with_the_upstream() {
    for scheme in ["http", "grpc"] {
        let up_name = format!("digits_up_outage_{scheme}");
        let front_name = format!("digits_front_outage_{scheme}");
        let upstream_toml = upstream_config(&[(&up_name, "")]);
        let ports = Ports::pick();
        let upstream = peers::start_at(ports, &upstream_toml).await;
        let address = if scheme == "grpc" {
            ports.grpc
        } else {
            ports.http
        };
        let url = format!("upstream = \"{scheme}://{address}\"");
        let front = common::start(&front_config(
            &front_name,
            &up_name,
            &url,
            "upstream_breaker_failures = 2",
        ))
        .await;
        let ready_path = format!("/v2/models/{front_name}/ready");
        let rows = peers::rows(40, 0.25);
        let ask = |index: usize| common::digits_body(&rows[index..=index]);
        assert_eq!(
            front.infer(&front_name, &ask(0)).await.status,
            StatusCode::OK
        );

        upstream.stop().await;
        for index in 1..4 {
            let started = Instant::now();
            let reply = front.infer(&front_name, &ask(index)).await;
            assert_eq!(
                reply.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{scheme}: {:?}",
                reply.body
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{scheme}: a 503 took {:?}",
                started.elapsed()
            );
            let error = reply.json()["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(error.contains("upstream"), "{scheme}: {error}");
        }
        let not_ready = eventually(Duration::from_secs(5), || async {
            front.get(&ready_path).await.status == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
        assert!(
            not_ready,
            "{scheme}: the front still says ready with its upstream gone"
        );
        // The answer cached before the outage is still served.
        assert_eq!(
            front
                .infer(&front_name, &ask(0))
                .await
                .header("x-tollgate-cache"),
            "hit"
        );

        let upstream = peers::start_at(ports, &upstream_toml).await;
        let mut next = 10;
        let recovered = eventually(Duration::from_secs(10), || {
            next += 1;
            let body = ask(next);
            let front = &front;
            let name = &front_name;
            async move { front.infer(name, &body).await.status == StatusCode::OK }
        })
        .await;
        assert!(
            recovered,
            "{scheme}: no recovery after the upstream came back"
        );
        assert_eq!(
            front.get(&ready_path).await.status,
            StatusCode::OK,
            "{scheme}"
        );
        let errors = front
            .metric(
                "tollgate_upstream_errors_total",
                &[&format!("model=\"{front_name}\"")],
            )
            .await;
        assert!(errors >= 3.0, "{scheme}: {errors} upstream errors counted");
        // Once the breaker or the health check gave up on it, requests were refused unsent.
        let refused = front
            .metric(
                "tollgate_upstream_errors_total",
                &[&format!("model=\"{front_name}\""), "kind=\"refused\""],
            )
            .await;
        assert!(
            refused >= 1.0,
            "{scheme}: every request during the outage tried to connect"
        );
        front.stop().await;
        upstream.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_upstream_answers_504_within_the_upstream_timeout() {
    // A batch that never fills waits out the upstream's long queue delay.
    let upstream = common::start(&upstream_config(&[(
        "digits_up_slow",
        "max_batch_size = 64\nmax_queue_delay_us = 3000000",
    )]))
    .await;
    let url = format!("upstream = \"http://{}\"", upstream.server.http_addr);
    let front = common::start(&front_config(
        "digits_front_slow",
        "digits_up_slow",
        &url,
        "upstream_timeout_ms = 300",
    ))
    .await;
    let started = Instant::now();
    let reply = front
        .infer(
            "digits_front_slow",
            &common::digits_body(&peers::rows(1, 0.0)),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{:?}",
        reply.body
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    let error = reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("did not answer within 300 ms"), "{error}");
    let timeouts = front
        .metric(
            "tollgate_upstream_errors_total",
            &["model=\"digits_front_slow\"", "kind=\"timeout\""],
        )
        .await;
    assert_eq!(timeouts, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_upstreams_4xx_reaches_the_caller_with_its_message_and_is_not_cached() {
    for scheme in ["http", "grpc"] {
        let up_name = format!("digits_up_4xx_{scheme}");
        let front_name = format!("digits_front_4xx_{scheme}");
        // The front accepts 8 rows; the upstream takes at most 4.
        let upstream = common::start(&upstream_config(&[(&up_name, "max_batch_size = 4")])).await;
        let address = if scheme == "grpc" {
            upstream.server.grpc_addr
        } else {
            upstream.server.http_addr
        };
        let url = format!("upstream = \"{scheme}://{address}\"");
        let front = common::start(&front_config(
            &front_name,
            &up_name,
            &url,
            "max_batch_size = 8",
        ))
        .await;
        let body = common::digits_body(&peers::rows(8, 0.0));
        for _ in 0..2 {
            let reply = front.infer(&front_name, &body).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{scheme}: {:?}",
                reply.body
            );
            let error = reply.json()["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                error.contains("exceed the model's max_batch_size of 4"),
                "{scheme}: {error}"
            );
        }
        assert_eq!(
            requests_to(&upstream, &up_name).await,
            2.0,
            "{scheme}: a failure was cached"
        );
        // The upstream judged the request, so it is healthy: the breaker stays closed.
        let ready = front.get(&format!("/v2/models/{front_name}/ready")).await;
        assert_eq!(ready.status, StatusCode::OK, "{scheme}");
        front.stop().await;
        upstream.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_spread_over_live_upstreams_and_avoid_a_dead_one() {
    let toml = upstream_config(&[("digits_up_lb", "")]);
    let (first, second) = (common::start(&toml).await, common::start(&toml).await);
    let dead = format!("http://127.0.0.1:{}", peers::free_port());
    let live = [
        format!("http://{}", first.server.http_addr),
        format!("http://{}", second.server.http_addr),
    ];
    // The dead one first: start-up must look past it, and so must the first requests.
    let list = format!("upstreams = [\"{dead}\", \"{}\", \"{}\"]", live[0], live[1]);
    let front = common::start(&front_config(
        "digits_front_lb",
        "digits_up_lb",
        &list,
        "cache = false",
    ))
    .await;
    for row in peers::rows(12, 0.75) {
        let reply = front
            .infer("digits_front_lb", &common::digits_body(&[row]))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    for url in &live {
        let label = format!("upstream=\"{url}\"");
        let served = front
            .metric(
                "tollgate_upstream_requests_total",
                &["model=\"digits_front_lb\"", &label, "outcome=\"success\""],
            )
            .await;
        assert!(served >= 3.0, "{url} served only {served} of 12");
    }
    let dead_label = format!("upstream=\"{dead}\"");
    let marked = eventually(Duration::from_secs(3), || async {
        front
            .metric(
                "tollgate_upstream_healthy",
                &["model=\"digits_front_lb\"", &dead_label],
            )
            .await
            == 0.0
    })
    .await;
    assert!(marked, "the dead upstream was never marked unhealthy");
    assert_eq!(
        front.get("/v2/models/digits_front_lb/ready").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_started_before_its_upstream_serves_once_the_upstream_appears() {
    let ports = Ports::pick();
    let url = format!("upstream = \"http://{}\"", ports.http);
    let front_name = "digits_front_early";
    let started = Instant::now();
    let front = common::start(&front_config(
        front_name,
        "digits_up_late",
        &url,
        "upstream_startup_wait_ms = 0",
    ))
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // Not ready, and every route of the model says why.
    let ready = front.get(&format!("/v2/models/{front_name}/ready")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let metadata = front.get(&format!("/v2/models/{front_name}")).await;
    assert_eq!(metadata.status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = metadata.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("not ready") && reason.contains(front_name),
        "{reason}"
    );
    let (rows, labels) = common::digits_rows();
    let body = common::digits_body(&rows[..2]);
    let refused = front.infer(front_name, &body).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refused.body
    );
    // The server itself is up and ready for its other work meanwhile.
    assert_eq!(front.get("/v2/health/ready").await.status, StatusCode::OK);

    let upstream = peers::start_at(ports, &upstream_config(&[("digits_up_late", "")])).await;
    let appeared = Instant::now();
    let ready = eventually(Duration::from_secs(10), || async {
        front
            .get(&format!("/v2/models/{front_name}/ready"))
            .await
            .status
            == StatusCode::OK
    })
    .await;
    assert!(ready, "not ready 10 s after its upstream appeared");
    assert!(appeared.elapsed() < Duration::from_secs(10));
    let reply = front.infer(front_name, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let label = outputs(&reply)
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap()["data"]
        .clone();
    assert_eq!(label, json!(labels[..2]));
    front.stop().await;
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_back_with_another_model_is_served_as_it_now_describes_it() {
    let ports = Ports::pick();
    let url = format!("upstream = \"http://{}\"", ports.http);
    let front_name = "front_changing";
    let first = peers::start_at(ports, &upstream_config(&[("changing", "")])).await;
    let front = common::start(&front_config(front_name, "changing", &url, "")).await;
    let inputs = |reply: &common::Reply| reply.json()["inputs"].clone();
    let before = inputs(&front.get(&format!("/v2/models/{front_name}")).await);
    assert_eq!(before[0]["shape"], json!([-1, 64]), "{before}");
    first.stop().await;
    // The front sees the outage (a replacement faster than its checks is caught by the
    // periodic description instead).
    let down = eventually(Duration::from_secs(10), || async {
        front
            .get(&format!("/v2/models/{front_name}/ready"))
            .await
            .status
            != StatusCode::OK
    })
    .await;
    assert!(down, "the front never saw its upstream stop");
    // The same name, now another model with other inputs.
    let toml = "[cache]\nenabled = false\n\n[[models]]\nname = \"changing\"\npath = \"models/int_scorer/1/model.onnx\"\n";
    let second = peers::start_at(ports, toml).await;
    let direct = common::Client::new(&format!("http://{}", second.http_addr));
    let want = inputs(&direct.get("/v2/models/changing").await);
    assert_ne!(want, before);
    let changed = eventually(Duration::from_secs(15), || async {
        inputs(&front.get(&format!("/v2/models/{front_name}")).await) == want
    })
    .await;
    assert!(changed, "the front still describes the old model");
    assert_eq!(
        front
            .get(&format!("/v2/models/{front_name}/ready"))
            .await
            .status,
        StatusCode::OK
    );
    front.stop().await;
    second.stop().await;
}

/// Names of this process's threads (Linux keeps the first 15 bytes of each).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
                .map(|name| name.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// An upstream model's instances are tasks: 48 of them, all busy, hold no thread of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_instances_hold_no_threads() {
    let upstream = common::start(&upstream_config(&[("digits_up_many", "")])).await;
    let url = format!("upstream = \"http://{}\"", upstream.server.http_addr);
    let front = Arc::new(
        common::start(&front_config(
            "up48",
            "digits_up_many",
            &url,
            "instances = 48\ncache = false",
        ))
        .await,
    );
    let rows = peers::rows(48, 0.5);
    let tasks: Vec<_> = rows
        .into_iter()
        .map(|row| {
            let front = front.clone();
            tokio::spawn(async move { front.infer("up48", &common::digits_body(&[row])).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().status, StatusCode::OK);
    }
    let named: Vec<String> = thread_names()
        .into_iter()
        .filter(|name| name.starts_with("up48-"))
        .collect();
    assert!(
        named.is_empty(),
        "threads for upstream instances: {named:?}"
    );
}
