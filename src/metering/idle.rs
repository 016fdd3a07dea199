//! Idle device time: each model instance's wall time since start minus its busy time. Written
//! to the ledger as `__idle__` cost of the model (never of a tenant), so that per-request costs
//! plus idle cost add up to every instance's whole time at the device's price.

use super::record::{self, UsageRecord, IDLE_TENANT};
use crate::backend::presence::Presence;
use crate::telemetry;
use smol_str::SmolStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
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
    /// Time its session was unloaded, which is neither busy nor idle.
    pub presence: Arc<Presence>,
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

    /// The instances served after a reload: one still served (the same busy counter) keeps
    /// what was recorded of it; a new one counts idle time from now on only; one no longer
    /// served is dropped. Tick first, so the dropped ones' last idle time is billed.
    pub fn replace(&mut self, instances: Vec<MeteredInstance>, now: Instant) {
        let wall_us = now.saturating_duration_since(self.started).as_micros() as u64;
        let mut old = std::mem::take(&mut self.instances);
        self.instances = instances
            .into_iter()
            .map(|metered| {
                let kept = old
                    .iter()
                    .position(|i| Arc::ptr_eq(&i.metered.busy_us, &metered.busy_us));
                let recorded_idle_us = match kept {
                    Some(at) => old.swap_remove(at).recorded_idle_us,
                    None => wall_us.saturating_sub(metered.busy_us.load(Ordering::Acquire)),
                };
                Instance {
                    metered,
                    recorded_idle_us,
                }
            })
            .collect();
    }

    /// Idle time accrued since the last tick, one record per instance that had any.
    pub fn tick(&mut self, now: Instant, now_ms: i64) -> Vec<UsageRecord> {
        let wall = now.saturating_duration_since(self.started);
        let mut records = Vec::new();
        for Instance {
            metered: instance,
            recorded_idle_us,
        } in &mut self.instances
        {
            // Cumulative, so a batch that straddles a tick is settled at the next one. Wall
            // and unloaded time advance together while unloaded: subtracted before rounding
            // to microseconds, no rounding of either can show up as idle time.
            let busy = Duration::from_micros(instance.busy_us.load(Ordering::Acquire));
            let idle_total = wall
                .saturating_sub(busy)
                .saturating_sub(instance.presence.away(now))
                .as_micros() as u64;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn instance(model: &str, busy_us: &Arc<AtomicU64>) -> MeteredInstance {
        MeteredInstance {
            model: model.into(),
            version: "1".into(),
            device: "cpu".into(),
            index: 0,
            price_per_hour: 3.6,
            busy_us: busy_us.clone(),
            presence: Arc::default(),
        }
    }

    /// (model, idle µs) of each record of a tick.
    fn idle(meter: &mut IdleMeter) -> Vec<(String, u64)> {
        let mut got: Vec<_> = meter
            .tick(Instant::now(), 0)
            .into_iter()
            .map(|r| (r.model.to_string(), r.compute_us))
            .collect();
        got.sort();
        got
    }

    /// Ticks that fall between microseconds while the session is away: the wall clock and the
    /// unloaded time are rounded apart in no way that bills a microsecond of idle time.
    #[tokio::test(start_paused = true)]
    async fn ticks_between_microseconds_bill_nothing_while_unloaded() {
        let busy = Arc::new(AtomicU64::new(0));
        let metered = instance("a", &busy);
        let presence = metered.presence.clone();
        let mut meter = IdleMeter::new(vec![metered], Instant::now());
        tokio::time::advance(Duration::from_nanos(1_500)).await;
        presence.leave(Instant::now());
        assert_eq!(idle(&mut meter), [("a".into(), 1)]);
        for step_ns in [700, 700, 300, 900, 999, 1] {
            tokio::time::advance(Duration::from_nanos(step_ns)).await;
            assert_eq!(idle(&mut meter), [], "after {step_ns} ns more, unloaded");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_served_instances_starts_new_ones_from_now_and_drops_removed_ones() {
        let (a, b, c): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) = Default::default();
        let mut meter = IdleMeter::new(vec![instance("a", &a), instance("b", &b)], Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        a.store(4_000_000, Ordering::Release);
        assert_eq!(
            idle(&mut meter),
            [("a".into(), 6_000_000), ("b".into(), 10_000_000)]
        );
        // `c` arrives 10 s after start, busy 1 s of its own already; `b` goes.
        c.store(1_000_000, Ordering::Release);
        meter.replace(vec![instance("a", &a), instance("c", &c)], Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            idle(&mut meter),
            [("a".into(), 5_000_000), ("c".into(), 5_000_000)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unloaded_instance_accrues_no_idle_time() {
        let busy = Arc::new(AtomicU64::new(0));
        let metered = instance("a", &busy);
        let presence = metered.presence.clone();
        let mut meter = IdleMeter::new(vec![metered], Instant::now());
        let step = |s| tokio::time::advance(Duration::from_secs(s));
        step(1).await;
        assert_eq!(idle(&mut meter), [("a".into(), 1_000_000)]);
        presence.leave(Instant::now());
        step(2).await;
        assert_eq!(idle(&mut meter), [], "nothing while unloaded");
        step(1).await;
        presence.arrive(Instant::now());
        step(1).await;
        assert_eq!(
            idle(&mut meter),
            [("a".into(), 1_000_000)],
            "only the second since loading"
        );
    }
}
