//! Several gateways on one real redis-server behave as one (three `tollgate serve` processes,
//! or servers in this process): a tenant's budget holds across them (spend stays within the
//! budget plus what was in flight), it is then refused on every replica, each threshold alerts
//! once for the fleet, an anomaly in the fleet's spend alerts once, and with Redis killed under
//! load (`fail_open`) every request still succeeds and the spend reconciles when Redis is back.

mod common;

use hyper::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

const PRICE_PER_HOUR: f64 = 3600.0; // one dollar per device-second: digits cost about 1e-4 each

fn config(redis_url: &str, budget_usd: f64, webhook: &str, extra: &str) -> String {
    format!(
        r#"
[cache]
enabled = false

[fleet]
redis_url = "{redis_url}"
{extra}

[pricing.device_per_hour]
cpu = {PRICE_PER_HOUR}

[alerts]
webhook_url = "{webhook}"

[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 8
max_queue_delay_us = 500

[[tenants]]
name = "capped"
api_key_blake3 = "{key}"
budget_usd = {budget_usd}
budget_period = "day"
budget_action = "reject"
"#,
        key = blake3::hash(b"capped-key").to_hex(),
    )
}

/// One inference request of the budgeted tenant.
async fn post(gateway: &common::Client, body: &Value) -> common::Reply {
    let auth = [("authorization", "Bearer capped-key".to_string())];
    let body = bytes::Bytes::from(body.to_string());
    gateway
        .send(Method::POST, "/v2/models/digits/infer", &auth, body)
        .await
}

/// One request of the tenant; `Some(cost)` when admitted, `None` when refused with 402.
async fn spend(gateway: &common::Client, body: &Value) -> Option<f64> {
    let reply = post(gateway, body).await;
    match reply.status {
        StatusCode::OK => Some(reply.header("x-tollgate-cost-usd").parse().unwrap()),
        StatusCode::PAYMENT_REQUIRED => None,
        other => panic!("unexpected {other}: {:?}", reply.body),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hold_one_budget_and_alert_once() {
    let redis = common::Redis::start();
    let (webhook, received) = common::webhook_receiver().await;
    let budget = 0.004;
    let toml = config(&redis.url(), budget, &webhook, "");
    // Three gateway processes: nothing is shared but Redis.
    let replicas = vec![
        std::sync::Arc::new(common::spawn(&toml)),
        std::sync::Arc::new(common::spawn(&toml)),
        std::sync::Arc::new(common::spawn(&toml)),
    ];
    let (rows, _) = common::digits_rows();
    // 12 clients, spread over the three replicas, each spending until it is refused.
    let mut clients = Vec::new();
    for client in 0..12 {
        let gateway = replicas[client % 3].clone();
        let row = rows[client % rows.len()].clone();
        clients.push(tokio::spawn(async move {
            let (mut admitted, mut most) = (0.0, 0.0f64);
            for _ in 0..2000 {
                match spend(&gateway, &common::digits_body(std::slice::from_ref(&row))).await {
                    Some(cost) => {
                        admitted += cost;
                        most = most.max(cost);
                    }
                    None => return (admitted, most),
                }
            }
            panic!("client {client} was never refused");
        }));
    }
    let (mut admitted, mut most) = (0.0, 0.0f64);
    for client in clients {
        let (spent, largest) = client.await.unwrap();
        admitted += spent;
        most = most.max(largest);
    }
    // Slices still held by a replica go back when unused; then every replica refuses.
    for gateway in &replicas {
        let mut refused = false;
        for _ in 0..400 {
            match spend(gateway, &common::digits_body(&rows[0..1])).await {
                Some(cost) => {
                    admitted += cost;
                    most = most.max(cost);
                }
                None => {
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused, "a replica kept admitting the tenant");
    }
    assert!(admitted > budget * 0.5, "the budget was used: {admitted}");
    let bound = budget + 12.0 * most;
    assert!(
        admitted <= bound,
        "admitted {admitted} passes the budget {budget} by more than 12 requests in flight ({most} each)"
    );
    // Every replica refuses now, and says why.
    for gateway in &replicas {
        let reply = post(gateway, &common::digits_body(&rows[1..2])).await;
        assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
        assert!(reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("across the fleet"));
    }
    // Deliveries are in the background; a duplicate would arrive within this wait too.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut thresholds: Vec<u64> = received
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "budget")
        .map(|a| a["threshold_percent"].as_u64().unwrap())
        .collect();
    thresholds.sort();
    assert_eq!(
        thresholds,
        vec![50, 80, 100],
        "each threshold alerts once for the fleet"
    );
    // Every replica shows the fleet's spend, not its own share of it.
    for gateway in &replicas {
        let ratio = gateway
            .metric("tollgate_budget_used_ratio", &["tenant=\"capped\""])
            .await;
        assert!(ratio >= 0.9, "a replica shows {ratio} of the budget used");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_under_load_fail_open_serves_and_the_spend_reconciles() {
    let port = common::free_port();
    let mut redis = common::Redis::start_on(port, &[]);
    let (webhook, received) = common::webhook_receiver().await;
    let toml = config(
        &redis.url(),
        1000.0,
        &webhook,
        "on_redis_down = \"fail_open\"",
    );
    let gateway = common::start(&toml).await;
    let (rows, _) = common::digits_rows();
    let mut local = 0.0;
    for round in 0..30 {
        if round == 10 {
            redis.kill();
        }
        let row = &rows[round % rows.len()];
        local += spend(&gateway, &common::digits_body(std::slice::from_ref(row)))
            .await
            .expect("admitted: Redis being down fails nothing under fail_open");
    }
    // A new, empty Redis on the same port: the replica folds in what it spent meanwhile.
    let redis = common::Redis::start_on(port, &[]);
    let mut connection = redis.connect(0);
    let mut fleet_spent = 0.0;
    for _ in 0..150 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("tollgate:fleet:*budget*")
            .query(&mut connection)
            .unwrap();
        if let Some(key) = keys.first() {
            let spent: Option<String> = redis::cmd("HGET")
                .arg(key)
                .arg("spent")
                .query(&mut connection)
                .unwrap();
            fleet_spent = spent.map(|s| s.parse().unwrap()).unwrap_or(0.0);
            if (fleet_spent - local).abs() <= local * 1e-9 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        (fleet_spent - local).abs() <= local * 1e-9,
        "Redis holds {fleet_spent} of the {local} spent since the outage began"
    );
    let kinds: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "fleet")
        .map(|a| a["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.iter().any(|m| m.contains("unavailable")) && kinds.iter().any(|m| m.contains("back")),
        "the outage and the recovery were alerted: {kinds:?}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_budgeted_tenants_while_redis_is_down_and_will_not_start_without_it() {
    let port = common::free_port();
    let mut redis = common::Redis::start_on(port, &[]);
    let toml = config(
        &redis.url(),
        1000.0,
        "http://127.0.0.1:9/none",
        "on_redis_down = \"fail_closed\"",
    );
    let gateway = common::start(&toml).await;
    let (rows, _) = common::digits_rows();
    let body = common::digits_body(&rows[0..1]);
    assert!(spend(&gateway, &body).await.is_some());
    redis.kill();
    let mut status = StatusCode::OK;
    for _ in 0..40 {
        let reply = post(&gateway, &body).await;
        status = reply.status;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(reply.json()["error"].as_str().unwrap().contains("Redis"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Tenants without a budget are served all along.
    let anonymous = gateway.infer("digits", &body).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    gateway.stop().await;
    let refused = tollgate::server::Server::start(common::config(&toml)).await;
    let error = refused
        .err()
        .expect("no start without the fleet's Redis under fail_closed");
    assert!(error.to_string().contains("fail_closed"), "{error}");
}

/// Anomaly detection watches the fleet's spend: a tenant whose usual spend runs through one
/// replica and whose surge runs through another looks flat to the first and new to the second,
/// yet the fleet sees the surge, and alerts it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anomaly_in_the_fleets_spend_is_alerted_once() {
    use tollgate::metering::alerts::Kind;
    use tollgate::metering::meter::Metering;
    use tollgate::metering::record::UsageRecord;

    let redis = common::Redis::start();
    let toml = format!(
        "[fleet]\nredis_url = \"{}\"\n[alerts]\nanomaly_window_minutes = 2\n\
         [[models]]\nname = \"digits\"\npath = \"models/digits/1/model.onnx\"\n",
        redis.url()
    );
    let usual = Metering::open(&common::config(&toml)).unwrap();
    let surge = Metering::open(&common::config(&toml)).unwrap();
    // Minutes from the next one on: both replicas were up before them.
    let first = (tollgate::metering::clock::now_ms() / 60_000 + 1) * 60_000;
    let record = |minute: i64, cost: f64| UsageRecord {
        request_id: format!("r-{minute}-{cost}").into(),
        time_ms: first + minute * 60_000 + 1_000,
        tenant: "anonymous".into(),
        model: "digits".into(),
        cost_usd: cost,
        ..UsageRecord::default()
    };
    for minute in 0..30 {
        usual.account(&record(minute, 0.001));
        if (20..23).contains(&minute) {
            surge.account(&record(minute, 0.05));
        }
        usual.share_spend().await;
        surge.share_spend().await;
        let closed_at = first + (minute + 1) * 60_000 + 5_000;
        usual.close_minutes(closed_at).await;
        surge.close_minutes(closed_at).await;
    }
    let anomalies: Vec<_> = [&usual, &surge]
        .iter()
        .flat_map(|m| m.alerts.list())
        .filter(|a| a.kind == Kind::Anomaly)
        .collect();
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    let expected = tollgate::metering::money::usd(0.001 + 0.05);
    assert!(
        anomalies[0]
            .message
            .contains(&format!("spent {expected}/min")),
        "the fleet's spend, not one replica's: {}",
        anomalies[0].message
    );
}
