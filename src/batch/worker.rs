//! A model instance: a dedicated OS thread that owns one engine and runs whole batches, so the
//! runtime's blocking calls never touch the async executor.

use super::actor::Batch;
use super::{split, BatchError, BatcherSettings, JobOutput};
use crate::backend::Engine;
use crate::telemetry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Utilisation is reported over windows of this length.
const UTILISATION_WINDOW: Duration = Duration::from_secs(10);

pub(crate) fn spawn(
    settings: Arc<BatcherSettings>,
    instance: usize,
    mut engine: Box<dyn Engine>,
    batches: Arc<Mutex<mpsc::Receiver<Batch>>>,
    busy_us: Arc<AtomicU64>,
) {
    let name = format!("{}-{instance}", settings.model);
    let spawned = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let mut meter = BusyMeter::new(&settings.model, instance, busy_us);
            let series = BatchSeries::new(&settings.model);
            loop {
                // Whoever holds the lock waits for the next batch; the others wait for the lock.
                let next = match batches.lock() {
                    Ok(mut receiver) => receiver.blocking_recv(),
                    Err(_) => None,
                };
                let Some(batch) = next else { break };
                run_batch(&settings, engine.as_mut(), batch, &mut meter, &series);
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, thread = %name, "cannot start a model instance thread");
    }
}

fn run_batch(
    settings: &BatcherSettings,
    engine: &mut dyn Engine,
    batch: Batch,
    meter: &mut BusyMeter,
    series: &BatchSeries,
) {
    // Callers who left while the batch waited for this worker cost no device time.
    let members: Vec<_> = batch
        .members
        .into_iter()
        .filter(|m| !m.reply.is_closed())
        .collect();
    if members.is_empty() {
        return;
    }
    let started = Instant::now();
    let inputs: Vec<&[crate::tensor::Tensor]> =
        members.iter().map(|m| m.job.inputs.as_slice()).collect();
    let rows: Vec<usize> = members.iter().map(|m| m.job.rows).collect();
    let batch_rows: usize = rows.iter().sum();
    let batch_inputs = split::gather(&inputs);
    let compute_started = StdInstant::now();
    let result = {
        let _span = members[0].span.enter();
        engine.run(&batch_inputs)
    };
    let compute = compute_started.elapsed();
    meter.record(compute);
    series.executions.increment(1);
    series.rows.increment(batch_rows as u64);
    series.batch_size.record(batch_rows as f64);
    series.compute.record(compute.as_secs_f64());
    let compute_us = compute.as_micros() as u64;
    let outcome = result
        .map_err(BatchError::from)
        .and_then(|outputs| split::scatter(&outputs, &rows).map_err(BatchError::from));
    match outcome {
        Ok(per_member) => {
            for (member, outputs) in members.into_iter().zip(per_member) {
                let queue = started.duration_since(member.enqueued);
                series.queue.record(queue.as_secs_f64());
                let _ = member.reply.send(Ok(JobOutput {
                    outputs,
                    batch_rows,
                    queue_us: queue.as_micros() as u64,
                    compute_us,
                }));
            }
        }
        Err(error) => {
            tracing::warn!(model = %settings.model, %error, "batch failed");
            for member in members {
                let _ = member.reply.send(Err(error.clone()));
            }
        }
    }
}

/// The per-batch series of one model, registered once per instance thread.
struct BatchSeries {
    executions: metrics::Counter,
    rows: metrics::Counter,
    batch_size: metrics::Histogram,
    compute: metrics::Histogram,
    queue: metrics::Histogram,
}

impl BatchSeries {
    fn new(model: &str) -> BatchSeries {
        let label = || [("model", model.to_string())];
        BatchSeries {
            executions: metrics::counter!(telemetry::EXECUTIONS, &label()),
            rows: metrics::counter!(telemetry::INFERENCE_ROWS, &label()),
            batch_size: metrics::histogram!(telemetry::BATCH_SIZE, &label()),
            compute: metrics::histogram!(telemetry::COMPUTE_DURATION, &label()),
            queue: metrics::histogram!(telemetry::QUEUE_DURATION, &label()),
        }
    }
}

/// Device busy time of one instance: a counter of busy seconds and a utilisation gauge.
struct BusyMeter {
    busy_total: metrics::Counter,
    /// The same total, readable by the idle meter.
    busy_us: Arc<AtomicU64>,
    utilisation: metrics::Gauge,
    window_start: StdInstant,
    window_busy: Duration,
}

impl BusyMeter {
    fn new(model: &str, instance: usize, busy_us: Arc<AtomicU64>) -> BusyMeter {
        let labels = [
            ("model", model.to_string()),
            ("instance", instance.to_string()),
        ];
        BusyMeter {
            busy_total: metrics::counter!(telemetry::DEVICE_BUSY, &labels),
            busy_us,
            utilisation: metrics::gauge!(telemetry::DEVICE_UTILISATION, &labels),
            window_start: StdInstant::now(),
            window_busy: Duration::ZERO,
        }
    }

    fn record(&mut self, busy: Duration) {
        // The counter is kept in whole microseconds so rates stay exact when summed.
        let micros = busy.as_micros() as u64;
        self.busy_total.increment(micros);
        self.busy_us.fetch_add(micros, Ordering::AcqRel);
        self.window_busy += busy;
        let elapsed = self.window_start.elapsed();
        if elapsed >= UTILISATION_WINDOW {
            self.utilisation
                .set((self.window_busy.as_secs_f64() / elapsed.as_secs_f64()).min(1.0));
            self.window_start = StdInstant::now();
            self.window_busy = Duration::ZERO;
        }
    }
}
