//! Live reload against a real gateway started from a config file: SIGHUP adding a model under
//! load (nothing fails), `POST /v1/admin/reload` refusing a file that does not read (the old
//! config keeps serving), then removing one model and changing another.

mod common;

use hyper::{Method, StatusCode};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate::config::Config;
use tollgate::server::Server;

fn models(dir: &Path, entries: &[(&str, &str)]) {
    let model = common::repo().join("models/digits/1/model.onnx");
    let mut toml = format!(
        "[server]\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\n[ledger]\npath = \"{}/ledger.sqlite\"\n",
        dir.display()
    );
    for (name, extra) in entries {
        toml.push_str(&format!(
            "\n[[models]]\nname = \"{name}\"\npath = \"{}\"\n{extra}\n",
            model.display()
        ));
    }
    std::fs::write(dir.join("gateway.toml"), toml).unwrap();
}

async fn start(dir: &Path) -> (Server, common::Client) {
    let config = Config::load(&dir.join("gateway.toml")).expect("config reads");
    let server = Server::start(config).await.expect("gateway starts");
    let client = common::Client::new(&format!("http://{}", server.http_addr));
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_model_under_load_and_no_request_fails() {
    let dir = common::scratch_dir();
    models(&dir, &[("digits", "max_batch_size = 8")]);
    let (server, client) = start(&dir).await;
    let client = Arc::new(client);
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (rows, _) = common::digits_rows();
    let mut load = Vec::new();
    for worker in 0..4 {
        let (client, sent, failed, stop) =
            (client.clone(), sent.clone(), failed.clone(), stop.clone());
        let row = rows[worker % rows.len()].clone();
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let reply = client
                    .infer("digits", &common::digits_body(std::slice::from_ref(&row)))
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
                if reply.status != StatusCode::OK {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    models(
        &dir,
        &[("digits", "max_batch_size = 8"), ("digits_added", "")],
    );
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let mut served = false;
    for _ in 0..100 {
        if client.get("/v2/models/digits_added/ready").await.status == StatusCode::OK {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the added model is not served after SIGHUP");
    let reply = client
        .infer("digits_added", &common::digits_body(&rows[..2]))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(
        sent.load(Ordering::Relaxed) > 20,
        "too little load to show anything"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the reload"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_endpoint_refuses_a_bad_file_then_removes_and_changes_models() {
    let dir = common::scratch_dir();
    models(&dir, &[("digits", "max_batch_size = 8"), ("extra", "")]);
    let (server, client) = start(&dir).await;
    let reload = || async {
        client
            .send(Method::POST, "/v1/admin/reload", &[], bytes::Bytes::new())
            .await
    };
    std::fs::write(
        dir.join("gateway.toml"),
        "[[models]]\nname = \"broken\"\nmax_batch_size = \"x\"\n",
    )
    .unwrap();
    let refused = reload().await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        refused.body
    );
    let error = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("max_batch_size") && error.contains("keeps serving"),
        "{error}"
    );
    assert_eq!(
        client.get("/v2/models/extra/ready").await.status,
        StatusCode::OK
    );

    models(&dir, &[("digits", "max_batch_size = 4")]);
    let applied = reload().await;
    assert_eq!(applied.status, StatusCode::OK, "{:?}", applied.body);
    let report = applied.json();
    assert_eq!(
        report["removed"],
        serde_json::json!(["extra:1"]),
        "{report}"
    );
    assert_eq!(
        report["changed"],
        serde_json::json!(["digits:1"]),
        "{report}"
    );
    assert_eq!(report["restart_needed"], serde_json::json!([]), "{report}");
    assert_eq!(
        client.get("/v2/models/extra").await.status,
        StatusCode::NOT_FOUND
    );
    let metadata = client.get("/v2/models/digits").await.json();
    assert_eq!(metadata["parameters"]["max_batch_size"], 4, "{metadata}");
    // Nothing changed this time; a changed [server] key is named, not applied.
    let toml = std::fs::read_to_string(dir.join("gateway.toml")).unwrap();
    let toml = toml.replace("[server]\n", "[server]\nmax_concurrent_requests = 7\n");
    std::fs::write(dir.join("gateway.toml"), toml).unwrap();
    let again = reload().await.json();
    assert_eq!(
        again["unchanged"],
        serde_json::json!(["digits:1"]),
        "{again}"
    );
    assert_eq!(
        again["restart_needed"],
        serde_json::json!(["server"]),
        "{again}"
    );
    server.stop().await;
}

fn tenant(name: &str, key: &str, budget: &str) -> String {
    format!(
        "\n[[tenants]]\nname = \"{name}\"\napi_key_blake3 = \"{}\"\n{budget}\n",
        blake3::hash(key.as_bytes()).to_hex()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_tenants_and_budgets_keeping_spend_counted_so_far() {
    let dir = common::scratch_dir();
    let tight = "budget_usd = 1e-12\nbudget_period = \"day\"\nbudget_action = \"reject\"";
    let write = |tenants: &str| {
        models(&dir, &[("digits", "")]);
        let toml = std::fs::read_to_string(dir.join("gateway.toml")).unwrap();
        std::fs::write(
            dir.join("gateway.toml"),
            format!("[auth]\nrequired = true\n{tenants}\n{toml}"),
        )
        .unwrap();
    };
    write(&tenant("steady", "steady-key", tight));
    let (server, client) = start(&dir).await;
    let (rows, _) = common::digits_rows();
    let infer = |key: &'static str, row: usize| {
        let body = common::digits_body(&rows[row..row + 1]).to_string();
        let client = &client;
        async move {
            client
                .send(
                    Method::POST,
                    "/v2/models/digits/infer",
                    &[("authorization", format!("Bearer {key}"))],
                    body.into(),
                )
                .await
                .status
        }
    };
    let reload = || async {
        client
            .send(Method::POST, "/v1/admin/reload", &[], bytes::Bytes::new())
            .await
    };
    assert_eq!(infer("steady-key", 0).await, StatusCode::OK);
    assert_eq!(infer("steady-key", 1).await, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(infer("new-key", 2).await, StatusCode::UNAUTHORIZED);
    // A tenant added; the steady tenant's budget unchanged, so its spend is still counted.
    write(&format!(
        "{}{}",
        tenant("steady", "steady-key", tight),
        tenant("newcomer", "new-key", "")
    ));
    let report = reload().await;
    assert_eq!(report.status, StatusCode::OK, "{:?}", report.body);
    let restart = report.json()["restart_needed"].clone();
    assert!(
        !restart
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "tenants" || s == "auth"),
        "{restart}"
    );
    assert_eq!(infer("new-key", 2).await, StatusCode::OK);
    assert_eq!(infer("steady-key", 3).await, StatusCode::PAYMENT_REQUIRED);
    // A raised budget is rebuilt from the ledger: the spend so far fits under it.
    let roomy = "budget_usd = 1.0\nbudget_period = \"day\"\nbudget_action = \"reject\"";
    write(&format!(
        "{}{}",
        tenant("steady", "steady-key", roomy),
        tenant("newcomer", "new-key", "")
    ));
    assert_eq!(reload().await.status, StatusCode::OK);
    assert_eq!(infer("steady-key", 4).await, StatusCode::OK);
    server.stop().await;
}
