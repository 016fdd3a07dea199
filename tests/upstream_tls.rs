//! A front reaching its upstream over TLS (`https://` and `grpcs://`), trusting the CA named by
//! `upstream_ca_path`, and sending `upstream_headers` (a bearer token read from the
//! environment) to an upstream that requires it. Certificates are made here with openssl.

mod common;

use common::tls::certificates;
use hyper::StatusCode;
use std::time::Duration;

const TOKEN_VARIABLE: &str = "TOLLGATE_TEST_UPSTREAM_TOKEN";
const TOKEN: &str = "upstream-secret-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fronts_reach_a_tls_upstream_with_its_ca_and_a_token_from_the_environment() {
    let dir = common::scratch_dir();
    certificates(&dir, "upstream");
    certificates(&dir, "stranger");
    let digest = blake3::hash(TOKEN.as_bytes()).to_hex().to_string();
    let upstream = common::start(&format!(
        "[server]\ntls_cert_path = \"{d}/upstream.pem\"\ntls_key_path = \"{d}/upstream.key\"\n\
         [auth]\nrequired = true\n[[tenants]]\nname = \"fronts\"\napi_key_blake3 = \"{digest}\"\n\
         [[models]]\nname = \"digits_tls\"\npath = \"models/digits/1/model.onnx\"\nmax_batch_size = 8\n",
        d = dir.display()
    ))
    .await;
    // SAFETY of the test: set before any config reads it, and only this test reads it.
    std::env::set_var(TOKEN_VARIABLE, format!("Bearer {TOKEN}"));
    let (rows, labels) = common::digits_rows();
    let body = common::digits_body(&rows[..3]);
    for (scheme, address) in [
        ("https", upstream.server.http_addr),
        ("grpcs", upstream.server.grpc_addr),
    ] {
        let front = common::start(&format!(
            "[[models]]\nname = \"front_{scheme}\"\nupstream = \"{scheme}://{address}\"\n\
             upstream_model = \"digits_tls\"\nupstream_ca_path = \"{d}/upstream-ca.pem\"\n\
             upstream_headers = {{ authorization = \"env:{TOKEN_VARIABLE}\" }}\n\
             upstream_startup_wait_ms = 5000\n",
            d = dir.display()
        ))
        .await;
        let reply = front.infer(&format!("front_{scheme}"), &body).await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme}: {:?}", reply.body);
        let label = reply.json()["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "label")
            .unwrap()["data"]
            .clone();
        assert_eq!(label, serde_json::json!(labels[..3]), "{scheme}");
        front.stop().await;

        // Another CA: the upstream's certificate is not trusted, so the model never becomes
        // ready and says why.
        let doubtful = common::start(&format!(
            "[[models]]\nname = \"doubtful_{scheme}\"\nupstream = \"{scheme}://{address}\"\n\
             upstream_model = \"digits_tls\"\nupstream_ca_path = \"{d}/stranger-ca.pem\"\n\
             upstream_headers = {{ authorization = \"env:{TOKEN_VARIABLE}\" }}\n\
             upstream_startup_wait_ms = 0\n",
            d = dir.display()
        ))
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ready = doubtful
            .get(&format!("/v2/models/doubtful_{scheme}/ready"))
            .await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{scheme}");
        doubtful.stop().await;
    }
    // Without the token the upstream refuses the front's calls.
    let tokenless = common::start(&format!(
        "[[models]]\nname = \"tokenless\"\nupstream = \"https://{}\"\nupstream_model = \"digits_tls\"\n\
         upstream_ca_path = \"{d}/upstream-ca.pem\"\nupstream_startup_wait_ms = 5000\n",
        upstream.server.http_addr,
        d = dir.display()
    ))
    .await;
    let reply = tokenless.infer("tokenless", &body).await;
    assert_ne!(reply.status, StatusCode::OK, "{:?}", reply.body);
    tokenless.stop().await;
    upstream.stop().await;
}

#[test]
fn a_header_naming_an_unset_variable_stops_the_config_with_its_name() {
    let toml = "[[models]]\nname = \"m\"\nupstream = \"https://127.0.0.1:9\"\n\
                upstream_headers = { authorization = \"env:TOLLGATE_TEST_NOT_SET_ANYWHERE\" }\n";
    let error = tollgate::config::Config::parse(toml, &common::repo().join("test.toml"))
        .expect_err("an unset variable is an error")
        .to_string();
    assert!(
        error.contains("upstream_headers.authorization")
            && error.contains("TOLLGATE_TEST_NOT_SET_ANYWHERE")
            && !error.contains("Bearer"),
        "{error}"
    );
}
