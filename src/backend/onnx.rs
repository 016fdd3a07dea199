//! The ONNX Runtime engine: one `Session` per model instance, owned by that instance's thread.
//! This is the only module with `unsafe`: inputs are copied straight into ONNX Runtime's own
//! buffers and outputs read as bytes, so every datatype goes through one untyped path.
#![allow(unsafe_code)]

use super::{BackendError, BatchInput, Engine};
use crate::config::{Device, RuntimeLibrary};
use crate::spec::{ModelSpec, TensorSpec};
use crate::tensor::{strings, DataType, Tensor};
use bytes::Bytes;
use ort::ep;
use ort::memory::Allocator;
use ort::session::Session;
use ort::value::{DynTensor, DynTensorValueType, TensorElementType, ValueType};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What one engine instance is built from; validated config, never raw user input.
#[derive(Debug, Clone)]
pub struct OnnxSettings {
    pub model: String,
    pub path: PathBuf,
    pub device: Device,
    pub cpu_fallback: bool,
    pub intra_op_threads: usize,
    /// Whether the intra-op pool busy-waits between runs (ONNX Runtime's default is yes).
    pub intra_op_spinning: bool,
    /// `runtime.onnxruntime`, used if the process-wide environment is not started yet.
    pub runtime: RuntimeLibrary,
}

pub struct OnnxEngine {
    /// `None` after an idle unload; the next run opens it again from `settings`.
    session: Option<Session>,
    provider: &'static str,
    settings: OnnxSettings,
    load_time: Option<Duration>,
}

const CPU_PROVIDER: &str = "CPUExecutionProvider";
const CUDA_PROVIDER: &str = "CUDAExecutionProvider";

impl OnnxEngine {
    pub fn load(settings: &OnnxSettings) -> Result<OnnxEngine, BackendError> {
        let (session, provider) = open(settings)?;
        Ok(OnnxEngine {
            session: Some(session),
            provider,
            settings: settings.clone(),
            load_time: None,
        })
    }

    /// An engine whose session is opened only when it is first needed: an instance beyond
    /// `instances` that starts when the load calls for it. Until then it names the provider
    /// its device asks for.
    pub fn deferred(settings: &OnnxSettings) -> OnnxEngine {
        OnnxEngine {
            session: None,
            provider: match settings.device {
                Device::Cpu => CPU_PROVIDER,
                Device::Cuda(_) => CUDA_PROVIDER,
            },
            settings: settings.clone(),
            load_time: None,
        }
    }

    /// Inputs and outputs as the model file declares them.
    pub fn spec(&self, model: &str) -> Result<ModelSpec, BackendError> {
        let describe = |outlets: &[ort::value::Outlet]| -> Result<Vec<TensorSpec>, BackendError> {
            outlets
                .iter()
                .map(|outlet| match outlet.dtype() {
                    ValueType::Tensor { ty, shape, .. } => {
                        let dtype =
                            from_element_type(*ty).ok_or_else(|| BackendError::Unsupported {
                                model: model.to_string(),
                                what: format!("tensor `{}` of element type {ty:?}", outlet.name()),
                            })?;
                        Ok(TensorSpec {
                            name: outlet.name().to_string(),
                            dtype,
                            shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
                        })
                    }
                    other => Err(BackendError::Unsupported {
                        model: model.to_string(),
                        what: format!("non-tensor value `{}` ({other:?})", outlet.name()),
                    }),
                })
                .collect()
        };
        let session = self.session.as_ref().ok_or_else(|| BackendError::Load {
            model: model.to_string(),
            reason: "its session is unloaded".into(),
        })?;
        Ok(ModelSpec {
            inputs: describe(session.inputs())?,
            outputs: describe(session.outputs())?,
        })
    }
}

/// Opens a session on the configured device (or the CPU, where a fallback is allowed).
fn open(settings: &OnnxSettings) -> Result<(Session, &'static str), BackendError> {
    let environment = super::runtime::environment(&settings.runtime)?;
    let load_error = |reason: String| BackendError::Load {
        model: settings.model.clone(),
        reason,
    };
    let build = |device: Device| -> Result<Session, BackendError> {
        let mut builder = Session::builder(environment)
            .map_err(|e| load_error(e.to_string()))?
            .with_intra_threads(settings.intra_op_threads)
            .map_err(|e| load_error(e.to_string()))?
            .with_intra_op_spinning(settings.intra_op_spinning)
            .map_err(|e| load_error(e.to_string()))?;
        if let Device::Cuda(index) = device {
            builder = builder
                .with_execution_providers([ep::CUDA::default()
                    .with_device_id(index)
                    .build()
                    .error_on_failure()])
                .map_err(|e| BackendError::Provider {
                    device: device.to_string(),
                    reason: e.to_string(),
                })?;
        }
        builder
            .commit_from_file(&settings.path)
            .map_err(|e| load_error(e.to_string()))
    };
    match settings.device {
        Device::Cpu => Ok((build(Device::Cpu)?, CPU_PROVIDER)),
        Device::Cuda(_) => match build(settings.device) {
            Ok(session) => Ok((session, CUDA_PROVIDER)),
            Err(error @ BackendError::Provider { .. }) if settings.cpu_fallback => {
                tracing::warn!(model = %settings.model, %error, "falling back to the CPU as device_fallback = \"cpu\" allows");
                Ok((build(Device::Cpu)?, CPU_PROVIDER))
            }
            Err(error) => Err(error),
        },
    }
}

impl Engine for OnnxEngine {
    fn run(&mut self, inputs: &[BatchInput]) -> Result<Vec<Tensor>, BackendError> {
        if self.session.is_none() {
            let started = Instant::now();
            self.load()?;
            self.load_time = Some(started.elapsed());
            tracing::info!(model = %self.settings.model, load_us = started.elapsed().as_micros() as u64,
                "session loaded again after an idle unload");
        }
        let Some(session) = self.session.as_mut() else {
            return Err(BackendError::Execution("the session is not loaded".into()));
        };
        let allocator = Allocator::default();
        let mut values: Vec<(String, DynTensor)> = Vec::with_capacity(inputs.len());
        for input in inputs {
            values.push((input.name.clone(), copy_in(&allocator, input)?));
        }
        let outputs = session
            .run(values)
            .map_err(|e| BackendError::Execution(e.to_string()))?;
        let mut tensors = Vec::with_capacity(outputs.len());
        for (name, value) in outputs {
            let tensor = value
                .downcast::<DynTensorValueType>()
                .map_err(|e| BackendError::Execution(format!("output `{name}`: {e}")))?;
            tensors.push(copy_out(name.to_string(), &tensor)?);
        }
        Ok(tensors)
    }

    fn provider(&self) -> &str {
        self.provider
    }

    fn unload(&mut self) -> bool {
        self.session.take().is_some()
    }

    fn load(&mut self) -> Result<(), BackendError> {
        if self.session.is_none() {
            let (session, provider) = open(&self.settings)?;
            self.session = Some(session);
            self.provider = provider;
        }
        Ok(())
    }

    fn is_loaded(&self) -> bool {
        self.session.is_some()
    }

    fn take_load_time(&mut self) -> Option<Duration> {
        self.load_time.take()
    }
}

fn copy_in(allocator: &Allocator, input: &BatchInput) -> Result<DynTensor, BackendError> {
    if input.dtype == DataType::Bytes {
        return strings_in(input);
    }
    let element_type = to_element_type(input.dtype);
    let shape: Vec<i64> = input.shape.iter().map(|&d| d as i64).collect();
    let mut tensor = DynTensor::new(allocator, element_type, shape)
        .map_err(|e| BackendError::Execution(format!("input `{}`: {e}", input.name)))?;
    let expected = Tensor::element_count(&input.shape)
        .and_then(|count| count.checked_mul(input.dtype.element_size()?));
    let supplied: usize = input.parts.iter().map(Bytes::len).sum();
    if expected != Some(supplied) {
        let needed = expected.map_or("more than fits in memory".to_string(), |b| b.to_string());
        return Err(BackendError::Execution(format!(
            "input `{}` has {supplied} bytes for a shape needing {needed}",
            input.name
        )));
    }
    let base = tensor.data_ptr_mut().cast::<u8>();
    let mut offset = 0;
    for part in &input.parts {
        // SAFETY: `base` points at ONNX Runtime's CPU buffer of exactly the bytes this shape and
        // datatype need, which the parts add up to (checked above), so every
        // write stays inside it; the source is a distinct Rust allocation.
        unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), base.add(offset), part.len()) };
        offset += part.len();
    }
    Ok(tensor)
}

/// A string tensor: ONNX Runtime copies each element into strings of its own, so there is no
/// buffer to write into (and `ort` takes only owned elements); the elements were checked as
/// UTF-8 without NUL at validation.
fn strings_in(input: &BatchInput) -> Result<DynTensor, BackendError> {
    let fail = |why: String| BackendError::Execution(format!("input `{}`: {why}", input.name));
    let mut elements = Vec::new();
    for part in &input.parts {
        for element in strings::elements(part) {
            let element = element.map_err(fail)?;
            let text = std::str::from_utf8(element).map_err(|e| fail(e.to_string()))?;
            elements.push(text.to_owned());
        }
    }
    let tensor = ort::value::Tensor::from_string_array((input.shape.clone(), &elements[..]))
        .map_err(|e| fail(e.to_string()))?;
    Ok(tensor.upcast())
}

fn strings_out(
    name: String,
    tensor: &ort::value::Value<DynTensorValueType>,
) -> Result<Tensor, BackendError> {
    let (shape, elements) = tensor
        .try_extract_strings()
        .map_err(|e| BackendError::Execution(format!("output `{name}`: {e}")))?;
    let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let data = strings::encode(elements.iter().map(|e| e.as_bytes()))
        .map_err(|why| BackendError::Execution(format!("output `{name}`: {why}")))?;
    Ok(Tensor {
        name,
        dtype: DataType::Bytes,
        shape,
        data: data.into(),
    })
}

fn copy_out(
    name: String,
    tensor: &ort::value::Value<DynTensorValueType>,
) -> Result<Tensor, BackendError> {
    if *tensor.data_type() == TensorElementType::String {
        return strings_out(name, tensor);
    }
    let dtype = from_element_type(*tensor.data_type()).ok_or_else(|| {
        BackendError::Execution(format!(
            "output `{name}` has element type {:?}, which Tollgate cannot return yet",
            tensor.data_type()
        ))
    })?;
    let shape: Vec<usize> = tensor.shape().iter().map(|&d| d.max(0) as usize).collect();
    let len = Tensor::element_count(&shape).unwrap_or(0) * dtype.element_size().unwrap_or(0);
    let data = if len == 0 {
        Bytes::new()
    } else {
        // SAFETY: outputs of a CPU session live in CPU memory that the value owns for as long as
        // `tensor` is borrowed; its length follows from its own shape and element type.
        let slice = unsafe { std::slice::from_raw_parts(tensor.data_ptr().cast::<u8>(), len) };
        Bytes::copy_from_slice(slice)
    };
    Ok(Tensor {
        name,
        dtype,
        shape,
        data,
    })
}

fn to_element_type(dtype: DataType) -> TensorElementType {
    match dtype {
        DataType::Bool => TensorElementType::Bool,
        DataType::Uint8 => TensorElementType::Uint8,
        DataType::Uint16 => TensorElementType::Uint16,
        DataType::Uint32 => TensorElementType::Uint32,
        DataType::Uint64 => TensorElementType::Uint64,
        DataType::Int8 => TensorElementType::Int8,
        DataType::Int16 => TensorElementType::Int16,
        DataType::Int32 => TensorElementType::Int32,
        DataType::Int64 => TensorElementType::Int64,
        DataType::Fp16 => TensorElementType::Float16,
        DataType::Bf16 => TensorElementType::Bfloat16,
        DataType::Fp32 => TensorElementType::Float32,
        DataType::Fp64 => TensorElementType::Float64,
        DataType::Bytes => TensorElementType::String,
    }
}

fn from_element_type(ty: TensorElementType) -> Option<DataType> {
    DataType::ALL
        .into_iter()
        .find(|&d| to_element_type(d) == ty)
}
