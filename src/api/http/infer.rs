//! KServe V2 REST inference bodies: JSON tensors and the binary tensor extension, decoded into
//! the core request and encoded back from the core response.

use super::reader;
use crate::api::params::{self, ParamValue};
use crate::gateway::Error;
use crate::kserve::json;
use crate::request::{InferRequest, InferResponse, RequestOptions};
use crate::tensor::{DataType, Tensor};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;

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

/// The JSON part of a request body, as `reader` (the usual shape, in one pass) or serde (any
/// valid body, and every error message) reads it.
#[derive(Deserialize)]
pub(super) struct RequestHeader<'a> {
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) parameters: Map<String, Value>,
    #[serde(borrow)]
    pub(super) inputs: Vec<InputHeader<'a>>,
    #[serde(default)]
    pub(super) outputs: Vec<OutputHeader>,
}

#[derive(Deserialize)]
pub(super) struct InputHeader<'a> {
    pub(super) name: String,
    pub(super) shape: Vec<i64>,
    // Borrowed from the body unless it holds escapes: parsed at once, never kept.
    #[serde(borrow)]
    pub(super) datatype: Cow<'a, str>,
    #[serde(default)]
    pub(super) parameters: Map<String, Value>,
    /// The JSON text of `data`, read once its datatype is known.
    #[serde(borrow, default, deserialize_with = "raw_text")]
    pub(super) data: Option<&'a str>,
    /// `data` already read, as the datatype named here (`reader` reads while it walks).
    #[serde(skip)]
    pub(super) read: Option<(DataType, Vec<u8>)>,
}

#[derive(Deserialize)]
pub(super) struct OutputHeader {
    pub(super) name: String,
    #[serde(default)]
    pub(super) parameters: Map<String, Value>,
}

fn raw_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de str>, D::Error> {
    let raw: Option<&'de RawValue> = Deserialize::deserialize(deserializer)?;
    Ok(raw.map(RawValue::get))
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
    let json = &body[..json_end];
    // The usual body in one pass; anything else, every error included, the way serde reads it.
    let header = match reader::read(json) {
        Some(header) => header,
        None => serde_json::from_slice(json).map_err(|e| {
            bad(
                "body",
                format!("not a valid KServe V2 inference request: {e}"),
            )
        })?,
    };
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
            (None, Some(text)) => match input.read {
                // Read as this datatype, with the count the shape asks for: done already.
                Some((read_as, bytes))
                    if read_as == dtype
                        && dtype
                            .element_size()
                            .and_then(|size| elements.checked_mul(size))
                            == Some(bytes.len()) =>
                {
                    Bytes::from(bytes)
                }
                _ => Bytes::from(
                    json::parse(text, dtype, elements).map_err(|why| bad(field("data"), why))?,
                ),
            },
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

/// Encodes a response. Returns the body and, when any output is binary, the JSON header length
/// for `Inference-Header-Content-Length`.
///
/// The JSON is written straight into the body rather than through a `serde_json::Value` tree:
/// on a cache hit, building and dropping that tree cost more than the numbers themselves.
/// Strings and floats still go through serde_json, for escaping and shortest round-trip form.
pub fn encode(response: &InferResponse, encoding: &OutputEncoding) -> (Vec<u8>, Option<usize>) {
    // Sized so a typical answer (a few outputs, shortest-form floats up to about 4 characters
    // per byte of data) is written without growing; larger ones grow by doubling.
    let text_size: usize = response.outputs.iter().map(|t| t.data.len() * 4).sum();
    let mut body = Vec::with_capacity(512 + text_size);
    let mut binary_parts: Vec<&Bytes> = Vec::new();
    body.extend_from_slice(b"{\"model_name\":");
    json_value(&mut body, &response.model);
    body.extend_from_slice(b",\"model_version\":");
    json_value(&mut body, &response.version);
    if let Some(id) = &response.id {
        body.extend_from_slice(b",\"id\":");
        json_value(&mut body, id);
    }
    body.extend_from_slice(b",\"parameters\":");
    write_served(&mut body, &response.served);
    body.extend_from_slice(b",\"outputs\":");
    body.push(b'[');
    for (index, tensor) in response.outputs.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"name\":");
        json_value(&mut body, &tensor.name);
        body.extend_from_slice(b",\"datatype\":\"");
        body.extend_from_slice(tensor.dtype.as_str().as_bytes());
        body.extend_from_slice(b"\",\"shape\":[");
        for (i, dim) in tensor.shape.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            json_value(&mut body, dim);
        }
        body.push(b']');
        // JSON strings cannot hold bytes that are not UTF-8: such an output goes binary, as
        // Triton's clients read either form from the same answer.
        if encoding.is_binary(&tensor.name) || !json::is_text(tensor.dtype, &tensor.data) {
            body.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
            json_value(&mut body, &tensor.data.len());
            body.push(b'}');
            binary_parts.push(&tensor.data);
        } else {
            body.extend_from_slice(b",\"data\":");
            json::write(&mut body, tensor.dtype, &tensor.data);
        }
        body.push(b'}');
    }
    body.push(b']');
    body.push(b'}');
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

/// How the request was served (the same facts as the x-tollgate-* headers), as a JSON object.
fn write_served(out: &mut Vec<u8>, served: &crate::request::Served) {
    out.extend_from_slice(b"{\"cache\":\"");
    out.extend_from_slice(served.cache.as_str().as_bytes());
    out.extend_from_slice(b"\",\"request_id\":");
    json_value(out, &served.request_id);
    out.extend_from_slice(b",\"batch_size\":");
    json_value(out, &served.batch_rows);
    out.extend_from_slice(b",\"queue_us\":");
    json_value(out, &served.queue_us);
    out.extend_from_slice(b",\"compute_us\":");
    json_value(out, &served.compute_us);
    out.extend_from_slice(b",\"cost_usd\":");
    json_value(out, &served.cost_usd);
    out.extend_from_slice(b",\"saved_usd\":");
    json_value(out, &served.saved_usd);
    if served.cold_start_us > 0 {
        out.extend_from_slice(b",\"cold_start_us\":");
        json_value(out, &served.cold_start_us);
    }
    if let Some(variant) = &served.variant {
        out.extend_from_slice(b",\"variant\":");
        json_value(out, variant.as_str());
    }
    out.push(b'}');
}

/// One JSON scalar: strings escaped, floats in shortest round-trip form (a non-finite one,
/// never produced by pricing, becomes null). Writing into a Vec cannot fail.
fn json_value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
