//! Alerts POSTed to an `https://` webhook: the receiver speaks TLS only, with a certificate of
//! a CA the gateway trusts through `SSL_CERT_FILE` (the system's roots, as a user would extend
//! them). A test binary of its own, since that variable is process-wide.

mod common;

use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An HTTPS receiver on a free port; what it was sent, as JSON.
async fn tls_receiver(dir: &std::path::Path) -> (String, Arc<Mutex<Vec<Value>>>) {
    use rustls_pki_types::pem::PemObject;
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(dir.join("hook.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("hook.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, store) = (acceptor.clone(), store.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    common::serve_webhook(stream, store).await;
                }
            });
        }
    });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_alert_reaches_an_https_webhook() {
    let dir = common::scratch_dir();
    common::tls::certificates(&dir, "hook");
    // Set before the gateway builds its webhook client, which reads the system's roots.
    std::env::set_var("SSL_CERT_FILE", dir.join("hook-ca.pem"));
    let (url, received) = tls_receiver(&dir).await;
    let key = "hook-key";
    let gateway = common::start(&format!(
        "[alerts]\nwebhook_url = \"{url}\"\n\n[[tenants]]\nname = \"tiny\"\napi_key_blake3 = \"{}\"\n\
         budget_usd = 1e-12\nbudget_period = \"day\"\nbudget_action = \"reject\"\n\n\
         [[models]]\nname = \"digits\"\npath = \"models/digits/1/model.onnx\"\n",
        blake3::hash(key.as_bytes()).to_hex()
    ))
    .await;
    let (rows, _) = common::digits_rows();
    let reply = gateway
        .send(
            hyper::Method::POST,
            "/v2/models/digits/infer",
            &[("authorization", format!("Bearer {key}"))],
            common::digits_body(&rows[..1]).to_string().into(),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let mut alerts = Vec::new();
    for _ in 0..100 {
        alerts = received.lock().unwrap().clone();
        if !alerts.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alerts.is_empty(), "no alert reached the https webhook");
    assert_eq!(alerts[0]["tenant"], "tiny", "{alerts:?}");
    gateway.stop().await;
}
