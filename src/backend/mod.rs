//! Engines that execute a batch: the ONNX Runtime engine for local models, which computes on
//! the thread that calls it (each instance owns a thread and its engine, so `run` may take
//! `&mut self`), and the remote engine for models served by an upstream KServe V2 server,
//! which only waits on the network (its instances are tasks, and hold no thread).

pub mod onnx;
pub mod presence;
pub mod remote;
pub mod runtime;

use crate::error::ErrorClass;
use crate::tensor::{DataType, Tensor};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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

/// Something that runs whole batches on the calling thread. Implemented by the ONNX Runtime
/// engine and, in tests, by fakes that compute a known function of their input.
pub trait Engine: Send + 'static {
    fn run(&mut self, inputs: &[BatchInput]) -> Result<Vec<Tensor>, BackendError>;

    /// The execution provider that actually runs the model, for metadata and logs.
    fn provider(&self) -> &str;

    /// Lets go of the loaded session (device memory), if the engine can load it again by itself
    /// on its next run; true if it did.
    fn unload(&mut self) -> bool {
        false
    }

    /// Loads the session now if it is not, so that no request waits for it (an instance
    /// started to follow the load).
    fn load(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Whether the session is loaded (a run that finds it unloaded loads it first).
    fn is_loaded(&self) -> bool {
        true
    }

    /// How long the last run spent loading the session again, once: that time is not the
    /// batch's computation.
    fn take_load_time(&mut self) -> Option<std::time::Duration> {
        None
    }
}

/// What an `AsyncEngine` returns.
pub type EngineFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Tensor>, BackendError>> + Send + 'a>>;

/// Something that runs whole batches by waiting on something else (an upstream server). One
/// engine serves all of a model's instances at once.
pub trait AsyncEngine: Send + Sync + 'static {
    fn run<'a>(&'a self, inputs: &'a [BatchInput]) -> EngineFuture<'a>;

    fn provider(&self) -> &str;
}

/// A model's engines, as its batcher runs them.
pub enum Engines {
    /// One engine per instance, each on a thread of its own.
    Threads(Vec<Box<dyn Engine>>),
    /// One engine shared by `instances` tasks, each with one batch in flight at most.
    Tasks {
        engine: Arc<dyn AsyncEngine>,
        instances: usize,
    },
}

impl Engines {
    pub fn len(&self) -> usize {
        match self {
            Engines::Threads(engines) => engines.len(),
            Engines::Tasks { instances, .. } => *instances,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
