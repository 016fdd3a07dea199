//! HTTP/2 without TLS (prior knowledge) on the same port as HTTP/1.1.

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_served_on_the_http_port() {
    let gateway =
        common::start("[[models]]\nname = \"digits\"\npath = \"models/digits/1/model.onnx\"\n")
            .await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let (rows, labels) = common::digits_rows();
    let body = common::digits_body(&rows[..2]).to_string();
    let request = Request::post(format!("{}/v2/models/digits/infer", gateway.base))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let label = body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap();
    assert_eq!(label["data"], serde_json::json!(labels[..2]));
    gateway.stop().await;
}
