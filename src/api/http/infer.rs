//! KServe V2 REST inference bodies: JSON tensors and the binary tensor extension, decoded into
//! the core request and encoded back from the core response.

use super::data;
use crate::api::params::{self, ParamValue};
use crate::error::Error;
use crate::request::{InferRequest, InferResponse, RequestOptions};
use crate::tensor::{DataType, Tensor};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// How the caller wants its outputs, remembered from the request for the response.
#[derive(Debug, Default)]
pub struct OutputEncoding {
    /// Outputs to send as raw bytes after the JSON header.
    binary: Vec<String>,
    all_binary: bool,
}

impl OutputEncoding {
    fn is_binary(&self, name: &str) -> bool {
        self.all_binary || self.binary.iter().any(|n| n == name)
    }
}

#[derive(Deserialize)]
struct RequestHeader<'a> {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(borrow)]
    inputs: Vec<InputHeader<'a>>,
    #[serde(default)]
    outputs: Vec<OutputHeader>,
}

#[derive(Deserialize)]
struct InputHeader<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputHeader {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

fn bad(field: impl std::fmt::Display, expectation: impl std::fmt::Display) -> Error {
    Error::Decode(format!("{field}: {expectation}"))
}

/// Decodes an infer body. `header_length` is `Inference-Header-Content-Length` when present:
/// the JSON is that prefix and the rest holds binary tensors in input order.
pub fn decode(
    model: &str,
    version: Option<&str>,
    body: &Bytes,
    header_length: Option<usize>,
) -> Result<(InferRequest, OutputEncoding), Error> {
    let json_end = match header_length {
        Some(length) if length > body.len() => {
            return Err(bad(
                "Inference-Header-Content-Length",
                format!("{length} is beyond the {}-byte body", body.len()),
            ))
        }
        Some(length) => length,
        None => body.len(),
    };
    let header: RequestHeader = serde_json::from_slice(&body[..json_end]).map_err(|e| {
        bad(
            "body",
            format!("not a valid KServe V2 inference request: {e}"),
        )
    })?;
    let mut binary = body.slice(json_end..);
    // A body is at least as long as the elements it describes (one byte each in JSON, their
    // size in binary), so larger shapes are refused before anything is allocated.
    let body_len = body.len();
    let mut inputs = Vec::with_capacity(header.inputs.len());
    for (index, input) in header.inputs.into_iter().enumerate() {
        let field = |what: &str| format!("inputs[{index}].{what}");
        let dtype = DataType::parse(&input.datatype).ok_or_else(|| {
            bad(
                field("datatype"),
                format!("`{}` is not a KServe V2 datatype (BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES)", input.datatype),
            )
        })?;
        let shape = input
            .shape
            .iter()
            .map(|&d| {
                usize::try_from(d)
                    .map_err(|_| bad(field("shape"), format!("dimension {d} is negative")))
            })
            .collect::<Result<Vec<usize>, Error>>()?;
        let elements = Tensor::element_count(&shape)
            .filter(|&n| n <= body_len)
            .ok_or_else(|| {
                bad(
                    field("shape"),
                    format!(
                        "{:?} holds more elements than the {body_len}-byte body can carry",
                        input.shape
                    ),
                )
            })?;
        let binary_size = match input.parameters.get("binary_data_size") {
            None => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        bad(
                            field("parameters.binary_data_size"),
                            "must be an unsigned integer",
                        )
                    })?,
            ),
        };
        let bytes = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    field("data"),
                    "give either `data` or `binary_data_size`, not both",
                ))
            }
            (Some(size), None) => {
                if header_length.is_none() {
                    return Err(bad(
                        field("parameters.binary_data_size"),
                        "binary data needs the Inference-Header-Content-Length header",
                    ));
                }
                if size > binary.len() {
                    return Err(bad(
                        field("parameters.binary_data_size"),
                        format!(
                            "{size} bytes declared but only {} remain in the body",
                            binary.len()
                        ),
                    ));
                }
                binary.split_to(size)
            }
            (None, Some(raw)) => Bytes::from(
                data::parse(raw.get(), dtype, elements).map_err(|why| bad(field("data"), why))?,
            ),
            (None, None) => {
                return Err(bad(
                    field("data"),
                    "missing: give `data` or `parameters.binary_data_size`",
                ))
            }
        };
        inputs.push(Tensor {
            name: input.name,
            dtype,
            shape,
            data: bytes,
        });
    }
    if !binary.is_empty() {
        return Err(bad(
            "body",
            format!(
                "{} bytes of binary data are not claimed by any input's binary_data_size",
                binary.len()
            ),
        ));
    }
    let mut options = RequestOptions::default();
    params::apply(
        &mut options,
        header
            .parameters
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), json_param(v)?))),
    )?;
    let mut encoding = OutputEncoding {
        binary: Vec::new(),
        all_binary: header
            .parameters
            .get("binary_data_output")
            .and_then(Value::as_bool)
            == Some(true),
    };
    let mut outputs = Vec::with_capacity(header.outputs.len());
    for output in header.outputs {
        if output
            .parameters
            .get("binary_data")
            .and_then(Value::as_bool)
            == Some(true)
        {
            encoding.binary.push(output.name.clone());
        }
        outputs.push(output.name);
    }
    // With named outputs, only those flagged are binary; the top-level flag covers the rest.
    if !outputs.is_empty() && header.parameters.get("binary_data_output").is_none() {
        encoding.all_binary = false;
    }
    let request = InferRequest {
        model: model.to_string(),
        version: version.map(str::to_string),
        id: header.id,
        inputs,
        outputs,
        options,
    };
    Ok((request, encoding))
}

fn json_param(value: &Value) -> Option<ParamValue<'_>> {
    Some(match value {
        Value::Bool(b) => ParamValue::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => ParamValue::Uint(u),
            (None, Some(i)) => ParamValue::Int(i),
            _ => ParamValue::Double(n.as_f64()?),
        },
        Value::String(s) => ParamValue::Str(s),
        _ => return None,
    })
}

#[derive(Serialize)]
struct ResponseHeader<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    parameters: Map<String, Value>,
    outputs: Vec<OutputJson<'a>>,
}

#[derive(Serialize)]
struct OutputJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
}

/// The response parameters that say how a request was served (also sent as headers).
pub fn served_parameters(response: &InferResponse) -> Map<String, Value> {
    let served = &response.served;
    let mut parameters = Map::new();
    parameters.insert("cache".into(), served.cache.as_str().into());
    parameters.insert("request_id".into(), served.request_id.clone().into());
    parameters.insert("batch_size".into(), served.batch_rows.into());
    parameters.insert("queue_us".into(), served.queue_us.into());
    parameters.insert("compute_us".into(), served.compute_us.into());
    parameters.insert("cost_usd".into(), served.cost_usd.into());
    parameters.insert("saved_usd".into(), served.saved_usd.into());
    parameters
}

/// Encodes a response. Returns the body and, when any output is binary, the JSON header length
/// for `Inference-Header-Content-Length`.
pub fn encode(response: &InferResponse, encoding: &OutputEncoding) -> (Vec<u8>, Option<usize>) {
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut binary_parts: Vec<&Bytes> = Vec::new();
    for tensor in &response.outputs {
        if encoding.is_binary(&tensor.name) {
            let mut parameters = Map::new();
            parameters.insert("binary_data_size".into(), tensor.data.len().into());
            binary_parts.push(&tensor.data);
            outputs.push(OutputJson {
                name: &tensor.name,
                datatype: tensor.dtype.as_str(),
                shape: &tensor.shape,
                parameters: Some(parameters),
                data: None,
            });
        } else {
            let mut text = Vec::with_capacity(tensor.data.len() * 3 + 2);
            data::write(&mut text, tensor.dtype, &tensor.data);
            let data = String::from_utf8(text)
                .ok()
                .and_then(|text| RawValue::from_string(text).ok());
            outputs.push(OutputJson {
                name: &tensor.name,
                datatype: tensor.dtype.as_str(),
                shape: &tensor.shape,
                parameters: None,
                data,
            });
        }
    }
    let header = ResponseHeader {
        model_name: &response.model,
        model_version: &response.version,
        id: response.id.as_deref(),
        parameters: served_parameters(response),
        outputs,
    };
    let mut body = serde_json::to_vec(&header).unwrap_or_else(|_| b"{}".to_vec());
    if binary_parts.is_empty() {
        return (body, None);
    }
    let header_length = body.len();
    body.reserve(binary_parts.iter().map(|b| b.len()).sum());
    for part in binary_parts {
        body.extend_from_slice(part);
    }
    (body, Some(header_length))
}

#[cfg(test)]
mod tests;
