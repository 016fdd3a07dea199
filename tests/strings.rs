//! BYTES (string) tensors end to end against the bundled `labels` model (two ONNX LabelEncoders:
//! words to ids, ids to names): JSON strings, the binary extension, gRPC raw and typed contents,
//! batching of string rows, the cache, limits and errors, and the same model behind an upstream
//! over every wire. Metrics are process-wide, so every test uses model names of its own.

mod common;
#[path = "common/upstream.rs"]
mod peers;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use proto::model_infer_request::InferInputTensor;
use serde_json::{json, Value};
use tollgate::api::grpc::proto;

fn model(name: &str, extra: &str) -> String {
    format!(
        "[[models]]\nname = \"{name}\"\npath = \"models/labels/1/model.onnx\"\n\
         max_batch_size = 16\nmax_queue_delay_us = 20000\n{extra}\n"
    )
}

/// What the model answers for each word (its two LabelEncoders, as make_models.py builds them).
fn expected(word: &str) -> (i64, &'static str) {
    match word {
        "cat" | "kitten" => (0, "feline"),
        "dog" | "puppy" => (1, "canine"),
        "café" => (2, "coffee"),
        "🦀" => (3, "crustacean"),
        _ => (-1, "unknown"),
    }
}

fn json_body(words: &[&str]) -> Value {
    json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [words.len()], "data": words}]})
}

/// Elements as the protocol serializes them: a 4-byte little-endian length before each.
fn serialized(words: &[&[u8]]) -> Vec<u8> {
    words
        .iter()
        .flat_map(|w| {
            (w.len() as u32)
                .to_le_bytes()
                .into_iter()
                .chain(w.iter().copied())
        })
        .collect()
}

fn parse_serialized(mut data: &[u8]) -> Vec<String> {
    let mut words = Vec::new();
    while !data.is_empty() {
        let len = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
        words.push(String::from_utf8(data[4..4 + len].to_vec()).unwrap());
        data = &data[4 + len..];
    }
    words
}

fn check_json_answer(reply: &common::Reply, words: &[&str]) {
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let ids: Vec<i64> = words.iter().map(|w| expected(w).0).collect();
    let names: Vec<&str> = words.iter().map(|w| expected(w).1).collect();
    assert_eq!(reply.output("id")["data"], json!(ids));
    assert_eq!(reply.output("name")["data"], json!(names));
    assert_eq!(reply.output("name")["datatype"], "BYTES");
    assert_eq!(reply.output("name")["shape"], json!([words.len()]));
}

/// A binary-extension request of `words`, asking for `name` in binary.
fn binary_request(words: &[&[u8]]) -> (Vec<(&'static str, String)>, Bytes) {
    let data = serialized(words);
    let header = json!({
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [words.len()],
                    "parameters": {"binary_data_size": data.len()}}],
        "outputs": [{"name": "id"}, {"name": "name", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&data);
    let headers = vec![
        ("inference-header-content-length", header.len().to_string()),
        ("content-type", "application/octet-stream".to_string()),
    ];
    (headers, Bytes::from(body))
}

/// The binary `name` output of a binary-extension answer.
fn binary_names(reply: &common::Reply) -> Vec<String> {
    let length: usize = reply
        .header("inference-header-content-length")
        .parse()
        .unwrap();
    let header: Value = serde_json::from_slice(&reply.body[..length]).unwrap();
    let outputs = header["outputs"].as_array().unwrap();
    let name = outputs.iter().find(|o| o["name"] == "name").unwrap();
    let size = name["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
    assert_eq!(
        reply.body.len(),
        length + size,
        "one binary output follows the header"
    );
    parse_serialized(&reply.body[length..])
}

fn grpc_request(model: &str, words: &[&str], raw: bool) -> proto::ModelInferRequest {
    let mut input = InferInputTensor {
        name: "text".into(),
        datatype: "BYTES".into(),
        shape: vec![words.len() as i64],
        ..Default::default()
    };
    let mut raw_input_contents = Vec::new();
    if raw {
        let items: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        raw_input_contents.push(Bytes::from(serialized(&items)));
    } else {
        input.contents = Some(proto::InferTensorContents {
            bytes_contents: words.iter().map(|w| Bytes::from(w.to_string())).collect(),
            ..Default::default()
        });
    }
    proto::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![input],
        raw_input_contents,
        ..Default::default()
    }
}

/// (ids, names) of a gRPC answer, which carries raw contents.
fn grpc_answer(reply: &proto::ModelInferResponse) -> (Vec<i64>, Vec<String>) {
    let position = |name: &str| reply.outputs.iter().position(|o| o.name == name).unwrap();
    let ids = reply.raw_output_contents[position("id")]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(reply.outputs[position("name")].datatype, "BYTES");
    (
        ids,
        parse_serialized(&reply.raw_output_contents[position("name")]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_travel_as_json_binary_and_grpc_and_repeat_from_the_cache() {
    let gateway = common::start(&model("labels", "")).await;
    let words = ["dog", "café", "zebra", "🦀", "a \"quoted\"\nline"];
    let reply = gateway.infer("labels", &json_body(&words)).await;
    check_json_answer(&reply, &words);
    assert_eq!(reply.header("x-tollgate-cache"), "miss");
    let again = gateway.infer("labels", &json_body(&words)).await;
    check_json_answer(&again, &words);
    assert_eq!(again.header("x-tollgate-cache"), "hit");

    // The binary extension holds the same bytes, so it hits the entry JSON filled.
    let items: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
    let (headers, body) = binary_request(&items);
    let binary = gateway
        .send(Method::POST, "/v2/models/labels/infer", &headers, body)
        .await;
    assert_eq!(
        binary.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&binary.body)
    );
    assert_eq!(binary.header("x-tollgate-cache"), "hit");
    let names: Vec<&str> = words.iter().map(|w| expected(w).1).collect();
    assert_eq!(binary_names(&binary), names);

    // gRPC: raw contents hit the same entry; typed bytes_contents read to the same bytes.
    let mut client =
        GrpcInferenceServiceClient::connect(format!("http://{}", gateway.server.grpc_addr))
            .await
            .unwrap();
    let ids: Vec<i64> = words.iter().map(|w| expected(w).0).collect();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    for raw in [true, false] {
        let reply = client
            .model_infer(grpc_request("labels", &words, raw))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            grpc_answer(&reply),
            (ids.clone(), names.clone()),
            "raw={raw}"
        );
    }
    let misses = gateway
        .metric(
            "tollgate_cache_requests_total",
            &["model=\"labels\"", "status=\"miss\""],
        )
        .await;
    assert_eq!(misses, 1.0, "one computation served all five requests");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn string_rows_of_many_callers_share_a_batch_and_each_gets_its_own() {
    let gateway = std::sync::Arc::new(
        common::start(&model("labels_batch", "[cache]\nenabled = false")).await,
    );
    let vocabulary = [
        "cat", "dog", "café", "🦀", "kitten", "puppy", "zebra", "", "ünknown",
    ];
    let mut tasks = Vec::new();
    for caller in 0..12usize {
        let gateway = gateway.clone();
        // One to three words each, so rows of different byte lengths meet in one batch.
        let words: Vec<&str> = (0..1 + caller % 3)
            .map(|i| vocabulary[(caller + i * 4) % vocabulary.len()])
            .collect();
        tasks.push(tokio::spawn(async move {
            let reply = gateway.infer("labels_batch", &json_body(&words)).await;
            check_json_answer(&reply, &words);
            reply
                .header("x-tollgate-batch-size")
                .parse::<usize>()
                .unwrap()
        }));
    }
    let mut largest = 0;
    for task in tasks {
        largest = largest.max(task.await.unwrap());
    }
    assert!(
        largest > 3,
        "callers' rows were batched together (largest batch {largest})"
    );
    match std::sync::Arc::try_unwrap(gateway) {
        Ok(gateway) => gateway.stop().await,
        Err(_) => panic!("a task still holds the gateway"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_strings_are_refused_naming_the_element() {
    let gateway = common::start(&format!(
        "[server]\nmax_element_bytes = \"16B\"\n{}",
        model("labels_bad", "")
    ))
    .await;
    let path = "/v2/models/labels_bad/infer";
    // (body, what the error must say)
    let json_cases = [
        (
            json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", 7]}]}),
            "element 1 (7) is not a string",
        ),
        (
            json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a"]}]}),
            "1 elements for a shape that holds 2",
        ),
        (
            json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x".repeat(17)]}]}),
            "element 0 is 17 bytes, over the limit of 16",
        ),
        (
            json!({"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}),
            "got FP32, the model expects BYTES",
        ),
    ];
    for (body, fragment) in json_cases {
        let reply = gateway.post_json(path, &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let error = reply.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.contains("inputs[") && error.contains(fragment),
            "{error}"
        );
    }
    // Binary elements: cut short, not UTF-8, holding a NUL (ONNX strings cannot).
    let short = {
        let mut data = serialized(&[b"dog"]);
        data.truncate(5);
        data
    };
    // (data, elements in the shape, what the error must say)
    let binary_cases: [(Vec<u8>, usize, &str); 3] = [
        (short, 1, "its length says 3 bytes, but only 1 remain"),
        (
            serialized(&[b"ok", b"\xff\xfe"]),
            2,
            "element 1 is not UTF-8",
        ),
        (serialized(&[b"a\0b"]), 1, "element 0 holds a NUL byte"),
    ];
    for (data, count, fragment) in binary_cases {
        let header = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [count],
            "parameters": {"binary_data_size": data.len()}}]})
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&data);
        let headers = [("inference-header-content-length", header.len().to_string())];
        let reply = gateway
            .send(Method::POST, path, &headers, Bytes::from(body))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{fragment}");
        let error = reply.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(fragment), "{error}");
    }
    // gRPC says INVALID_ARGUMENT with the same words.
    let mut client =
        GrpcInferenceServiceClient::connect(format!("http://{}", gateway.server.grpc_addr))
            .await
            .unwrap();
    let long = "y".repeat(17);
    let status = client
        .model_infer(grpc_request("labels_bad", &[long.as_str()], false))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("over the limit of 16"),
        "{}",
        status.message()
    );
    // Nothing bad was cached or counted as computed; a good request still answers.
    check_json_answer(
        &gateway.post_json(path, &json_body(&["cat"])).await,
        &["cat"],
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strings_pass_through_an_upstream_over_every_wire() {
    let upstream = common::start(&model("labels_up", "")).await;
    let variants = [
        (
            "http",
            format!("upstream = \"http://{}\"", upstream.server.http_addr),
            "",
        ),
        (
            "json",
            format!("upstream = \"http://{}\"", upstream.server.http_addr),
            "upstream_binary = false",
        ),
        (
            "h2c",
            format!("upstream = \"h2c://{}\"", upstream.server.http_addr),
            "",
        ),
        (
            "grpc",
            format!("upstream = \"grpc://{}\"", upstream.server.grpc_addr),
            "",
        ),
    ];
    for (variant, url, extra) in variants {
        let name = format!("labels_front_{variant}");
        let front = common::start(&peers::front_config(&name, "labels_up", &url, extra)).await;
        let metadata = front.get(&format!("/v2/models/{name}")).await.json();
        assert_eq!(
            metadata["inputs"][0]["datatype"], "BYTES",
            "{variant}: {metadata}"
        );
        // Distinct words per variant, so the upstream's own cache does not answer for it.
        let words = ["puppy", "café", variant, "🦀"];
        let reply = front.infer(&name, &json_body(&words)).await;
        check_json_answer(&reply, &words);
        assert_eq!(reply.header("x-tollgate-cache"), "miss", "{variant}");
        let again = front.infer(&name, &json_body(&words)).await;
        check_json_answer(&again, &words);
        assert_eq!(again.header("x-tollgate-cache"), "hit", "{variant}");
        let items: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        let (headers, body) = binary_request(&items);
        let binary = front
            .send(
                Method::POST,
                &format!("/v2/models/{name}/infer"),
                &headers,
                body,
            )
            .await;
        let names: Vec<&str> = words.iter().map(|w| expected(w).1).collect();
        assert_eq!(binary_names(&binary), names, "{variant}");
        front.stop().await;
    }
    upstream.stop().await;
}
