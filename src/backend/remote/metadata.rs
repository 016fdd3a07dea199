//! What an upstream says about its model, turned into the spec requests are checked against.
//! Both wire protocols describe tensors alike, so they share this conversion.

use crate::spec::{ModelSpec, TensorSpec};
use crate::tensor::DataType;

/// Model metadata as an upstream reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// The upstream's platform (e.g. "onnxruntime_onnx", "python"), shown as our provider.
    pub platform: String,
    pub spec: ModelSpec,
}

/// One tensor of the upstream's metadata; any negative dimension is an open one.
pub fn tensor_spec(name: &str, datatype: &str, shape: &[i64]) -> Result<TensorSpec, String> {
    let dtype = DataType::parse(datatype).ok_or_else(|| {
        format!("tensor `{name}` has datatype `{datatype}`, which is not a KServe V2 datatype")
    })?;
    Ok(TensorSpec {
        name: name.to_string(),
        dtype,
        shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
    })
}

/// Checks that the metadata describes something requests can be validated against.
pub fn check(metadata: Metadata) -> Result<Metadata, String> {
    if metadata.spec.inputs.is_empty() || metadata.spec.outputs.is_empty() {
        return Err(
            "its metadata lists no inputs or no outputs; declare them on the upstream (MLServer: `inputs` and `outputs` in model-settings.json)"
                .into(),
        );
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_convert_and_unknown_datatypes_are_named() {
        let spec = tensor_spec("x", "FP32", &[-1, 64]).unwrap();
        assert_eq!((spec.dtype, spec.shape), (DataType::Fp32, vec![-1, 64]));
        assert_eq!(tensor_spec("x", "INT64", &[-3]).unwrap().shape, vec![-1]);
        let message = tensor_spec("x", "FLOAT", &[1]).unwrap_err();
        assert!(message.contains("`FLOAT`"), "{message}");
    }

    #[test]
    fn metadata_without_tensors_is_refused_with_a_hint() {
        let empty = Metadata {
            platform: "mlserver".into(),
            spec: ModelSpec {
                inputs: vec![],
                outputs: vec![],
            },
        };
        assert!(check(empty).unwrap_err().contains("model-settings.json"));
    }
}
