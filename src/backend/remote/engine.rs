//! The remote engine: an upstream model's batches are requests to its servers, awaited on the
//! runtime that drives the pooled connections; no thread is held while one is in flight.

use super::Upstream;
use crate::backend::{AsyncEngine, BatchInput, EngineFuture};
use std::sync::Arc;

pub struct RemoteEngine {
    upstream: Arc<Upstream>,
}

impl RemoteEngine {
    pub fn new(upstream: Arc<Upstream>) -> RemoteEngine {
        RemoteEngine { upstream }
    }
}

impl AsyncEngine for RemoteEngine {
    fn run<'a>(&'a self, inputs: &'a [BatchInput]) -> EngineFuture<'a> {
        Box::pin(self.upstream.infer(inputs))
    }

    fn provider(&self) -> &str {
        "upstream"
    }
}
