//! Models served by upstream KServe V2 servers (Triton, KServe, MLServer, another Tollgate).
//! The upstream is just another engine: the batcher, cache, single flight and metering in front
//! of it are the ones local models use, and each instance thread hands its batch to the tokio
//! runtime and waits, so `instances` is the number of upstream requests in flight.
//!
//! This is the one backend that speaks the wire; it borrows the front ends' codecs so the
//! protocol is encoded in one place. Per model there is one `Upstream` with an `Endpoint` per
//! URL (pooled HTTP client or shared gRPC channel, breaker, health), chosen by least outstanding
//! requests; failures that cannot have run are retried within a budget.

mod balance;
mod breaker;
mod budget;
mod endpoint;
mod engine;
mod error;
mod grpc;
mod health;
mod http;
mod http_codec;
mod metadata;
mod startup;
pub mod tls;
mod transport;
pub mod url;

pub use crate::config::{UpstreamUrl, Wire};
pub use startup::{describe, describe_blocking, start, Description, Started};

use crate::backend::{BackendError, BatchInput};
use crate::spec::ModelSpec;
use crate::telemetry;
use crate::tensor::Tensor;
use balance::Candidate;
use breaker::State;
use budget::RetryBudget;
use endpoint::Endpoint;
use error::UpstreamError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tracing::Instrument;

/// The model (and version) requests are sent to on the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub model: String,
    pub version: Option<String>,
}

/// Everything needed to serve one model from upstreams, from validated config.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Our name for the model: metric labels and messages.
    pub model: String,
    pub target: Target,
    pub urls: Vec<UpstreamUrl>,
    /// REST only: the binary tensor extension, or plain JSON for servers without it.
    pub binary: bool,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Roots for `https://` and `grpcs://` endpoints: this CA bundle, or the system's.
    pub ca_path: Option<std::path::PathBuf>,
    /// Sent with every request to every endpoint.
    pub headers: crate::config::UpstreamHeaders,
    /// Extra attempts for a request that could not have reached an upstream.
    pub retries: u32,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub health_interval: Duration,
    /// How long start-up waits for the first upstream to describe the model.
    pub startup_wait: Duration,
}

/// One batch's request as sent to whichever endpoint is chosen.
pub struct Call<'a> {
    pub target: &'a Target,
    pub inputs: &'a [BatchInput],
    pub outputs: &'a [String],
    pub binary: bool,
    pub timeout: Duration,
}

/// The upstreams of one model, shared by its instances and its health watcher.
pub struct Upstream {
    model: String,
    target: Target,
    endpoints: Vec<Endpoint>,
    spec: ModelSpec,
    platform: String,
    /// The spec's outputs by name: every batch asks for all of them.
    outputs: Vec<String>,
    binary: bool,
    timeout: Duration,
    retries: u32,
    budget: RetryBudget,
    rotation: AtomicUsize,
    health_interval: Duration,
    /// Told when an upstream back from an outage describes the model otherwise.
    changed: tokio::sync::Notify,
}

impl Upstream {
    /// The spec the upstream reported at start-up, which requests are checked against.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn platform(&self) -> &str {
        &self.platform
    }

    /// Resolves once an upstream describes the model differently from `spec` (checked when an
    /// endpoint turns ready again); the model layer then serves the new description.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Ready while some endpoint passes its health check and its breaker is not open.
    pub fn is_ready(&self) -> bool {
        self.endpoints
            .iter()
            .any(|e| e.is_healthy() && e.breaker_state() != State::Open)
    }

    /// Runs one batch on the best endpoint, retrying elsewhere (or, with one endpoint, after a
    /// short pause) only when the attempt cannot have reached the upstream.
    pub async fn infer(&self, inputs: &[BatchInput]) -> Result<Vec<Tensor>, BackendError> {
        self.budget.deposit();
        let call = Call {
            target: &self.target,
            inputs,
            outputs: &self.outputs,
            binary: self.binary,
            timeout: self.timeout,
        };
        let mut tried = vec![false; self.endpoints.len()];
        let mut attempts = 0;
        let mut last_failure: Option<(usize, UpstreamError)> = None;
        loop {
            let Some((index, ticket)) = self.choose(&tried) else {
                // After a failed attempt (whose failure may have just opened the breaker), the
                // caller learns what actually went wrong rather than that nothing is left.
                return Err(match &last_failure {
                    Some((index, error)) => self.failure(&self.endpoints[*index], error),
                    None => self.refusal(),
                });
            };
            let endpoint = &self.endpoints[index];
            if tried[index] {
                tokio::time::sleep(budget::SAME_ENDPOINT_BACKOFF).await;
            }
            tried[index] = true;
            attempts += 1;
            let span = tracing::debug_span!("upstream", model = %self.model, upstream = %endpoint.url.label, attempt = attempts);
            let error = match endpoint.attempt(ticket, &call).instrument(span).await {
                Ok(outputs) => {
                    return self
                        .conform(outputs)
                        .map_err(|e| self.failure(endpoint, &e))
                }
                Err(error) => error,
            };
            if !error.retryable() || attempts > self.retries || !self.budget.withdraw() {
                return Err(self.failure(endpoint, &error));
            }
            endpoint.count_retry();
            tracing::debug!(model = %self.model, upstream = %endpoint.url.label, %error, "retrying");
            last_failure = Some((index, error));
        }
    }

    /// The best available endpoint whose breaker lets this attempt through.
    fn choose(&self, tried: &[bool]) -> Option<(usize, breaker::Ticket)> {
        let candidates: Vec<Candidate> = self
            .endpoints
            .iter()
            .zip(tried)
            .map(|(endpoint, &tried)| Candidate {
                available: endpoint.available(),
                tried,
                outstanding: endpoint.outstanding(),
            })
            .collect();
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        balance::preference(&candidates, rotation)
            .into_iter()
            .find_map(|index| Some((index, self.endpoints[index].try_acquire()?)))
    }

    /// Every spec output, in spec order and of the spec's datatype, or a protocol error.
    fn conform(&self, mut outputs: Vec<Tensor>) -> Result<Vec<Tensor>, UpstreamError> {
        let mut ordered = Vec::with_capacity(self.spec.outputs.len());
        for wanted in &self.spec.outputs {
            let at = outputs
                .iter()
                .position(|t| t.name == wanted.name)
                .ok_or_else(|| {
                    UpstreamError::Protocol(format!("the answer lacks output `{}`", wanted.name))
                })?;
            let tensor = outputs.swap_remove(at);
            if tensor.dtype != wanted.dtype {
                return Err(UpstreamError::Protocol(format!(
                    "output `{}` is {}, its metadata said {}",
                    wanted.name, tensor.dtype, wanted.dtype
                )));
            }
            ordered.push(tensor);
        }
        Ok(ordered)
    }

    fn failure(&self, endpoint: &Endpoint, error: &UpstreamError) -> BackendError {
        BackendError::Upstream {
            class: error.class(),
            message: format!(
                "upstream {} of model `{}` {error}",
                endpoint.url.label, self.model
            ),
        }
    }

    /// Nothing was sent: say why for each endpoint.
    fn refusal(&self) -> BackendError {
        let reasons: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| {
                let why = if !e.is_healthy() {
                    "not ready".to_string()
                } else {
                    format!("circuit {}", e.breaker_state().as_str())
                };
                format!("{} {why}", e.url.label)
            })
            .collect();
        let error = UpstreamError::Refused(format!(
            "model `{}`: no upstream can take requests now ({}); retry later",
            self.model,
            reasons.join(", ")
        ));
        metrics::counter!(telemetry::UPSTREAM_ERRORS,
            "model" => self.model.clone(), "upstream" => "none", "kind" => error.kind())
        .increment(1);
        BackendError::Upstream {
            class: error.class(),
            message: error.to_string(),
        }
    }
}

/// Datatype and shape of an output an upstream announced, checked the same way whichever
/// wire it came over.
pub(crate) fn output_layout(
    name: &str,
    datatype: &str,
    shape: &[i64],
) -> Result<(crate::tensor::DataType, Vec<usize>), String> {
    let dtype = crate::tensor::DataType::parse(datatype)
        .ok_or_else(|| format!("output `{name}` has unknown datatype `{datatype}`"))?;
    let shape = shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| format!("output `{name}` has negative dimension {d}"))
        })
        .collect::<Result<Vec<usize>, String>>()?;
    Ok((dtype, shape))
}
