//! KServe V2 over gRPC: ModelInfer with raw_input_contents, spread over a few HTTP/2 channels.

use super::{snake_case, Outcome, Reply};
use crate::stats::{CacheStatus, ReplyInfo};
use crate::tensor::{decode_raw, to_raw, DType, Scalar};
use crate::workload::{ModelMeta, TensorSpec, Workload};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::infer_parameter::ParameterChoice;
use pb::{InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse};

type RpcClient = GrpcInferenceServiceClient<Channel>;

/// Large tensors must not trip tonic's 4 MiB default.
const MAX_MESSAGE: usize = 256 << 20;

/// Opens `lanes` independent channels: one HTTP/2 connection caps throughput on a multi-core server.
pub async fn connect(target: &str, lanes: usize, timeout: Duration) -> Result<Vec<RpcClient>> {
    let endpoint = Endpoint::from_shared(format!("http://{target}"))
        .context("bad gRPC target")?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    let mut clients = Vec::with_capacity(lanes);
    for _ in 0..lanes.max(1) {
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to gRPC {target}"))?;
        clients.push(
            GrpcInferenceServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        );
    }
    Ok(clients)
}

/// The `--header` pairs as gRPC metadata (the argument parser checked them already).
pub fn metadata_map(headers: &[(String, String)]) -> Result<MetadataMap> {
    let mut map = MetadataMap::new();
    for (name, value) in headers {
        let key = tonic::metadata::AsciiMetadataKey::from_bytes(name.as_bytes())
            .with_context(|| format!("{name} cannot be gRPC metadata"))?;
        map.append(
            key,
            value
                .parse()
                .with_context(|| format!("the value of {name}"))?,
        );
    }
    Ok(map)
}

fn with_metadata<T>(message: T, metadata: &MetadataMap) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = metadata.clone();
    request
}

pub async fn fetch_metadata(
    client: &RpcClient,
    model: &str,
    version: Option<&str>,
    metadata: &MetadataMap,
) -> Result<ModelMeta> {
    let req = with_metadata(
        pb::ModelMetadataRequest {
            name: model.to_string(),
            version: version.unwrap_or_default().to_string(),
        },
        metadata,
    );
    let resp = client
        .clone()
        .model_metadata(req)
        .await
        .map_err(|s| anyhow::anyhow!("ModelMetadata: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let conv = |ts: Vec<pb::model_metadata_response::TensorMetadata>| {
        ts.into_iter()
            .map(|t| TensorSpec {
                name: t.name,
                datatype: t.datatype,
                shape: t.shape,
            })
            .collect()
    };
    Ok(ModelMeta {
        inputs: conv(resp.inputs),
        outputs: conv(resp.outputs),
    })
}

#[derive(Clone)]
pub struct GrpcInfer {
    clients: Arc<Vec<RpcClient>>,
    requests: Arc<Vec<ModelInferRequest>>,
    decode: bool,
    want_name: Option<Arc<str>>,
    metadata: Arc<MetadataMap>,
}

/// What every gRPC request of a run carries besides its tensors.
pub struct GrpcOptions<'a> {
    pub model: &'a str,
    pub version: Option<&'a str>,
    pub decode_output: bool,
    pub output_name: Option<&'a str>,
    pub metadata: MetadataMap,
}

/// Builds every distinct request once; raw contents are `Bytes`, so per-send clones do not copy tensors.
pub fn prepare(
    clients: Vec<RpcClient>,
    opts: GrpcOptions<'_>,
    work: &Workload,
) -> Result<GrpcInfer> {
    let GrpcOptions {
        model,
        version,
        decode_output,
        output_name,
        metadata,
    } = opts;
    let mut requests = Vec::with_capacity(work.requests.len());
    for set in &work.requests {
        let mut inputs = Vec::with_capacity(set.len());
        let mut raw = Vec::with_capacity(set.len());
        for t in set {
            inputs.push(pb::model_infer_request::InferInputTensor {
                name: t.name.clone(),
                datatype: t.dtype.name().to_string(),
                shape: t.shape.clone(),
                parameters: HashMap::new(),
                contents: None,
            });
            raw.push(to_raw(t.dtype, &t.values)?.into());
        }
        requests.push(ModelInferRequest {
            model_name: model.to_string(),
            model_version: version.unwrap_or_default().to_string(),
            inputs,
            raw_input_contents: raw,
            ..Default::default()
        });
    }
    Ok(GrpcInfer {
        clients: Arc::new(clients),
        requests: Arc::new(requests),
        decode: decode_output,
        want_name: output_name.map(Arc::from),
        metadata: Arc::new(metadata),
    })
}

fn param_f64(p: &InferParameter) -> Option<f64> {
    match p.parameter_choice.as_ref()? {
        ParameterChoice::DoubleParam(v) => Some(*v),
        ParameterChoice::StringParam(s) => s.trim().parse().ok(),
        ParameterChoice::Int64Param(v) => Some(*v as f64),
        ParameterChoice::Uint64Param(v) => Some(*v as f64),
        ParameterChoice::BoolParam(_) => None,
    }
}

pub fn reply_info(params: &HashMap<String, InferParameter>) -> ReplyInfo {
    let cache = params
        .get("cache")
        .and_then(|p| match p.parameter_choice.as_ref()? {
            ParameterChoice::StringParam(s) => Some(CacheStatus::parse(s)),
            _ => None,
        });
    ReplyInfo {
        cache,
        cost_usd: params.get("cost_usd").and_then(param_f64),
        saved_usd: params.get("saved_usd").and_then(param_f64),
    }
}

impl GrpcInfer {
    pub async fn send(&self, index: usize, lane: usize) -> Outcome {
        let req = self.requests.get(index).ok_or("bad_index")?.clone();
        let req = with_metadata(req, &self.metadata);
        let mut client = self.clients[lane % self.clients.len()].clone();
        let resp = client
            .model_infer(req)
            .await
            .map_err(|s| format!("grpc_{}", snake_case(&format!("{:?}", s.code()))))?
            .into_inner();
        let info = reply_info(&resp.parameters);
        let output = self
            .decode
            .then(|| decode_output(&resp, self.want_name.as_deref()));
        Ok(Reply { info, output })
    }
}

/// Reads the wanted output from raw_output_contents when present, else from typed contents.
pub fn decode_output(resp: &ModelInferResponse, want: Option<&str>) -> Result<Vec<Scalar>, String> {
    let pos = match want {
        Some(name) => resp.outputs.iter().position(|o| o.name == name),
        None => (!resp.outputs.is_empty()).then_some(0),
    }
    .ok_or_else(|| format!("output {want:?} not in response"))?;
    let out = &resp.outputs[pos];
    let dtype = DType::parse(&out.datatype).map_err(|e| e.to_string())?;
    if let Some(raw) = resp.raw_output_contents.get(pos) {
        return decode_raw(dtype, raw);
    }
    let c = out.contents.as_ref().ok_or("output has no contents")?;
    Ok(typed_contents(dtype, c))
}

fn typed_contents(dtype: DType, c: &InferTensorContents) -> Vec<Scalar> {
    let nums: Vec<f64> = match dtype {
        DType::Bool => c
            .bool_contents
            .iter()
            .map(|&b| f64::from(u8::from(b)))
            .collect(),
        DType::I8 | DType::I16 | DType::I32 => {
            c.int_contents.iter().map(|&v| f64::from(v)).collect()
        }
        DType::I64 => c.int64_contents.iter().map(|&v| v as f64).collect(),
        DType::U8 | DType::U16 | DType::U32 => {
            c.uint_contents.iter().map(|&v| f64::from(v)).collect()
        }
        DType::U64 => c.uint64_contents.iter().map(|&v| v as f64).collect(),
        DType::F16 | DType::F32 => c.fp32_contents.iter().map(|&v| f64::from(v)).collect(),
        DType::F64 => c.fp64_contents.clone(),
        DType::Bytes => {
            return c
                .bytes_contents
                .iter()
                .map(|b| Scalar::Str(String::from_utf8_lossy(b).into_owned()))
                .collect()
        }
    };
    nums.into_iter().map(Scalar::Num).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::model_infer_response::InferOutputTensor;

    fn param(c: ParameterChoice) -> InferParameter {
        InferParameter {
            parameter_choice: Some(c),
        }
    }

    #[test]
    fn reads_cache_and_cost_parameters() {
        let mut p = HashMap::new();
        p.insert(
            "cache".to_string(),
            param(ParameterChoice::StringParam("coalesced".into())),
        );
        p.insert(
            "cost_usd".to_string(),
            param(ParameterChoice::StringParam("0.002".into())),
        );
        p.insert(
            "saved_usd".to_string(),
            param(ParameterChoice::DoubleParam(0.5)),
        );
        let info = reply_info(&p);
        assert_eq!(info.cache, Some(CacheStatus::Coalesced));
        assert_eq!(info.cost_usd, Some(0.002));
        assert_eq!(info.saved_usd, Some(0.5));
        assert_eq!(reply_info(&HashMap::new()), ReplyInfo::default());
    }

    #[test]
    fn decodes_raw_and_typed_outputs() {
        let out = |name: &str, dt: &str| InferOutputTensor {
            name: name.into(),
            datatype: dt.into(),
            ..Default::default()
        };
        let mut resp = ModelInferResponse {
            outputs: vec![out("p", "FP32"), out("label", "INT64")],
            raw_output_contents: vec![
                bytes::Bytes::from(2.5f32.to_le_bytes().to_vec()),
                bytes::Bytes::from(4i64.to_le_bytes().to_vec()),
            ],
            ..Default::default()
        };
        assert_eq!(
            decode_output(&resp, Some("label")),
            Ok(vec![Scalar::Num(4.0)])
        );
        assert_eq!(decode_output(&resp, None), Ok(vec![Scalar::Num(2.5)]));
        resp.raw_output_contents.clear();
        resp.outputs[1].contents = Some(InferTensorContents {
            int64_contents: vec![9],
            ..Default::default()
        });
        assert_eq!(
            decode_output(&resp, Some("label")),
            Ok(vec![Scalar::Num(9.0)])
        );
        assert!(decode_output(&resp, Some("p")).is_err());
        assert!(decode_output(&resp, Some("zzz")).is_err());
    }
}
