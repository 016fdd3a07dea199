//! A model instance: one engine and its busy-time meter behind a lock, shared by the instance's
//! worker thread and by the inline path, which lets a short request run on its caller's thread
//! when the model is idle (see `BatchHandle::submit`).

use super::{split, BatchError};
use crate::backend::Engine;
use crate::telemetry;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// Utilisation is reported over windows of this length.
const UTILISATION_WINDOW: Duration = Duration::from_secs(10);

/// Runs longer than this (as a recent average) never happen inline: they would hold a runtime
/// thread that every connection shares.
pub(crate) const INLINE_MAX_COMPUTE: Duration = Duration::from_micros(200);

/// Marks "no run measured yet": an unknown model is treated as a slow one.
const UNMEASURED: u64 = u64::MAX;

/// What the instances of one model share: its per-batch series and its recent compute time.
pub(crate) struct ModelRuns {
    series: BatchSeries,
    /// Exponentially weighted mean of recent batches' compute time, in µs.
    recent_compute_us: AtomicU64,
}

impl ModelRuns {
    pub(crate) fn new(model: &str) -> ModelRuns {
        ModelRuns {
            series: BatchSeries::new(model),
            recent_compute_us: AtomicU64::new(UNMEASURED),
        }
    }

    /// True when recent runs were short enough to run on a runtime thread.
    pub(crate) fn short(&self) -> bool {
        self.recent_compute_us.load(Ordering::Relaxed) <= INLINE_MAX_COMPUTE.as_micros() as u64
    }

    fn observe(&self, compute: Duration) {
        let now = compute.as_micros() as u64;
        // Racing updates may lose one sample; the mean only steers the inline choice.
        let mean = match self.recent_compute_us.load(Ordering::Relaxed) {
            UNMEASURED => now,
            old => (old * 7 + now) / 8,
        };
        self.recent_compute_us.store(mean, Ordering::Relaxed);
    }
}

pub(crate) struct Instance {
    state: Mutex<State>,
    runs: Arc<ModelRuns>,
    /// Busy microseconds so far, readable by the idle meter without the lock.
    busy_us: Arc<AtomicU64>,
    /// True when the engine computes on the calling thread alone (no network, no waiting).
    local: bool,
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
        let runs = &self.instance.runs;
        runs.observe(compute);
        let series = &runs.series;
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

/// The local instances of one model, for runs on the calling thread.
#[derive(Clone)]
pub(crate) struct Local {
    instances: Arc<[Arc<Instance>]>,
    runs: Arc<ModelRuns>,
}

impl Local {
    /// Keeps the instances whose engines compute locally; the others never run here.
    pub(crate) fn new(instances: &[Arc<Instance>], runs: Arc<ModelRuns>) -> Local {
        Local {
            instances: instances.iter().filter(|i| i.local).cloned().collect(),
            runs,
        }
    }

    /// An idle local instance, if recent runs were short enough to run here at all.
    pub(crate) fn idle(&self) -> Option<Claimed<'_>> {
        if !self.runs.short() {
            return None;
        }
        self.instances
            .iter()
            .find_map(|instance| instance.try_claim())
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
        let local = engine.runs_locally();
        Instance {
            state: Mutex::new(State {
                engine,
                meter: BusyMeter::new(model, index, busy_us.clone()),
            }),
            runs,
            busy_us,
            local,
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

    /// Takes the engine if it is idle.
    pub(crate) fn try_claim(&self) -> Option<Claimed<'_>> {
        let state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(Claimed {
            instance: self,
            state,
        })
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
