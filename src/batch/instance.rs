//! A model instance: one engine and its busy-time meter behind a lock, which its worker thread
//! takes for each batch.

use super::{split, BatchError};
use crate::backend::Engine;
use crate::telemetry;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Utilisation is reported over windows of this length.
const UTILISATION_WINDOW: Duration = Duration::from_secs(10);

/// What the instances of one model share: its per-batch series.
pub(crate) struct ModelRuns {
    series: BatchSeries,
}

impl ModelRuns {
    pub(crate) fn new(model: &str) -> ModelRuns {
        ModelRuns {
            series: BatchSeries::new(model),
        }
    }
}

pub(crate) struct Instance {
    state: Mutex<State>,
    runs: Arc<ModelRuns>,
    /// Busy microseconds so far, readable by the idle meter without the lock.
    busy_us: Arc<AtomicU64>,
}

struct State {
    engine: Box<dyn Engine>,
    meter: BusyMeter,
}

/// An instance whose engine this thread holds until the value is dropped.
pub(crate) struct Claimed<'a> {
    instance: &'a Instance,
    state: MutexGuard<'a, State>,
}

impl Claimed<'_> {
    /// Runs one batch: members' inputs and rows in batch order.
    pub(crate) fn run(&mut self, inputs: &[&[Tensor]], rows: &[usize]) -> Result<Ran, BatchError> {
        let batch_rows: usize = rows.iter().sum();
        let batch_inputs = split::gather(inputs);
        let started = Instant::now();
        let result = self.state.engine.run(&batch_inputs);
        let compute = started.elapsed();
        self.state.meter.record(compute);
        let series = &self.instance.runs.series;
        series.executions.increment(1);
        series.rows.increment(batch_rows as u64);
        series.batch_size.record(batch_rows as f64);
        series.compute.record(compute.as_secs_f64());
        let outputs = result?;
        let per_member = split::scatter(outputs, rows)?;
        Ok(Ran {
            per_member,
            batch_rows,
            compute,
        })
    }

    /// The model's queue-wait histogram, to record into after the claim is released.
    pub(crate) fn queue_waits(&self) -> metrics::Histogram {
        self.instance.runs.series.queue.clone()
    }
}

/// One batch's answer: each member's outputs, with the batch's size and compute time.
pub(crate) struct Ran {
    pub per_member: Vec<Arc<[Tensor]>>,
    pub batch_rows: usize,
    pub compute: Duration,
}

impl Instance {
    pub(crate) fn new(
        model: &str,
        index: usize,
        engine: Box<dyn Engine>,
        runs: Arc<ModelRuns>,
    ) -> Instance {
        let busy_us = Arc::new(AtomicU64::new(0));
        Instance {
            state: Mutex::new(State {
                engine,
                meter: BusyMeter::new(model, index, busy_us.clone()),
            }),
            runs,
            busy_us,
        }
    }

    pub(crate) fn busy_us(&self) -> &Arc<AtomicU64> {
        &self.busy_us
    }

    /// Takes the engine, waiting while another thread runs a batch on it.
    pub(crate) fn claim(&self) -> Claimed<'_> {
        let state = match self.state.lock() {
            Ok(state) => state,
            // A panic inside an engine poisons its lock; the engine itself is still whole.
            Err(poisoned) => poisoned.into_inner(),
        };
        Claimed {
            instance: self,
            state,
        }
    }
}

/// The per-batch series of one model, registered once.
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
    busy_total: metrics::Gauge,
    /// The same total, readable by the idle meter.
    busy_us: Arc<AtomicU64>,
    utilisation: metrics::Gauge,
    window_start: Instant,
    window_busy: Duration,
}

impl BusyMeter {
    fn new(model: &str, instance: usize, busy_us: Arc<AtomicU64>) -> BusyMeter {
        let labels = [
            ("model", model.to_string()),
            ("instance", instance.to_string()),
        ];
        BusyMeter {
            busy_total: metrics::gauge!(telemetry::DEVICE_BUSY, &labels),
            busy_us,
            utilisation: metrics::gauge!(telemetry::DEVICE_UTILISATION, &labels),
            window_start: Instant::now(),
            window_busy: Duration::ZERO,
        }
    }

    fn record(&mut self, busy: Duration) {
        // The idle meter's total is kept in whole microseconds, so that busy plus idle adds up
        // to wall time exactly.
        let micros = busy.as_micros() as u64;
        self.busy_total.increment(micros as f64 / 1e6);
        self.busy_us.fetch_add(micros, Ordering::AcqRel);
        self.window_busy += busy;
        let elapsed = self.window_start.elapsed();
        if elapsed >= UTILISATION_WINDOW {
            self.utilisation
                .set((self.window_busy.as_secs_f64() / elapsed.as_secs_f64()).min(1.0));
            self.window_start = Instant::now();
            self.window_busy = Duration::ZERO;
        }
    }
}
