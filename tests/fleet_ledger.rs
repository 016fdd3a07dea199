//! Three gateways on one PostgreSQL ledger behave as one for cost reports: traffic spread over
//! them by two tenants of different teams, and every replica's `/v1/costs?group_by=team`
//! equals the sum of the cost headers all three gave (1e-9), with the same request counts;
//! the FOCUS export of any one replica bills all of it.

mod common;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use std::collections::HashMap;

use common::postgres::Postgres;

fn key_hash(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex().to_string()
}

fn config(url: &str) -> String {
    format!(
        r#"
[server]
admin_token_blake3 = "{admin}"

[metering]
idle_interval_seconds = 3600

[ledger]
url = "{url}"

[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 8
max_queue_delay_us = 1000

[[tenants]]
name = "search"
api_key_blake3 = "{search}"
team = "discovery"

[[tenants]]
name = "mail"
api_key_blake3 = "{mail}"
team = "comms"
"#,
        admin = key_hash("root-token"),
        search = key_hash("search-key"),
        mail = key_hash("mail-key"),
    )
}

fn row(seed: usize) -> Vec<f32> {
    (0..64).map(|i| ((seed * 5 + i) % 16) as f32).collect()
}

async fn get(gateway: &common::Gateway, path: &str) -> common::Reply {
    let auth = ("authorization", "Bearer root-token".to_string());
    gateway.send(Method::GET, path, &[auth], Bytes::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_reports_the_whole_fleets_costs() {
    let pg = Postgres::start();
    let toml = config(&pg.url());
    let replicas = [
        common::start(&toml).await,
        common::start(&toml).await,
        common::start(&toml).await,
    ];
    let mut cost_by_team: HashMap<&str, f64> = HashMap::new();
    let mut requests_by_team: HashMap<&str, u64> = HashMap::new();
    for i in 0..45 {
        let (key, team) = [("search-key", "discovery"), ("mail-key", "comms")][i % 2];
        // Every third request repeats one sent to the same replica: hits count (as 0) too.
        let seed = if i % 3 == 2 { i - 2 } else { i };
        let gateway = &replicas[i % 3];
        let reply = gateway
            .send(
                Method::POST,
                "/v2/models/digits/infer",
                &[("authorization", format!("Bearer {key}"))],
                Bytes::from(common::digits_body(&[row(seed)]).to_string()),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        let cost: f64 = reply.header("x-tollgate-cost-usd").parse().expect("cost");
        *cost_by_team.entry(team).or_default() += cost;
        *requests_by_team.entry(team).or_default() += 1;
    }
    for gateway in &replicas {
        gateway
            .server
            .gateway
            .metering
            .ledger
            .flush()
            .await
            .expect("flush");
    }
    for (n, gateway) in replicas.iter().enumerate() {
        let reply = get(gateway, "/v1/costs?group_by=team").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "replica {n}: {:?}",
            reply.body
        );
        let rows = reply.json()["rows"].as_array().expect("rows").clone();
        for (&team, &total) in &cost_by_team {
            let row = rows
                .iter()
                .find(|r| r["group"]["team"] == team)
                .unwrap_or_else(|| panic!("replica {n}: no row for {team}: {rows:?}"));
            let reported = row["cost_usd"].as_f64().expect("cost");
            assert!(
                ((reported - total) / total).abs() < 1e-9,
                "replica {n}, {team}: {reported} against {total}"
            );
            assert_eq!(
                row["requests"].as_u64(),
                Some(requests_by_team[team]),
                "replica {n}, {team}"
            );
        }
    }

    let reply = get(&replicas[1], "/v1/costs/focus").await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8(reply.body.to_vec()).expect("csv");
    let billed: f64 = text
        .lines()
        .skip(1)
        .filter(|line| !line.contains("Idle device time"))
        .map(|line| {
            line.split(',')
                .next()
                .unwrap_or("0")
                .parse::<f64>()
                .expect("BilledCost")
        })
        .sum();
    let total: f64 = cost_by_team.values().sum();
    assert!(
        ((billed - total) / total).abs() < 1e-9,
        "{billed} against {total}"
    );
    for gateway in replicas {
        gateway.stop().await;
    }
}
