//! The gRPC transport: one lazily connected tonic channel per endpoint, shared by every instance
//! (HTTP/2 multiplexes their requests). Inputs always travel as `raw_input_contents`; outputs
//! are read from raw contents or, from servers that prefer them, typed contents.

use super::error::{describe, grpc_code_class, never_reached, UpstreamError};
use super::metadata::{self, Metadata};
use super::transport::Reach;
use super::Target;
use crate::backend::BatchInput;
use crate::config::UpstreamUrl;
use crate::kserve::proto;
use crate::kserve::typed::typed_to_bytes;
use crate::spec::ModelSpec;
use crate::telemetry::trace;
use crate::tensor::Tensor;
use bytes::Bytes;
use proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use std::collections::HashMap;
use std::error::Error as _;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub struct GrpcTransport {
    client: GrpcInferenceServiceClient<Channel>,
    /// `upstream_headers` as metadata, parsed once.
    headers: Vec<(MetadataKey<Ascii>, MetadataValue<Ascii>)>,
}

impl GrpcTransport {
    /// Must be called inside the tokio runtime that will drive the channel.
    pub fn new(url: &UpstreamUrl, reach: &Reach<'_>) -> Result<GrpcTransport, String> {
        let mut endpoint = Endpoint::from_shared(url.base.clone())
            .map_err(|e| format!("`{}`: {e}", url.label))?
            .connect_timeout(reach.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30));
        if url.tls {
            let tls = match &reach.ca_pem {
                Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("`{}`: {e}", url.label))?;
        }
        let headers = reach
            .headers
            .iter()
            .map(|(name, value)| {
                let key = MetadataKey::from_bytes(name.as_bytes())
                    .map_err(|_| format!("upstream_headers: `{name}` is not a metadata key"))?;
                let value = MetadataValue::try_from(value)
                    .map_err(|_| format!("upstream_headers.{name}: not a metadata value"))?;
                Ok((key, value))
            })
            .collect::<Result<_, String>>()?;
        // The upstream is trusted as far as sizes go; its answers are as large as its batches.
        let client = GrpcInferenceServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(GrpcTransport { client, headers })
    }

    pub async fn infer(
        &self,
        target: &Target,
        inputs: &[BatchInput],
        outputs: &[String],
        timeout: Duration,
    ) -> Result<Vec<Tensor>, UpstreamError> {
        let message = proto::ModelInferRequest {
            model_name: target.model.clone(),
            model_version: target.version.clone().unwrap_or_default(),
            id: String::new(),
            parameters: HashMap::new(),
            inputs: inputs
                .iter()
                .map(|input| InferInputTensor {
                    name: input.name.clone(),
                    datatype: input.dtype.as_str().to_string(),
                    shape: input.shape.iter().map(|&d| d as i64).collect(),
                    parameters: HashMap::new(),
                    contents: None,
                })
                .collect(),
            outputs: outputs
                .iter()
                .map(|name| InferRequestedOutputTensor {
                    name: name.clone(),
                    parameters: HashMap::new(),
                })
                .collect(),
            raw_input_contents: inputs.iter().map(contiguous).collect(),
        };
        let mut request = self.request(message);
        // The upstream learns our deadline, so it can drop work nobody waits for any more.
        request.set_timeout(timeout);
        let response = self
            .client
            .clone()
            .model_infer(request)
            .await
            .map_err(classify)?
            .into_inner();
        decode_response(response).map_err(UpstreamError::Protocol)
    }

    /// A call's message with `upstream_headers` as its metadata.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        for (key, value) in &self.headers {
            metadata.insert(key.clone(), value.clone());
        }
        if let Some((parent, state)) = trace::outgoing() {
            if let Ok(value) = parent.parse() {
                metadata.insert(trace::TRACEPARENT, value);
            }
            if let Some(value) = state.and_then(|s| s.parse().ok()) {
                metadata.insert(trace::TRACESTATE, value);
            }
        }
        request
    }

    pub async fn ready(&self, target: &Target) -> Result<bool, UpstreamError> {
        let request = proto::ModelReadyRequest {
            name: target.model.clone(),
            version: target.version.clone().unwrap_or_default(),
        };
        let response = self
            .client
            .clone()
            .model_ready(self.request(request))
            .await
            .map_err(classify)?;
        Ok(response.into_inner().ready)
    }

    pub async fn metadata(&self, target: &Target) -> Result<Metadata, UpstreamError> {
        let request = proto::ModelMetadataRequest {
            name: target.model.clone(),
            version: target.version.clone().unwrap_or_default(),
        };
        let response = self
            .client
            .clone()
            .model_metadata(self.request(request))
            .await
            .map_err(classify)?
            .into_inner();
        let convert = |tensors: &[proto::model_metadata_response::TensorMetadata]| {
            tensors
                .iter()
                .map(|t| metadata::tensor_spec(&t.name, &t.datatype, &t.shape))
                .collect::<Result<Vec<_>, String>>()
        };
        let spec = ModelSpec {
            inputs: convert(&response.inputs).map_err(UpstreamError::Protocol)?,
            outputs: convert(&response.outputs).map_err(UpstreamError::Protocol)?,
        };
        Ok(Metadata {
            platform: response.platform,
            spec,
        })
    }
}

/// One input's bytes in one buffer; a single part (no batching) is passed on without a copy.
fn contiguous(input: &BatchInput) -> Bytes {
    match input.parts.as_slice() {
        [only] => only.clone(),
        _ => Bytes::from(input.concatenated()),
    }
}

/// A status the server sent carries no source; one made here from a transport failure does.
fn classify(status: tonic::Status) -> UpstreamError {
    let Some(source) = status.source() else {
        return UpstreamError::Status {
            class: grpc_code_class(status.code()),
            code: format!("{:?}", status.code()),
            message: status.message().to_string(),
        };
    };
    let detail = describe(source);
    let text = if detail.contains(status.message()) {
        detail
    } else {
        format!("{}: {detail}", status.message())
    };
    if never_reached(&status) {
        UpstreamError::NotSent(text)
    } else {
        UpstreamError::Transport(text)
    }
}

fn decode_response(response: proto::ModelInferResponse) -> Result<Vec<Tensor>, String> {
    let raw = response.raw_output_contents;
    if !raw.is_empty() && raw.len() != response.outputs.len() {
        return Err(format!(
            "{} raw_output_contents for {} outputs",
            raw.len(),
            response.outputs.len()
        ));
    }
    let mut raw = raw.into_iter();
    let mut tensors = Vec::with_capacity(response.outputs.len());
    for output in response.outputs {
        let name = output.name;
        let (dtype, shape) = super::output_layout(&name, &output.datatype, &output.shape)?;
        let data = match (raw.next(), &output.contents) {
            (Some(bytes), _) => bytes,
            (None, Some(contents)) => {
                typed_to_bytes(dtype, contents).map_err(|e| format!("output `{name}`: {e}"))?
            }
            (None, None) => return Err(format!("output `{name}` carries no data")),
        };
        Tensor::check_data(dtype, &shape, &data)
            .map_err(|why| format!("output `{name}`: {why}"))?;
        tensors.push(Tensor {
            name,
            dtype,
            shape,
            data,
        });
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_typed_outputs_decode_alike_and_sizes_are_checked() {
        let output = |contents| proto::model_infer_response::InferOutputTensor {
            name: "y".into(),
            datatype: "INT64".into(),
            shape: vec![2],
            parameters: HashMap::new(),
            contents,
        };
        let bytes: Bytes = [7i64, -2]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into();
        let raw = proto::ModelInferResponse {
            outputs: vec![output(None)],
            raw_output_contents: vec![bytes.clone()],
            ..Default::default()
        };
        let typed = proto::ModelInferResponse {
            outputs: vec![output(Some(proto::InferTensorContents {
                int64_contents: vec![7, -2],
                ..Default::default()
            }))],
            ..Default::default()
        };
        assert_eq!(decode_response(raw).unwrap()[0].data, bytes);
        assert_eq!(decode_response(typed).unwrap()[0].data, bytes);
        let short = proto::ModelInferResponse {
            outputs: vec![output(None)],
            raw_output_contents: vec![bytes.slice(..8)],
            ..Default::default()
        };
        assert!(decode_response(short).unwrap_err().contains("got 8"));
    }

    #[test]
    fn server_statuses_keep_their_code_and_message() {
        match classify(tonic::Status::invalid_argument("bad shape")) {
            UpstreamError::Status { class, message, .. } => {
                assert_eq!(class, crate::error::ErrorClass::BadRequest);
                assert_eq!(message, "bad shape");
            }
            other => panic!("{other:?}"),
        }
    }
}
