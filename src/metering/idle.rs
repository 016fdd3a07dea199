//! Idle device time: each model instance's wall time since start minus its busy time. Written
//! to the ledger as `__idle__` cost of the model (never of a tenant), so that per-request costs
//! plus idle cost add up to every instance's whole time at the device's price.

use super::record::{self, UsageRecord, IDLE_TENANT};
use crate::telemetry;
use smol_str::SmolStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

/// One model instance whose idle time is billed: what the gateway tells metering of it.
pub struct MeteredInstance {
    pub model: SmolStr,
    pub version: SmolStr,
    pub device: SmolStr,
    pub index: usize,
    pub price_per_hour: f64,
    /// The instance's busy time so far, which its worker keeps.
    pub busy_us: Arc<AtomicU64>,
}

struct Instance {
    metered: MeteredInstance,
    recorded_idle_us: u64,
}

pub struct IdleMeter {
    started: Instant,
    instances: Vec<Instance>,
}

impl IdleMeter {
    pub fn new(instances: Vec<MeteredInstance>, started: Instant) -> IdleMeter {
        let instances = instances
            .into_iter()
            .map(|metered| Instance {
                metered,
                recorded_idle_us: 0,
            })
            .collect();
        IdleMeter { started, instances }
    }

    /// Idle time accrued since the last tick, one record per instance that had any.
    pub fn tick(&mut self, now: Instant, now_ms: i64) -> Vec<UsageRecord> {
        let wall_us = now.saturating_duration_since(self.started).as_micros() as u64;
        let mut records = Vec::new();
        for Instance {
            metered: instance,
            recorded_idle_us,
        } in &mut self.instances
        {
            // Cumulative, so a batch that straddles a tick is settled at the next one.
            let idle_total = wall_us.saturating_sub(instance.busy_us.load(Ordering::Acquire));
            let idle_us = idle_total.saturating_sub(*recorded_idle_us);
            if idle_us == 0 {
                continue;
            }
            *recorded_idle_us += idle_us;
            let cost = idle_us as f64 / 3_600_000_000.0 * instance.price_per_hour;
            metrics::gauge!(telemetry::DEVICE_IDLE, "model" => instance.model.to_string(), "instance" => instance.index.to_string())
                .increment(idle_us as f64 / 1e6);
            metrics::gauge!(telemetry::IDLE_COST, "model" => instance.model.to_string())
                .increment(cost);
            // Ends with the time, as request ids do, so `Ledger::usage` finds idle records too.
            let mut id = format!(
                "idle-{}-{}-{}",
                instance.model, instance.version, instance.index
            );
            record::push_id_time(&mut id, now_ms);
            records.push(UsageRecord {
                request_id: id.into(),
                time_ms: now_ms,
                tenant: IDLE_TENANT.into(),
                team: SmolStr::default(),
                project: SmolStr::default(),
                tags: Vec::new(),
                model: instance.model.clone(),
                version: instance.version.clone(),
                protocol: "internal".into(),
                cache: "none".into(),
                rows: 0,
                batch_size: 0,
                queue_us: 0,
                compute_us: idle_us,
                latency_us: 0,
                cost_usd: cost,
                saved_usd: 0.0,
                outcome: "idle".into(),
                device: instance.device.clone(),
                lane: SmolStr::default(),
            });
        }
        records
    }
}
