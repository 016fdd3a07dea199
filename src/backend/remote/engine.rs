//! The remote engine: what an instance thread runs for an upstream model. The thread hands the
//! batch to the tokio runtime as a task and waits for its answer, so the network I/O is driven
//! by the runtime (pooled connections live there) and the thread only stands for "one upstream
//! request in flight".

use super::Upstream;
use crate::backend::{BackendError, BatchInput, Engine};
use crate::error::ErrorClass;
use crate::tensor::Tensor;
use std::sync::Arc;
use tokio::runtime::Handle;
use tracing::Instrument;

pub struct RemoteEngine {
    upstream: Arc<Upstream>,
    runtime: Handle,
}

impl RemoteEngine {
    pub fn new(upstream: Arc<Upstream>, runtime: Handle) -> RemoteEngine {
        RemoteEngine { upstream, runtime }
    }
}

impl Engine for RemoteEngine {
    fn run(&mut self, inputs: &[BatchInput]) -> Result<Vec<Tensor>, BackendError> {
        let upstream = self.upstream.clone();
        // Cheap: the parts are shared `Bytes`.
        let inputs = inputs.to_vec();
        let (reply, answer) = tokio::sync::oneshot::channel();
        // A spawned task rather than `Handle::block_on`: it runs to completion even if this
        // thread stopped waiting, so a breaker's probe always reports back.
        self.runtime.spawn(
            async move {
                let _ = reply.send(upstream.infer(&inputs).await);
            }
            .instrument(tracing::Span::current()),
        );
        // The task always answers within the upstream timeout; only a runtime that is shutting
        // down drops it unanswered.
        answer.blocking_recv().unwrap_or_else(|_| {
            Err(BackendError::Upstream {
                class: ErrorClass::Unavailable,
                message: "the gateway is shutting down".into(),
            })
        })
    }

    fn provider(&self) -> &str {
        "upstream"
    }
}
