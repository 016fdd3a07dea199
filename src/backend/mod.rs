//! Engines that execute a batch: the ONNX Runtime engine for local models and the remote engine
//! for models served by an upstream KServe V2 server. An engine is owned by one worker thread
//! and never shared, which is why `run` may take `&mut self`.

pub mod onnx;
pub mod remote;
pub mod runtime;

use crate::error::ErrorClass;
use crate::tensor::{DataType, Tensor};
use bytes::Bytes;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    RuntimeMissing(String),
    #[error("cannot load model {model}: {reason}")]
    Load { model: String, reason: String },
    #[error("execution provider for {device} failed to register: {reason}")]
    Provider { device: String, reason: String },
    #[error("model execution failed: {0}")]
    Execution(String),
    #[error("model {model} has {what}, which Tollgate cannot serve yet")]
    Unsupported { model: String, what: String },
    /// An upstream model server failed or refused; `class` says how the caller should see it
    /// (its 4xx stay 4xx, its outages become 503 or 504) and `message` carries its own words.
    #[error("{message}")]
    Upstream { class: ErrorClass, message: String },
}

impl BackendError {
    pub fn class(&self) -> ErrorClass {
        match self {
            BackendError::Upstream { class, .. } => *class,
            _ => ErrorClass::Internal,
        }
    }
}

/// One input of a batch: the members' tensors, kept as separate parts so the engine copies each
/// byte exactly once, straight into the runtime's own buffer.
#[derive(Debug, Clone)]
pub struct BatchInput {
    pub name: String,
    pub dtype: DataType,
    /// The batch's shape: the first dimension is the sum of the members' rows when batching.
    pub shape: Vec<usize>,
    pub parts: Vec<Bytes>,
}

impl BatchInput {
    /// The parts as one buffer; engines that need contiguous memory of their own use this.
    pub fn concatenated(&self) -> Vec<u8> {
        let total = self.parts.iter().map(Bytes::len).sum();
        let mut buffer = Vec::with_capacity(total);
        for part in &self.parts {
            buffer.extend_from_slice(part);
        }
        buffer
    }
}

/// Something that runs whole batches. Implemented by the ONNX Runtime engine and, in tests, by
/// fakes that compute a known function of their input.
pub trait Engine: Send + 'static {
    fn run(&mut self, inputs: &[BatchInput]) -> Result<Vec<Tensor>, BackendError>;

    /// The execution provider that actually runs the model, for metadata and logs.
    fn provider(&self) -> &str;
}
