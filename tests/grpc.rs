//! The gRPC front end's status codes and response parameters, with tonic's own client.

mod common;

use proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use proto::infer_parameter::ParameterChoice;
use proto::model_infer_request::InferInputTensor;
use tollgate::api::grpc::proto;

const CONFIG: &str = r#"
[[models]]
name = "digits"
path = "models/digits/1/model.onnx"
max_batch_size = 8
"#;

fn request(model: &str, shape: Vec<i64>, values: Vec<f32>) -> proto::ModelInferRequest {
    proto::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape,
            contents: Some(proto::InferTensorContents {
                fp32_contents: values,
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_and_parameters_follow_the_protocol() {
    let gateway = common::start(CONFIG).await;
    let mut client =
        GrpcInferenceServiceClient::connect(format!("http://{}", gateway.server.grpc_addr))
            .await
            .unwrap();
    let (rows, labels) = common::digits_rows();
    let good = request("digits", vec![1, 64], rows[0].clone());
    let reply = client.model_infer(good.clone()).await.unwrap().into_inner();
    let label = i64::from_le_bytes(reply.raw_output_contents[0][..8].try_into().unwrap());
    assert_eq!(label, labels[0]);
    let cache = |r: &proto::ModelInferResponse| match r
        .parameters
        .get("cache")
        .and_then(|p| p.parameter_choice.clone())
    {
        Some(ParameterChoice::StringParam(s)) => s,
        other => panic!("no cache parameter: {other:?}"),
    };
    assert_eq!(cache(&reply), "miss");
    assert!(
        matches!(reply.parameters["cost_usd"].parameter_choice, Some(ParameterChoice::DoubleParam(c)) if c > 0.0)
    );
    let again = client.model_infer(good).await.unwrap().into_inner();
    assert_eq!(cache(&again), "hit");
    assert_eq!(again.raw_output_contents, reply.raw_output_contents);

    let cases: Vec<(proto::ModelInferRequest, tonic::Code, &str)> = vec![
        (
            request("nope", vec![1, 64], rows[0].clone()),
            tonic::Code::NotFound,
            "unknown model",
        ),
        (
            // Named before the contents that do not fit the shape.
            request("nope", vec![1, 64], rows[0][..3].to_vec()),
            tonic::Code::NotFound,
            "unknown model",
        ),
        (
            request("digits", vec![1, 63], rows[0][..63].to_vec()),
            tonic::Code::InvalidArgument,
            "dimension 1 must be 64",
        ),
        (
            request("digits", vec![2, 64], rows[0].clone()),
            tonic::Code::InvalidArgument,
            "needs 512 bytes, got 256",
        ),
        (
            request("digits", vec![-2, 64], rows[0].clone()),
            tonic::Code::InvalidArgument,
            "negative",
        ),
        (
            request(
                "digits",
                vec![9, 64],
                rows.iter().take(9).flatten().copied().collect(),
            ),
            tonic::Code::InvalidArgument,
            "max_batch_size",
        ),
        (
            request("digits", vec![1_000_000_000_000, 64], rows[0].clone()),
            tonic::Code::InvalidArgument,
            "input",
        ),
        (
            {
                let mut message = request("digits", vec![1, 64], rows[0].clone());
                message.inputs[0].datatype = "FP33".into();
                message
            },
            tonic::Code::InvalidArgument,
            "FP33",
        ),
        (
            {
                // Raw contents twice for one input: the second has no input to belong to.
                let mut message = request("digits", vec![1, 64], Vec::new());
                message.inputs[0].contents = None;
                let raw: Vec<u8> = rows[0].iter().flat_map(|v| v.to_le_bytes()).collect();
                message.raw_input_contents = vec![raw.clone().into(), raw.into()];
                message
            },
            tonic::Code::InvalidArgument,
            "raw_input_contents",
        ),
        (
            {
                // FP32 declared, FP64 sent.
                let mut message = request("digits", vec![1, 64], Vec::new());
                message.inputs[0].contents = Some(proto::InferTensorContents {
                    fp64_contents: rows[0].iter().map(|&v| f64::from(v)).collect(),
                    ..Default::default()
                });
                message
            },
            tonic::Code::InvalidArgument,
            "input",
        ),
    ];
    for (message, code, fragment) in cases {
        let status = client.model_infer(message).await.unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().contains(fragment),
            "`{}` lacks `{fragment}`",
            status.message()
        );
    }
    let ready = client
        .model_ready(proto::ModelReadyRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!ready.ready);
    gateway.stop().await;
}

/// Nagle's algorithm on the accepted socket holds each small reply until the client's delayed
/// ACK, tens of milliseconds; without it a cache hit on loopback takes well under a millisecond.
/// The bound is generous (a debug build on a loaded two-core machine), the delay is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_is_not_held_back_by_nagle() {
    let gateway = common::start(CONFIG).await;
    let mut client =
        GrpcInferenceServiceClient::connect(format!("http://{}", gateway.server.grpc_addr))
            .await
            .unwrap();
    let (rows, _) = common::digits_rows();
    let message = request("digits", vec![1, 64], rows[0].clone());
    client.model_infer(message.clone()).await.unwrap();
    let mut took = Vec::new();
    for _ in 0..21 {
        let started = std::time::Instant::now();
        client.model_infer(message.clone()).await.unwrap();
        took.push(started.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < std::time::Duration::from_millis(15),
        "median gRPC cache hit took {median:?} (all: {took:?})"
    );
    gateway.stop().await;
}
