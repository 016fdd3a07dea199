//! Between protobuf messages and the core request and response. Typed `contents` are turned
//! into the same little-endian bytes `raw_input_contents` carry, so both forms hash and batch
//! alike.

use crate::api::params::{self, ParamValue};
use crate::gateway::Error;
use crate::kserve::proto;
use crate::kserve::typed::typed_to_bytes;
use crate::request::{InferRequest, InferResponse, RequestOptions};
use crate::tensor::{DataType, Tensor};
use bytes::Bytes;
use proto::infer_parameter::ParameterChoice;
use std::collections::HashMap;

fn bad(field: impl std::fmt::Display, expectation: impl std::fmt::Display) -> Error {
    Error::Decode(format!("{field}: {expectation}"))
}

/// A request whose tensors or parameters could not be read, with the model it named, so the
/// front end can say "no such model" first when that is also true.
pub struct Unreadable {
    pub error: Error,
    pub model: String,
    pub version: String,
}

pub fn request(message: proto::ModelInferRequest) -> Result<InferRequest, Unreadable> {
    let proto::ModelInferRequest {
        model_name,
        model_version,
        id,
        parameters,
        inputs,
        outputs: output_messages,
        raw_input_contents,
    } = message;
    let read = tensors(inputs, raw_input_contents).and_then(|inputs| {
        let mut options = RequestOptions::default();
        params::apply(&mut options, parameter_values(&parameters))?;
        Ok((inputs, options))
    });
    let (inputs, options) = match read {
        Ok(read) => read,
        Err(error) => {
            return Err(Unreadable {
                error,
                model: model_name,
                version: model_version,
            })
        }
    };
    Ok(InferRequest {
        model: model_name,
        version: (!model_version.is_empty()).then_some(model_version),
        id: (!id.is_empty()).then_some(id),
        inputs,
        outputs: output_messages.into_iter().map(|o| o.name).collect(),
        options,
    })
}

fn tensors(
    input_messages: Vec<proto::model_infer_request::InferInputTensor>,
    raw_input_contents: Vec<Bytes>,
) -> Result<Vec<Tensor>, Error> {
    if !raw_input_contents.is_empty() && raw_input_contents.len() != input_messages.len() {
        return Err(bad(
            "raw_input_contents",
            format!(
                "{} entries for {} inputs; give one per input, in order",
                raw_input_contents.len(),
                input_messages.len()
            ),
        ));
    }
    let mut raw = raw_input_contents.into_iter();
    let mut inputs = Vec::with_capacity(input_messages.len());
    for (index, input) in input_messages.into_iter().enumerate() {
        let field = |what: &str| format!("inputs[{index}].{what}");
        let dtype = DataType::parse(&input.datatype).ok_or_else(|| {
            bad(
                field("datatype"),
                format!("`{}` is not a KServe V2 datatype", input.datatype),
            )
        })?;
        let shape = input
            .shape
            .iter()
            .map(|&d| {
                usize::try_from(d)
                    .map_err(|_| bad(field("shape"), format!("dimension {d} is negative")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let data = match (raw.next(), input.contents) {
            (Some(_), Some(contents)) if !is_empty(&contents) => {
                return Err(bad(
                    field("contents"),
                    "give raw_input_contents or contents, not both",
                ))
            }
            (Some(bytes), _) => bytes,
            (None, Some(contents)) => {
                typed_to_bytes(dtype, &contents).map_err(|why| bad(field("contents"), why))?
            }
            (None, None) => {
                return Err(bad(
                    field("contents"),
                    "missing: give contents or raw_input_contents",
                ))
            }
        };
        inputs.push(Tensor {
            name: input.name,
            dtype,
            shape,
            data,
        });
    }
    Ok(inputs)
}

fn parameter_values(
    parameters: &HashMap<String, proto::InferParameter>,
) -> impl Iterator<Item = (&str, ParamValue<'_>)> {
    parameters.iter().filter_map(|(name, value)| {
        let value = match value.parameter_choice.as_ref()? {
            ParameterChoice::BoolParam(b) => ParamValue::Bool(*b),
            ParameterChoice::Int64Param(i) => ParamValue::Int(*i),
            ParameterChoice::Uint64Param(u) => ParamValue::Uint(*u),
            ParameterChoice::DoubleParam(d) => ParamValue::Double(*d),
            ParameterChoice::StringParam(s) => ParamValue::Str(s),
        };
        Some((name.as_str(), value))
    })
}

fn is_empty(contents: &proto::InferTensorContents) -> bool {
    contents.bool_contents.is_empty()
        && contents.int_contents.is_empty()
        && contents.int64_contents.is_empty()
        && contents.uint_contents.is_empty()
        && contents.uint64_contents.is_empty()
        && contents.fp32_contents.is_empty()
        && contents.fp64_contents.is_empty()
        && contents.bytes_contents.is_empty()
}

/// Always answers with `raw_output_contents`: every client reads it, and it costs no conversion.
pub fn response(response: InferResponse) -> proto::ModelInferResponse {
    let mut raw_output_contents = Vec::with_capacity(response.outputs.len());
    let mut outputs = Vec::with_capacity(response.outputs.len());
    for tensor in response.outputs.iter() {
        outputs.push(proto::model_infer_response::InferOutputTensor {
            name: tensor.name.clone(),
            datatype: tensor.dtype.as_str().to_string(),
            shape: tensor.shape.iter().map(|&d| d as i64).collect(),
            parameters: HashMap::new(),
            contents: None,
        });
        raw_output_contents.push(tensor.data.clone());
    }
    let served = &response.served;
    let string = |s: String| proto::InferParameter {
        parameter_choice: Some(ParameterChoice::StringParam(s)),
    };
    let unsigned = |u: u64| proto::InferParameter {
        parameter_choice: Some(ParameterChoice::Uint64Param(u)),
    };
    let double = |d: f64| proto::InferParameter {
        parameter_choice: Some(ParameterChoice::DoubleParam(d)),
    };
    let mut parameters = HashMap::from([
        (
            "cache".to_string(),
            string(served.cache.as_str().to_string()),
        ),
        ("request_id".to_string(), string(served.request_id.clone())),
        ("batch_size".to_string(), unsigned(served.batch_rows as u64)),
        ("queue_us".to_string(), unsigned(served.queue_us)),
        ("compute_us".to_string(), unsigned(served.compute_us)),
        ("cost_usd".to_string(), double(served.cost_usd)),
        ("saved_usd".to_string(), double(served.saved_usd)),
    ]);
    if served.cold_start_us > 0 {
        parameters.insert("cold_start_us".to_string(), unsigned(served.cold_start_us));
    }
    if let Some(variant) = &served.variant {
        parameters.insert("variant".to_string(), string(variant.to_string()));
    }
    proto::ModelInferResponse {
        model_name: response.model,
        model_version: response.version,
        id: response.id.unwrap_or_default(),
        parameters,
        outputs,
        raw_output_contents,
    }
}

#[cfg(test)]
mod properties;
