//! The usage record of an accepted request, from admission to its outcome: whatever happens to
//! the request, including its caller going away, exactly one record reaches the ledger.

use super::Error;
use super::Reply;
use crate::metering::identity::Caller;
use crate::metering::meter::Metering;
use crate::metering::record::UsageRecord;
use crate::model::Model;
use crate::request::{InferRequest, Protocol};
use crate::telemetry;
use smol_str::SmolStr;
use std::sync::Arc;

/// Holds the usage record of an accepted request until it completes. If the request future is
/// dropped first (the client went away), the record is still written, as `cancelled`.
///
/// The record's text is static or shared with the model and tenant wherever it can be (`Text`):
/// it is built for every request and dropped on the ledger's thread.
pub(super) struct UsageGuard {
    metering: Arc<Metering>,
    record: Option<UsageRecord>,
    /// The resolved model's version, for the record of a successful answer.
    version: SmolStr,
}

impl UsageGuard {
    /// Takes the caller's tags: the record is their last user.
    pub(super) fn new(
        metering: Arc<Metering>,
        caller: &mut Caller,
        request: &InferRequest,
        model: Option<&Arc<Model>>,
        protocol: Protocol,
        arrived_ms: i64,
        request_id: &str,
    ) -> UsageGuard {
        let resolved = model.map(|m| &m.text);
        // A resolved model's shared name equals the requested one (the registry matches names
        // exactly); only a name that resolved to nothing is copied.
        let model_name = match resolved {
            Some(text) => text.name.clone(),
            None => SmolStr::new(&request.model),
        };
        let version = match (request.version.as_deref(), resolved) {
            (None, _) => SmolStr::default(),
            (Some(asked), Some(text)) if text.version == asked => text.version.clone(),
            (Some(asked), _) => SmolStr::new(asked),
        };
        let record = UsageRecord {
            request_id: SmolStr::new(request_id),
            time_ms: arrived_ms,
            tenant: caller.tenant.name.clone(),
            team: caller.tenant.team.clone(),
            project: caller.tenant.project.clone(),
            tags: std::mem::take(&mut caller.tags),
            model: model_name,
            version,
            protocol: protocol.as_str().into(),
            cache: "none".into(),
            rows: 0,
            batch_size: 0,
            queue_us: 0,
            compute_us: 0,
            latency_us: 0,
            cost_usd: 0.0,
            saved_usd: 0.0,
            outcome: "cancelled".into(),
            device: SmolStr::default(),
        };
        UsageGuard {
            metering,
            record: Some(record),
            version: resolved.map(|t| t.version.clone()).unwrap_or_default(),
        }
    }

    pub(super) fn complete(
        mut self,
        outcome: &Result<Reply, Error>,
        latency_us: u64,
    ) -> UsageRecord {
        let Some(mut record) = self.record.take() else {
            // Only `complete` and `drop` take the record, and `complete` consumes the guard.
            return UsageRecord::default();
        };
        record.latency_us = latency_us;
        match outcome {
            Ok(Reply { response, .. }) => {
                let served = &response.served;
                record.version = if response.version == self.version {
                    self.version.clone()
                } else {
                    SmolStr::new(&response.version)
                };
                record.cache = served.cache.as_str().into();
                record.rows = served.rows as u32;
                record.batch_size = served.batch_rows as u32;
                record.queue_us = served.queue_us;
                record.compute_us = served.compute_us;
                record.cost_usd = served.cost_usd;
                record.saved_usd = served.saved_usd;
                record.outcome = "success".into();
                record.device = served.device.clone();
            }
            Err(error) => record.outcome = error.metric_label().into(),
        }
        record
    }
}

impl Drop for UsageGuard {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            metrics::counter!(telemetry::CANCELLED, "model" => record.model.to_string())
                .increment(1);
            self.metering.account(&record);
            self.metering.enqueue(record);
        }
    }
}
