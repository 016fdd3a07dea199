//! Cost metering end to end with the real server and model: per-request cost against the
//! device-time formula, savings of hits, identity and tags, team totals from the cost API, the
//! FOCUS export, budgets that reject or demote, alerts to a real webhook receiver, and the
//! reconciliation of request and idle cost with device time.

mod common;

use bytes::Bytes;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

const PRICE_PER_HOUR: f64 = 3.6; // one micro-dollar per device-millisecond: easy to check by eye

fn key_hash(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex().to_string()
}

fn config(extra: &str) -> String {
    format!(
        r#"
[server]
admin_token_blake3 = "{admin}"

[pricing.device_per_hour]
cpu = {PRICE_PER_HOUR}

[metering]
allowed_tags = ["env", "feature"]
idle_interval_seconds = 3600

[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 16
max_queue_delay_us = 2000

[[tenants]]
name = "search"
api_key_blake3 = "{search}"
team = "discovery"
project = "ranking"

[[tenants]]
name = "ads"
api_key_blake3 = "{ads}"
team = "discovery"
project = "bidding"

[[tenants]]
name = "mail"
api_key_blake3 = "{mail}"
team = "comms"
project = "spam"
{extra}
"#,
        admin = key_hash("root-token"),
        search = key_hash("search-key"),
        ads = key_hash("ads-key"),
        mail = key_hash("mail-key"),
    )
}

fn bearer(key: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {key}"))
}

async fn infer_as(
    gateway: &common::Gateway,
    key: &str,
    body: &Value,
    tags: Option<&str>,
) -> common::Reply {
    let mut headers = vec![bearer(key)];
    if let Some(tags) = tags {
        headers.push(("x-tollgate-tags", tags.to_string()));
    }
    gateway
        .send(
            Method::POST,
            "/v2/models/digits/infer",
            &headers,
            Bytes::from(body.to_string()),
        )
        .await
}

/// Commits every usage record queued so far, so the cost API sees them.
async fn flush_ledger(gateway: &common::Gateway) {
    gateway
        .server
        .gateway
        .metering
        .ledger
        .flush()
        .await
        .unwrap();
}

async fn admin_get(gateway: &common::Gateway, path: &str) -> common::Reply {
    gateway
        .send(Method::GET, path, &[bearer("root-token")], Bytes::new())
        .await
}

fn header_f64(reply: &common::Reply, name: &str) -> f64 {
    reply
        .header(name)
        .parse()
        .unwrap_or_else(|_| panic!("{name}: `{}`", reply.header(name)))
}

fn row(seed: usize) -> Vec<f32> {
    (0..64).map(|i| ((seed * 7 + i) % 16) as f32).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costs_follow_device_time_and_hits_save_the_original_cost() {
    let gateway = common::start(&config("")).await;
    let body = common::digits_body(&[row(1), row(2)]);
    let miss = infer_as(&gateway, "search-key", &body, None).await;
    assert_eq!(miss.status, StatusCode::OK);
    let compute_us = header_f64(&miss, "x-tollgate-compute-us");
    let batch: f64 = header_f64(&miss, "x-tollgate-batch-size");
    let cost = header_f64(&miss, "x-tollgate-cost-usd");
    let expected = compute_us / 3.6e9 * PRICE_PER_HOUR * 2.0 / batch;
    assert!(
        cost > 0.0 && ((cost - expected) / expected).abs() < 1e-9,
        "{cost} vs {expected}"
    );
    assert_eq!(
        miss.json()["parameters"]["cost_usd"].as_f64().unwrap(),
        cost
    );
    let hit = infer_as(&gateway, "search-key", &body, None).await;
    assert_eq!(hit.header("x-tollgate-cache"), "hit");
    assert_eq!(header_f64(&hit, "x-tollgate-cost-usd"), 0.0);
    assert_eq!(header_f64(&hit, "x-tollgate-saved-usd"), cost);
    assert!(!hit.header("x-tollgate-request-id").is_empty());
    assert_ne!(
        hit.header("x-tollgate-request-id"),
        miss.header("x-tollgate-request-id")
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_tags_and_admin_access_are_enforced() {
    let gateway = common::start(&config("[auth]\nrequired = true\n")).await;
    let body = common::digits_body(&[row(3)]);
    // (headers, status, fragment of the error)
    type Case<'a> = (Vec<(&'a str, String)>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![],
            StatusCode::UNAUTHORIZED,
            "a tenant's API key is required",
        ),
        (
            // The admin token pays for nothing, so it is no inference key.
            vec![bearer("root-token")],
            StatusCode::UNAUTHORIZED,
            "the admin token is not an inference key",
        ),
        (
            vec![bearer("wrong")],
            StatusCode::UNAUTHORIZED,
            "not recognised",
        ),
        (
            vec![
                bearer("search-key"),
                ("x-tollgate-tags", "owner=bob".into()),
            ],
            StatusCode::BAD_REQUEST,
            "`owner` is not allowed",
        ),
        (
            vec![bearer("search-key"), ("x-tollgate-tags", "env=prod".into())],
            StatusCode::OK,
            "",
        ),
    ];
    for (headers, status, fragment) in cases {
        let reply = gateway
            .send(
                Method::POST,
                "/v2/models/digits/infer",
                &headers,
                Bytes::from(body.to_string()),
            )
            .await;
        assert_eq!(reply.status, status, "{headers:?}: {:?}", reply.body);
        if !fragment.is_empty() {
            let error = reply.json()["error"].as_str().unwrap().to_string();
            assert!(error.contains(fragment), "{error}");
        }
    }
    let alerts = gateway
        .send(
            Method::GET,
            "/v1/alerts",
            &[bearer("search-key")],
            Bytes::new(),
        )
        .await;
    assert_eq!(alerts.status, StatusCode::FORBIDDEN);
    let alerts = admin_get(&gateway, "/v1/alerts").await;
    assert_eq!(alerts.status, StatusCode::OK);
    let anonymous = gateway
        .send(Method::GET, "/v1/alerts", &[], Bytes::new())
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let error = anonymous.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("needs the admin token"), "{error}");
    // A known endpoint asked with the wrong method is a 405 naming the right one, before
    // any credential is looked at.
    for (method, path, allowed) in [
        (Method::GET, "/v1/cache", "DELETE"),
        (Method::POST, "/v1/costs", "GET"),
        (Method::GET, "/v2/models/digits/infer", "POST"),
        (Method::POST, "/v2/health/ready", "GET"),
    ] {
        let reply = gateway.send(method.clone(), path, &[], Bytes::new()).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(reply.header("allow"), allowed, "{method} {path}");
        assert!(reply.json()["error"].as_str().unwrap().contains(allowed));
    }
    let unknown = gateway
        .send(Method::GET, "/v1/nothing", &[], Bytes::new())
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    // The gRPC front end asks for the same key in `authorization` metadata.
    let mut client = tollgate::api::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
        format!("http://{}", gateway.server.grpc_addr),
    )
    .await
    .unwrap();
    let request = tollgate::api::grpc::proto::ModelInferRequest {
        model_name: "digits".into(),
        inputs: vec![
            tollgate::api::grpc::proto::model_infer_request::InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![1, 64],
                contents: Some(tollgate::api::grpc::proto::InferTensorContents {
                    fp32_contents: row(3),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let refused = client.model_infer(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut with_key = tonic::Request::new(request);
    with_key
        .metadata_mut()
        .insert("authorization", "Bearer mail-key".parse().unwrap());
    assert!(client.model_infer(with_key).await.is_ok());
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_totals_from_the_cost_api_equal_the_sum_of_response_headers() {
    let gateway = common::start(&config("")).await;
    let mut by_team: std::collections::HashMap<&str, f64> = Default::default();
    let mut requests_by_team: std::collections::HashMap<&str, u64> = Default::default();
    let mut hits = 0;
    for i in 0..24 {
        let (key, team) = [
            ("search-key", "discovery"),
            ("ads-key", "discovery"),
            ("mail-key", "comms"),
        ][i % 3];
        // Every fourth request repeats an earlier one: hits belong in the totals too (as 0).
        let body = common::digits_body(&[row(if i % 4 == 3 { i - 3 } else { i })]);
        let reply = infer_as(&gateway, key, &body, Some("env=test")).await;
        assert_eq!(reply.status, StatusCode::OK);
        *by_team.entry(team).or_default() += header_f64(&reply, "x-tollgate-cost-usd");
        *requests_by_team.entry(team).or_default() += 1;
        hits += u64::from(reply.header("x-tollgate-cache") == "hit");
    }
    flush_ledger(&gateway).await;
    let reply = admin_get(&gateway, "/v1/costs?group_by=team").await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let rows = reply.json()["rows"].as_array().unwrap().clone();
    for (&team, &total) in &by_team {
        let row = rows
            .iter()
            .find(|r| r["group"]["team"] == team)
            .unwrap_or_else(|| panic!("no row for {team}: {rows:?}"));
        let reported = row["cost_usd"].as_f64().unwrap();
        assert!(
            ((reported - total) / total).abs() < 1e-9,
            "{team}: {reported} vs {total}"
        );
    }
    // A tenant sees its own spend only.
    let own = gateway
        .send(
            Method::GET,
            "/v1/costs?group_by=model",
            &[bearer("mail-key")],
            Bytes::new(),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK);
    for row in own.json()["rows"].as_array().unwrap() {
        assert_eq!(row["group"]["tenant"], "mail");
    }
    // The same totals over time, from the rollups.
    let reply = admin_get(
        &gateway,
        "/v1/costs/timeseries?group_by=team&step_seconds=3600",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["step_seconds"], 3600);
    let series = answer["series"].as_array().unwrap();
    let mut series_hits = 0;
    for (team, total) in &by_team {
        let points = series
            .iter()
            .find(|s| s["group"]["team"] == *team)
            .unwrap_or_else(|| panic!("no series for {team}: {series:?}"))["points"]
            .as_array()
            .unwrap();
        let cost: f64 = points.iter().map(|p| p["cost_usd"].as_f64().unwrap()).sum();
        let requests: u64 = points.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
        series_hits += points
            .iter()
            .map(|p| p["cache_hits"].as_u64().unwrap())
            .sum::<u64>();
        assert!(
            ((cost - total) / total).abs() < 1e-9,
            "{team}: {cost} vs {total}"
        );
        assert_eq!(requests, requests_by_team[team], "{team}");
        assert!(
            points
                .iter()
                .all(|p| p["t"].as_str().unwrap().ends_with(":00:00Z")),
            "{points:?}"
        );
    }
    assert_eq!(series_hits, hits);
    let own = gateway
        .send(
            Method::GET,
            "/v1/costs/timeseries",
            &[bearer("mail-key")],
            Bytes::new(),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK);
    let own = own.json();
    assert!(!own["series"].as_array().unwrap().is_empty());
    for series in own["series"].as_array().unwrap() {
        assert_eq!(series["group"]["tenant"], "mail");
    }
    let bad_step = admin_get(&gateway, "/v1/costs/timeseries?step_seconds=90").await;
    assert_eq!(bad_step.status, StatusCode::BAD_REQUEST);
    assert!(bad_step.json()["error"]
        .as_str()
        .unwrap()
        .contains("step_seconds"));
    let bad = admin_get(&gateway, "/v1/costs?group_by=colour").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let backwards = admin_get(&gateway, "/v1/costs?from=2026-02-01&to=2026-01-01").await;
    assert_eq!(backwards.status, StatusCode::BAD_REQUEST);
    // Query values as Python's requests sends them: percent-encoded, `+` for a space... (status,
    // and the field an error must name).
    let queries = [
        (
            "/v1/costs?from=2026-12-01T00%3A00%3A00Z&to=2026-12-02",
            StatusCode::OK,
            "",
        ),
        (
            "/v1/costs?from=2026-11-30T19%3A00%3A00-05%3A00",
            StatusCode::OK,
            "",
        ),
        ("/v1/costs?group_by=team%2Cmodel", StatusCode::OK, ""),
        ("/v1/costs?from=2026-02-31", StatusCode::BAD_REQUEST, "from"),
        (
            "/v1/costs?to=2026-12-01T00%3A00%3A00",
            StatusCode::BAD_REQUEST,
            "to",
        ),
        (
            "/v1/costs?group_by=team+model",
            StatusCode::BAD_REQUEST,
            "group_by",
        ),
    ];
    for (path, status, field) in queries {
        let reply = admin_get(&gateway, path).await;
        assert_eq!(reply.status, status, "{path}");
        if status != StatusCode::OK {
            let error = reply.json()["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(error.starts_with(field), "{path}: {error}");
        }
    }
    let grouped = admin_get(&gateway, "/v1/costs?group_by=team%2Cmodel")
        .await
        .json();
    let keys: Vec<&String> = grouped["rows"][0]["group"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert!(
        keys.contains(&&"team".to_string()) && keys.contains(&&"model".to_string()),
        "{grouped}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_focus_export_has_every_mandatory_column() {
    let gateway = common::start(&config("")).await;
    for i in 0..4 {
        let reply = infer_as(
            &gateway,
            "search-key",
            &common::digits_body(&[row(100 + i)]),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let one = infer_as(
        &gateway,
        "mail-key",
        &common::digits_body(&[row(200)]),
        None,
    )
    .await;
    let request_id = one.header("x-tollgate-request-id").to_string();
    flush_ledger(&gateway).await;
    let reply = admin_get(&gateway, "/v1/costs/focus").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("content-type").starts_with("text/csv"));
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for column in [
        "BilledCost",
        "BillingAccountId",
        "BillingAccountName",
        "BillingCurrency",
        "BillingPeriodStart",
        "BillingPeriodEnd",
        "ChargeCategory",
        "ChargeClass",
        "ChargeDescription",
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "ContractedCost",
        "EffectiveCost",
        "InvoiceIssuerName",
        "ListCost",
        "PricingQuantity",
        "PricingUnit",
        "ProviderName",
        "PublisherName",
        "ServiceCategory",
        "ServiceName",
    ] {
        assert!(header.contains(&column), "missing {column} in {header:?}");
    }
    let rows: Vec<&str> = lines.collect();
    assert!(rows.iter().any(|r| r.contains("search")), "{text}");
    assert!(
        rows.iter().all(|r| r.contains("AI and Machine Learning")),
        "{text}"
    );
    let usage = gateway
        .send(
            Method::GET,
            &format!("/v1/usage/{request_id}"),
            &[bearer("mail-key")],
            Bytes::new(),
        )
        .await;
    assert_eq!(usage.status, StatusCode::OK);
    assert_eq!(usage.json()["tenant"], "mail");
    let other = gateway
        .send(
            Method::GET,
            &format!("/v1/usage/{request_id}"),
            &[bearer("search-key")],
            Bytes::new(),
        )
        .await;
    assert_eq!(
        other.status,
        StatusCode::NOT_FOUND,
        "another tenant's record stays hidden"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_budget_blocks_a_demote_budget_only_slows_and_the_webhook_hears_of_it() {
    let (url, received) = common::webhook_receiver().await;
    let budgets = format!(
        "[alerts]\nwebhook_url = \"{url}\"\n\n[[tenants]]\nname = \"tiny\"\napi_key_blake3 = \"{}\"\nbudget_usd = 1e-12\nbudget_period = \"day\"\nbudget_action = \"reject\"\n\n[[tenants]]\nname = \"slow\"\napi_key_blake3 = \"{}\"\nbudget_usd = 1e-12\nbudget_period = \"month\"\nbudget_action = \"demote\"\n",
        key_hash("tiny-key"),
        key_hash("slow-key"),
    );
    let gateway = common::start(&config(&budgets)).await;
    let first = infer_as(
        &gateway,
        "tiny-key",
        &common::digits_body(&[row(300)]),
        None,
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "under budget at first");
    let blocked = infer_as(
        &gateway,
        "tiny-key",
        &common::digits_body(&[row(301)]),
        None,
    )
    .await;
    assert_eq!(blocked.status, StatusCode::PAYMENT_REQUIRED);
    let error = blocked.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("tenant `tiny`")
            && error.contains("daily budget")
            && error.contains("resets at"),
        "{error}"
    );
    // A client may wait for the period to end: at most a day for a daily budget.
    let retry: u64 = blocked
        .header("retry-after")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=86_400).contains(&retry), "Retry-After: {retry}");
    let mut demoted_ids = Vec::new();
    for i in 0..3 {
        let demoted = infer_as(
            &gateway,
            "slow-key",
            &common::digits_body(&[row(400 + i)]),
            None,
        )
        .await;
        assert_eq!(
            demoted.status,
            StatusCode::OK,
            "a demote budget never refuses"
        );
        demoted_ids.push(demoted.header("x-tollgate-request-id").to_string());
    }
    flush_ledger(&gateway).await;
    // The first request was under budget; the later ones were served in the demoted lane.
    let lanes: Vec<Value> = {
        let mut lanes = Vec::new();
        for id in [first.header("x-tollgate-request-id"), &demoted_ids[2]] {
            lanes
                .push(admin_get(&gateway, &format!("/v1/usage/{id}")).await.json()["lane"].clone());
        }
        lanes
    };
    assert_eq!(lanes, [json!("realtime"), json!("demoted")]);
    let by_lane = admin_get(&gateway, "/v1/costs?group_by=tenant,lane")
        .await
        .json();
    let slow_lanes: Vec<Value> = by_lane["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["group"]["tenant"] == "slow")
        .map(|r| r["group"]["lane"].clone())
        .collect();
    assert!(slow_lanes.contains(&json!("demoted")), "{by_lane}");
    let mut kinds = Vec::new();
    for _ in 0..100 {
        kinds = received
            .lock()
            .unwrap()
            .iter()
            .map(|a| (a["tenant"].clone(), a["threshold_percent"].clone()))
            .collect();
        if kinds.contains(&(json!("tiny"), json!(100)))
            && kinds.contains(&(json!("slow"), json!(100)))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(kinds.contains(&(json!("tiny"), json!(100))), "{kinds:?}");
    assert!(kinds.contains(&(json!("slow"), json!(100))), "{kinds:?}");
    let listed = admin_get(&gateway, "/v1/alerts").await;
    assert!(listed.json()["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["kind"] == "budget"));
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_idle_cost_add_up_to_device_time() {
    // A model name of its own: device-time metrics are per process, shared with other tests.
    let gateway =
        common::start(&config("").replace("name = \"digits\"", "name = \"digits_reconcile\""))
            .await;
    for i in 0..20 {
        let body = common::digits_body(&[row(500 + i % 15)]);
        let reply = gateway
            .send(
                Method::POST,
                "/v2/models/digits_reconcile/infer",
                &[bearer(["search-key", "mail-key"][i % 2])],
                Bytes::from(body.to_string()),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let metering = &gateway.server.gateway.metering;
    metering.record_idle();
    metering.ledger.flush().await.unwrap();
    let reply = admin_get(&gateway, "/v1/costs?group_by=tenant,model").await;
    let total: f64 = reply.json()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum();
    let idle_rows: Vec<Value> = reply.json()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["group"]["tenant"] == "__idle__")
        .cloned()
        .collect();
    assert_eq!(
        idle_rows.len(),
        1,
        "idle time is charged to the model's __idle__ row"
    );
    let busy_s = gateway
        .metric(
            "tollgate_device_busy_seconds_total",
            &["model=\"digits_reconcile\""],
        )
        .await;
    let idle_s = gateway
        .metric(
            "tollgate_device_idle_seconds_total",
            &["model=\"digits_reconcile\""],
        )
        .await;
    let device_cost = (busy_s + idle_s) / 3600.0 * PRICE_PER_HOUR;
    assert!(
        ((total - device_cost) / device_cost).abs() < 1e-9,
        "Σ costs {total} vs device time {device_cost}"
    );
    gateway.stop().await;
}

/// A cache miss whose caller leaves while its batch waits still runs (a caller arriving later
/// may be waiting on it), and its cost goes on the leaving request's record, outcome
/// `cancelled`: device time a request caused is never billed to nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computation_whose_caller_left_is_billed_to_that_request() {
    let slow = "[[models]]\nname = \"digits_left\"\npath = \"models/digits/1/model.onnx\"\nmax_batch_size = 8\nmax_queue_delay_us = 300000\n";
    let gateway = common::start(&config(slow)).await;
    let body = common::digits_body(&[row(77)]).to_string();
    let request = format!(
        "POST /v2/models/digits_left/infer HTTP/1.1\r\nhost: x\r\nauthorization: Bearer search-key\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(gateway.server.http_addr)
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        // Gone while the batch still waits out its 300 ms delay.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let cancelled_cost = loop {
        flush_ledger(&gateway).await;
        let reply = admin_get(&gateway, "/v1/costs?group_by=model,outcome").await;
        let cost = reply.json()["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["group"]["model"] == "digits_left" && r["group"]["outcome"] == "cancelled"
            })
            .map(|r| r["cost_usd"].as_f64().unwrap())
            .sum::<f64>();
        if cost > 0.0 || std::time::Instant::now() > deadline {
            break cost;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        cancelled_cost > 0.0,
        "the computation's cost reached no record"
    );
    // The answer was cached: the next identical request is a hit that saves what was billed.
    let hit = gateway
        .infer("digits_left", &common::digits_body(&[row(77)]))
        .await;
    assert_eq!(hit.header("x-tollgate-cache"), "hit");
    let saved = header_f64(&hit, "x-tollgate-saved-usd");
    assert!(
        (saved - cancelled_cost).abs() <= cancelled_cost * 1e-9,
        "{saved} saved vs {cancelled_cost} billed"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_detail_misses_hits_keep_no_row_and_are_still_counted() {
    let gateway = common::start(&config("[ledger]\ndetail = \"misses\"\n")).await;
    let body = common::digits_body(&[row(500)]);
    let miss = infer_as(&gateway, "search-key", &body, None).await;
    let hit = infer_as(&gateway, "search-key", &body, None).await;
    assert_eq!(hit.header("x-tollgate-cache"), "hit");
    flush_ledger(&gateway).await;
    let kept = admin_get(
        &gateway,
        &format!("/v1/usage/{}", miss.header("x-tollgate-request-id")),
    )
    .await;
    assert_eq!(kept.status, StatusCode::OK);
    let gone = admin_get(
        &gateway,
        &format!("/v1/usage/{}", hit.header("x-tollgate-request-id")),
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let why = gone.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.contains("ledger.detail = \"misses\""), "{why}");
    let costs = admin_get(&gateway, "/v1/costs?group_by=cache").await.json();
    let counted: Vec<(Value, Value)> = costs["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["group"].get("tenant").is_none())
        .map(|r| (r["group"]["cache"].clone(), r["requests"].clone()))
        .collect();
    assert_eq!(
        counted,
        [(json!("hit"), json!(1)), (json!("miss"), json!(1))],
        "{costs}"
    );
    gateway.stop().await;
}
