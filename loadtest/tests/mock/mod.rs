//! A tiny KServe V2 server (HTTP JSON and binary, gRPC, /metrics) whose model sums each row, with a Tollgate-like exact cache.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

#[allow(clippy::all, dead_code)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/mock_server/inference.rs"));
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::infer_parameter::ParameterChoice;

pub const WIDTH: usize = 3;
const COST: f64 = 0.001;

#[derive(Default)]
pub struct Mock {
    seen: Mutex<HashSet<Vec<u32>>>,
    requests: AtomicU64,
    hits: AtomicU64,
}

impl Mock {
    /// Row sums plus whether this exact input was seen before (check and insert under one lock: one miss per key).
    fn infer(&self, values: &[f32]) -> (Vec<f32>, bool) {
        self.requests.fetch_add(1, Relaxed);
        let key: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
        let hit = !self.seen.lock().unwrap().insert(key);
        if hit {
            self.hits.fetch_add(1, Relaxed);
        }
        (values.chunks(WIDTH).map(|r| r.iter().sum()).collect(), hit)
    }

    fn metrics(&self) -> String {
        let (n, h) = (self.requests.load(Relaxed), self.hits.load(Relaxed));
        format!(
            "# TYPE tollgate_requests_total counter\n\
             tollgate_requests_total{{model=\"adder\"}} {n}\n\
             tollgate_cache_requests_total{{status=\"hit\"}} {h}\n\
             tollgate_cache_requests_total{{status=\"miss\"}} {}\n",
            n - h
        )
    }
}

fn metadata() -> Value {
    json!({"name": "adder", "versions": ["1"], "platform": "mock",
           "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, WIDTH]}],
           "outputs": [{"name": "sum", "datatype": "FP32", "shape": [-1, 1]}]})
}

fn f32s(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn reply(status: StatusCode, headers: &[(&str, String)], body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

fn http_infer(mock: &Mock, header_len: Option<usize>, body: &[u8]) -> Response<Full<Bytes>> {
    let split = header_len.unwrap_or(body.len());
    let Ok(doc) = serde_json::from_slice::<Value>(&body[..split]) else {
        return reply(StatusCode::BAD_REQUEST, &[], b"bad json".to_vec());
    };
    let input = &doc["inputs"][0];
    let values: Vec<f32> = match input["parameters"]["binary_data_size"].as_u64() {
        Some(n) => f32s(&body[split..split + n as usize]),
        None => input["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect(),
    };
    let (sums, hit) = mock.infer(&values);
    let rows = sums.len();
    let mut headers = vec![
        (
            "x-tollgate-cache",
            if hit { "hit" } else { "miss" }.to_string(),
        ),
        (
            if hit {
                "x-tollgate-saved-usd"
            } else {
                "x-tollgate-cost-usd"
            },
            COST.to_string(),
        ),
    ];
    let binary_out = doc["outputs"][0]["parameters"]["binary_data"].as_bool() == Some(true);
    if binary_out {
        let raw: Vec<u8> = sums.iter().flat_map(|v| v.to_le_bytes()).collect();
        let head = json!({"model_name": "adder", "outputs": [{"name": "sum", "datatype": "FP32",
                          "shape": [rows, 1], "parameters": {"binary_data_size": raw.len()}}]});
        let mut out = serde_json::to_vec(&head).unwrap();
        headers.push(("inference-header-content-length", out.len().to_string()));
        out.extend(raw);
        reply(StatusCode::OK, &headers, out)
    } else {
        let doc = json!({"model_name": "adder", "outputs": [{"name": "sum", "datatype": "FP32",
                         "shape": [rows, 1], "data": sums}]});
        headers.push(("content-type", "application/json".into()));
        reply(StatusCode::OK, &headers, serde_json::to_vec(&doc).unwrap())
    }
}

async fn route(
    mock: Arc<Mock>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let header_len = req
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    Ok(match path.as_str() {
        "/v2/models/adder" => reply(
            StatusCode::OK,
            &[],
            serde_json::to_vec(&metadata()).unwrap(),
        ),
        "/v2/models/adder/infer" => http_infer(&mock, header_len, &body),
        "/metrics" => reply(StatusCode::OK, &[], mock.metrics().into_bytes()),
        _ => reply(StatusCode::NOT_FOUND, &[], b"no such model".to_vec()),
    })
}

pub async fn start_http(mock: Arc<Mock>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mock = mock.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| route(mock.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct Grpc(Arc<Mock>);

fn param(c: ParameterChoice) -> pb::InferParameter {
    pb::InferParameter {
        parameter_choice: Some(c),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn model_metadata(
        &self,
        _req: tonic::Request<pb::ModelMetadataRequest>,
    ) -> Result<tonic::Response<pb::ModelMetadataResponse>, tonic::Status> {
        let t = |name: &str, shape: Vec<i64>| pb::model_metadata_response::TensorMetadata {
            name: name.into(),
            datatype: "FP32".into(),
            shape,
        };
        Ok(tonic::Response::new(pb::ModelMetadataResponse {
            name: "adder".into(),
            inputs: vec![t("x", vec![-1, WIDTH as i64])],
            outputs: vec![t("sum", vec![-1, 1])],
            ..Default::default()
        }))
    }

    async fn model_infer(
        &self,
        req: tonic::Request<pb::ModelInferRequest>,
    ) -> Result<tonic::Response<pb::ModelInferResponse>, tonic::Status> {
        let req = req.into_inner();
        if req.model_name != "adder" {
            return Err(tonic::Status::not_found("no such model"));
        }
        let (sums, hit) = self.0.infer(&f32s(&req.raw_input_contents[0]));
        let mut params = HashMap::new();
        params.insert(
            "cache".into(),
            param(ParameterChoice::StringParam(
                if hit { "hit" } else { "miss" }.into(),
            )),
        );
        // Cost as a string and savings as a double: clients must accept both forms.
        if hit {
            params.insert(
                "saved_usd".into(),
                param(ParameterChoice::DoubleParam(COST)),
            );
        } else {
            params.insert(
                "cost_usd".into(),
                param(ParameterChoice::StringParam(COST.to_string())),
            );
        }
        let rows = sums.len() as i64;
        Ok(tonic::Response::new(pb::ModelInferResponse {
            model_name: "adder".into(),
            parameters: params,
            outputs: vec![pb::model_infer_response::InferOutputTensor {
                name: "sum".into(),
                datatype: "FP32".into(),
                shape: vec![rows, 1],
                ..Default::default()
            }],
            raw_output_contents: vec![sums
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into()],
            ..Default::default()
        }))
    }
}

pub async fn start_grpc(mock: Arc<Mock>) -> SocketAddr {
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GrpcInferenceServiceServer::new(Grpc(mock)))
            .serve_with_incoming(incoming),
    );
    addr
}
