//! One upstream URL of a model: its transport, breaker, health and in-flight count, and the
//! metrics that go with them. Every attempt goes through `attempt`, so the bookkeeping (breaker
//! outcome, latency, errors by kind) happens in one place.

use super::breaker::{Breaker, State, Ticket};
use super::error::UpstreamError;
use super::transport::Transport;
use super::Call;
use crate::config::UpstreamUrl;
use crate::telemetry;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

pub struct Endpoint {
    pub url: UpstreamUrl,
    pub transport: Transport,
    breaker: Mutex<Breaker>,
    outstanding: AtomicUsize,
    healthy: AtomicBool,
    labels: [(&'static str, String); 2],
    breaker_gauge: metrics::Gauge,
    healthy_gauge: metrics::Gauge,
    outstanding_gauge: metrics::Gauge,
    duration: metrics::Histogram,
    retries: metrics::Counter,
}

impl Endpoint {
    pub fn new(model: &str, url: UpstreamUrl, transport: Transport, breaker: Breaker) -> Endpoint {
        let labels = [
            ("model", model.to_string()),
            ("upstream", url.label.clone()),
        ];
        let endpoint = Endpoint {
            breaker_gauge: metrics::gauge!(telemetry::UPSTREAM_BREAKER_STATE, &labels),
            healthy_gauge: metrics::gauge!(telemetry::UPSTREAM_HEALTHY, &labels),
            outstanding_gauge: metrics::gauge!(telemetry::UPSTREAM_OUTSTANDING, &labels),
            duration: metrics::histogram!(telemetry::UPSTREAM_DURATION, &labels),
            retries: metrics::counter!(telemetry::UPSTREAM_RETRIES, &labels),
            url,
            transport,
            breaker: Mutex::new(breaker),
            outstanding: AtomicUsize::new(0),
            // Start-up only proceeds once an upstream answered; the first health check follows
            // at once and corrects this for the others.
            healthy: AtomicBool::new(true),
            labels,
        };
        endpoint.breaker_gauge.set(State::Closed.gauge());
        endpoint.healthy_gauge.set(1.0);
        endpoint
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records a health check; returns true when the endpoint's health changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy_gauge.set(if healthy { 1.0 } else { 0.0 });
        self.healthy.swap(healthy, Ordering::AcqRel) != healthy
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// The breaker's state now, also refreshing its gauge (open turns half-open by time alone).
    pub fn breaker_state(&self) -> State {
        let state = self.breaker().state(Instant::now());
        self.breaker_gauge.set(state.gauge());
        state
    }

    /// Whether an attempt could go here now: healthy, and the breaker admits it.
    pub fn available(&self) -> bool {
        self.is_healthy() && self.breaker().admits(Instant::now())
    }

    pub fn try_acquire(&self) -> Option<Ticket> {
        self.breaker().try_acquire(Instant::now())
    }

    pub fn count_retry(&self) {
        self.retries.increment(1);
    }

    /// Sends one attempt with a ticket from `try_acquire`, within the call's timeout.
    pub async fn attempt(
        &self,
        ticket: Ticket,
        call: &Call<'_>,
    ) -> Result<Vec<Tensor>, UpstreamError> {
        let _in_flight = InFlight::enter(self);
        let started = Instant::now();
        let result = match tokio::time::timeout(call.timeout, self.transport.infer(call)).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout(call.timeout)),
        };
        self.duration.record(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "success",
            Err(error) => {
                metrics::counter!(
                    telemetry::UPSTREAM_ERRORS,
                    &self.labels_with("kind", error.kind())
                )
                .increment(1);
                error.kind()
            }
        };
        metrics::counter!(
            telemetry::UPSTREAM_REQUESTS,
            &self.labels_with("outcome", outcome)
        )
        .increment(1);
        let healthy_answer = result.as_ref().err().is_none_or(|e| !e.is_outage());
        let changed = self
            .breaker()
            .record(ticket, healthy_answer, Instant::now());
        if let Some(state) = changed {
            self.breaker_gauge.set(state.gauge());
            match state {
                State::Open => {
                    tracing::warn!(upstream = %self.url.label, model = %self.labels[0].1,
                    "upstream circuit opened; refusing requests to it until the cooldown ends")
                }
                _ => tracing::info!(upstream = %self.url.label, model = %self.labels[0].1,
                    state = state.as_str(), "upstream circuit changed"),
            }
        }
        result
    }

    fn labels_with(&self, key: &'static str, value: &'static str) -> [(&'static str, String); 3] {
        [
            self.labels[0].clone(),
            self.labels[1].clone(),
            (key, value.to_string()),
        ]
    }

    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        // The breaker holds plain counters; a panic elsewhere cannot leave it inconsistent.
        self.breaker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counts an attempt as outstanding for exactly as long as it runs, even if it is cancelled.
struct InFlight<'a>(&'a Endpoint);

impl<'a> InFlight<'a> {
    fn enter(endpoint: &'a Endpoint) -> InFlight<'a> {
        let now = endpoint.outstanding.fetch_add(1, Ordering::AcqRel) + 1;
        endpoint.outstanding_gauge.set(now as f64);
        InFlight(endpoint)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let now = self.0.outstanding.fetch_sub(1, Ordering::AcqRel) - 1;
        self.0.outstanding_gauge.set(now as f64);
    }
}
