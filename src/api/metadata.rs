//! Server and model metadata in the protocol's terms, built once for both front ends.

use crate::model::Model;
use crate::spec::TensorSpec;

pub const SERVER_NAME: &str = "tollgate";
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// What `/v2` advertises: the binary tensor extension, the schedule-policy parameters and
/// Triton's statistics.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "schedule_policy", "statistics"];
pub const PLATFORM: &str = "onnxruntime_onnx";

pub struct TensorMetadata<'a> {
    pub name: &'a str,
    pub datatype: &'static str,
    pub shape: &'a [i64],
}

pub fn inputs(model: &Model) -> Vec<TensorMetadata<'_>> {
    describe(&model.spec.inputs)
}

pub fn outputs(model: &Model) -> Vec<TensorMetadata<'_>> {
    describe(&model.spec.outputs)
}

fn describe(specs: &[TensorSpec]) -> Vec<TensorMetadata<'_>> {
    specs
        .iter()
        .map(|t| TensorMetadata {
            name: &t.name,
            datatype: t.dtype.as_str(),
            shape: &t.shape,
        })
        .collect()
}
