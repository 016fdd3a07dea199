//! The usage record of an accepted request, from admission to its outcome: whatever happens to
//! the request, including its caller going away, exactly one record reaches the ledger, and a
//! computation it started is billed to it even when it finishes after the caller left.

use super::Error;
use super::Reply;
use crate::cache::value::CachedValue;
use crate::metering::identity::Caller;
use crate::metering::meter::Metering;
use crate::metering::record::{self, UsageRecord};
use crate::model::Model;
use crate::request::{InferRequest, Protocol};
use crate::telemetry;
use smol_str::SmolStr;
use std::sync::{Arc, Mutex, PoisonError};

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
    /// Where a computation this request leads reports what it cost; `None` until one starts.
    tab: Option<Arc<Tab>>,
    /// A deferred job's row (`defer`).
    deferred: bool,
}

/// What a computation led by a request cost, kept for that request's record. A cache miss's
/// computation runs on in a task of its own when its caller leaves (other callers may wait for
/// it), so it can finish after the caller's record was made: the record then waits here and
/// is written, with the cost, when the computation ends, or without a cost if it never does.
pub(super) struct Tab {
    metering: Arc<Metering>,
    state: Mutex<TabState>,
}

#[derive(Default)]
struct TabState {
    /// Set once the computation has finished.
    computed: Option<Computed>,
    /// The record of a caller that left before the computation finished.
    waiting: Option<UsageRecord>,
}

#[derive(Clone, Copy)]
struct Computed {
    cost_usd: f64,
    compute_us: u64,
    queue_us: u64,
    rows: u32,
    batch_rows: u32,
}

impl Tab {
    /// Called by the computation when it ends with an answer.
    pub(super) fn computed(&self, value: &CachedValue) {
        let computed = Computed {
            cost_usd: value.cost_usd,
            compute_us: value.compute_us,
            queue_us: value.queue_us,
            rows: value.rows,
            batch_rows: value.batch_rows,
        };
        let waiting = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.computed = Some(computed);
            state.waiting.take()
        };
        if let Some(mut record) = waiting {
            charge(&mut record, computed);
            write(&self.metering, record);
        }
    }

    /// A left caller's record: written now with the cost if the computation has finished,
    /// else kept until it does.
    fn settle_cancelled(&self, mut record: UsageRecord) {
        let computed = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match state.computed {
                Some(computed) => computed,
                None => {
                    state.waiting = Some(record);
                    return;
                }
            }
        };
        charge(&mut record, computed);
        write(&self.metering, record);
    }
}

/// The computation was dropped without an answer (a failure, or shutdown): a record still
/// waiting is written as it is, so no record is ever lost.
impl Drop for Tab {
    fn drop(&mut self) {
        let waiting = self
            .state
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .waiting
            .take();
        if let Some(record) = waiting {
            write(&self.metering, record);
        }
    }
}

fn charge(record: &mut UsageRecord, computed: Computed) {
    record.cache = "miss".into();
    record.rows = computed.rows;
    record.batch_size = computed.batch_rows;
    record.queue_us = computed.queue_us;
    record.compute_us = computed.compute_us;
    record.cost_usd = computed.cost_usd;
}

/// A cancelled request's record: counted, accounted (its cost counts towards the budget) and
/// handed to the ledger.
fn write(metering: &Metering, record: UsageRecord) {
    metrics::counter!(telemetry::CANCELLED, "model" => record.model.to_string()).increment(1);
    metering.account(&record);
    metering.enqueue(record);
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
            lane: SmolStr::new_static(record::LANE_REALTIME),
        };
        UsageGuard {
            metering,
            record: Some(record),
            version: resolved.map(|t| t.version.clone()).unwrap_or_default(),
            tab: None,
            deferred: false,
        }
    }

    /// A deferred job's row: its record is handed to the job store, never written from here
    /// (a row whose request is dropped unfinished runs again, and is billed then).
    pub(super) fn defer(&mut self) {
        self.deferred = true;
        if let Some(record) = self.record.as_mut() {
            record.lane = SmolStr::new_static(record::LANE_DEFERRED);
        }
    }

    /// Another model than the one asked for answers (a `downgrade` budget's variant): the
    /// record names it, and so it is billed at that model's price.
    pub(super) fn served_by(&mut self, model: &Model) {
        if let Some(record) = self.record.as_mut() {
            record.model = model.text.name.clone();
            record.version = model.text.version.clone();
        }
        self.version = model.text.version.clone();
    }

    /// The request goes to the lowest priority lane; its record says so.
    pub(super) fn demote(&mut self) {
        if let Some(record) = self.record.as_mut() {
            record.lane = SmolStr::new_static(record::LANE_DEMOTED);
        }
    }

    /// The tab a computation led by this request reports its cost to.
    pub(super) fn tab(&mut self) -> Arc<Tab> {
        self.tab
            .get_or_insert_with(|| {
                Arc::new(Tab {
                    metering: self.metering.clone(),
                    state: Mutex::default(),
                })
            })
            .clone()
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
        if self.deferred {
            return;
        }
        if let Some(record) = self.record.take() {
            match &self.tab {
                Some(tab) => tab.settle_cancelled(record),
                None => write(&self.metering, record),
            }
        }
    }
}
