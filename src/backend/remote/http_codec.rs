//! KServe V2 REST bodies seen from the client side: a batch encoded as an infer request (the
//! binary tensor extension or plain JSON), and the upstream's answer, error or metadata decoded.
//! Numbers go through the same JSON tensor codec as our own front end.

use super::metadata::{self, Metadata};
use crate::backend::BatchInput;
use crate::kserve::json;
use crate::spec::ModelSpec;
use crate::tensor::Tensor;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// An encoded infer body; `header_length` is set when binary tensors follow the JSON.
#[derive(Debug, Clone)]
pub struct Body {
    pub bytes: Bytes,
    pub header_length: Option<usize>,
}

#[derive(Serialize)]
struct RequestHeader<'a> {
    inputs: Vec<InputJson<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<OutputJson<'a>>,
}

#[derive(Serialize)]
struct InputJson<'a> {
    name: &'a str,
    shape: &'a [usize],
    datatype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct OutputJson<'a> {
    name: &'a str,
    parameters: BinaryFlag,
}

#[derive(Serialize)]
struct BinaryFlag {
    binary_data: bool,
}

/// Encodes a batch. With `binary`, every input travels as raw bytes after the JSON and every
/// output of `outputs` is asked for in binary; without it, everything is JSON and no outputs
/// are named, so the upstream returns all of them (some servers reject output parameters).
pub fn encode_request(
    inputs: &[BatchInput],
    outputs: &[String],
    binary: bool,
) -> Result<Body, String> {
    let mut entries = Vec::with_capacity(inputs.len());
    for input in inputs {
        let size: usize = input.parts.iter().map(Bytes::len).sum();
        let data = if binary {
            None
        } else {
            // JSON is the slow path anyway; one contiguous copy keeps it simple.
            let joined = input.concatenated();
            if !json::is_text(input.dtype, &joined) {
                return Err(format!(
                    "input `{}` holds BYTES that are not UTF-8, which JSON cannot carry; set upstream_binary = true",
                    input.name
                ));
            }
            let mut text = Vec::with_capacity(size * 3 + 2);
            json::write(&mut text, input.dtype, &joined);
            let text = String::from_utf8(text).map_err(|e| e.to_string())?;
            Some(RawValue::from_string(text).map_err(|e| e.to_string())?)
        };
        entries.push(InputJson {
            name: &input.name,
            shape: &input.shape,
            datatype: input.dtype.as_str(),
            parameters: binary.then_some(BinarySize {
                binary_data_size: size,
            }),
            data,
        });
    }
    let header = RequestHeader {
        inputs: entries,
        outputs: if binary {
            outputs
                .iter()
                .map(|name| OutputJson {
                    name,
                    parameters: BinaryFlag { binary_data: true },
                })
                .collect()
        } else {
            Vec::new()
        },
    };
    let json = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    if !binary {
        return Ok(Body {
            bytes: Bytes::from(json),
            header_length: None,
        });
    }
    let payload: usize = inputs.iter().flat_map(|i| &i.parts).map(Bytes::len).sum();
    let mut body = BytesMut::with_capacity(json.len() + payload);
    body.extend_from_slice(&json);
    for part in inputs.iter().flat_map(|i| &i.parts) {
        body.extend_from_slice(part);
    }
    Ok(Body {
        header_length: Some(json.len()),
        bytes: body.freeze(),
    })
}

#[derive(Deserialize)]
struct ResponseHeader<'a> {
    #[serde(borrow)]
    outputs: Vec<OutputHeader<'a>>,
}

#[derive(Deserialize)]
struct OutputHeader<'a> {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Decodes an infer response body; binary outputs are sliced out of `body` without a copy.
pub fn decode_response(body: &Bytes, header_length: Option<usize>) -> Result<Vec<Tensor>, String> {
    let json_end = header_length.unwrap_or(body.len());
    if json_end > body.len() {
        return Err(format!(
            "{HEADER_LENGTH} {json_end} is beyond the {}-byte body",
            body.len()
        ));
    }
    let header: ResponseHeader = serde_json::from_slice(&body[..json_end])
        .map_err(|e| format!("not a KServe V2 infer response: {e}"))?;
    let mut binary_at = json_end;
    let mut outputs = Vec::with_capacity(header.outputs.len());
    for output in header.outputs {
        let name = &output.name;
        let (dtype, shape) = super::output_layout(name, &output.datatype, &output.shape)?;
        // Every element takes at least one byte of the body, so nothing larger is allocated.
        let elements = Tensor::element_count(&shape)
            .filter(|&n| n <= body.len())
            .ok_or_else(|| format!("output `{name}` has shape {shape:?}, larger than its body"))?;
        let binary_size = output
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
            .map(|v| v.as_u64().and_then(|n| usize::try_from(n).ok()));
        let data = match (binary_size, output.data) {
            (Some(None), _) => {
                return Err(format!("output `{name}`: binary_data_size is not a size"))
            }
            (Some(Some(size)), _) => {
                if size > body.len() - binary_at {
                    return Err(format!(
                        "output `{name}`: {size} binary bytes are more than the body holds"
                    ));
                }
                let data = body.slice(binary_at..binary_at + size);
                Tensor::check_data(dtype, &shape, &data)
                    .map_err(|why| format!("output `{name}`: {why}"))?;
                binary_at += size;
                data
            }
            (None, Some(json)) => Bytes::from(
                json::parse(json.get(), dtype, elements)
                    .map_err(|e| format!("output `{name}`: {e}"))?,
            ),
            (None, None) => return Err(format!("output `{name}` carries no data")),
        };
        outputs.push(Tensor {
            name: output.name,
            dtype,
            shape,
            data,
        });
    }
    if binary_at != body.len() {
        return Err(format!(
            "{} bytes after the outputs are unaccounted for",
            body.len() - binary_at
        ));
    }
    Ok(outputs)
}

/// The message of an error body: `{"error": "..."}` as the protocol says, or the text itself.
pub fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        return parsed.error;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "(empty body)".into(),
        None => text.to_string(),
    }
}

#[derive(Deserialize)]
struct MetadataJson {
    #[serde(default)]
    platform: String,
    #[serde(default)]
    inputs: Vec<TensorJson>,
    #[serde(default)]
    outputs: Vec<TensorJson>,
}

#[derive(Deserialize)]
struct TensorJson {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

pub fn decode_metadata(body: &[u8]) -> Result<Metadata, String> {
    let parsed: MetadataJson =
        serde_json::from_slice(body).map_err(|e| format!("not KServe V2 model metadata: {e}"))?;
    let convert = |tensors: &[TensorJson]| {
        tensors
            .iter()
            .map(|t| metadata::tensor_spec(&t.name, &t.datatype, &t.shape))
            .collect::<Result<Vec<_>, String>>()
    };
    Ok(Metadata {
        platform: parsed.platform,
        spec: ModelSpec {
            inputs: convert(&parsed.inputs)?,
            outputs: convert(&parsed.outputs)?,
        },
    })
}

#[cfg(test)]
mod tests;
