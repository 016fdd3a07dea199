//! A model instance: its engine (owned, behind a lock its thread takes for each batch; or shared
//! with the model's other instance tasks) and its busy-time meter.

use super::inline::{self, ShortRuns};
use super::{split, BatchError};
use crate::backend::presence::Presence;
use crate::backend::{AsyncEngine, BackendError, Engine};
use crate::telemetry;
use crate::telemetry::stats::ModelStats;
use crate::tensor::Tensor;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Utilisation is reported over windows of this length.
const UTILISATION_WINDOW: Duration = Duration::from_secs(10);

/// What the instances of one model share: its per-batch series and what it knows of the
/// sizes that run short.
pub(crate) struct ModelRuns {
    series: BatchSeries,
    stats: Arc<ModelStats>,
    short: ShortRuns,
}

impl ModelRuns {
    pub(crate) fn new(model: &str, stats: Arc<ModelStats>) -> ModelRuns {
        ModelRuns {
            series: BatchSeries::new(model),
            stats,
            short: ShortRuns::default(),
        }
    }

    pub(crate) fn short(&self) -> &ShortRuns {
        &self.short
    }
}

pub(crate) struct Instance {
    engine: Runner,
    meter: Mutex<BusyMeter>,
    runs: Arc<ModelRuns>,
    /// Busy microseconds so far, readable by the idle meter without the lock.
    busy_us: Arc<AtomicU64>,
    /// Whether the engine's session is loaded, and for how long it was not.
    presence: Arc<Presence>,
}

/// How an instance runs its batches: on its own thread, or as a task awaiting an engine that
/// every instance of the model shares.
enum Runner {
    Blocking(Mutex<Box<dyn Engine>>),
    Async(Arc<dyn AsyncEngine>),
}

/// One batch's answer: each member's outputs, with the batch's size and compute time.
pub(crate) struct Ran {
    pub per_member: Vec<Arc<[Tensor]>>,
    pub batch_rows: usize,
    pub compute: Duration,
    /// Time spent loading the session again before this batch (after an idle unload).
    pub cold_start: Option<Duration>,
}

impl Instance {
    pub(crate) fn blocking(
        model: &str,
        index: usize,
        engine: Box<dyn Engine>,
        runs: Arc<ModelRuns>,
    ) -> Instance {
        Instance::new(model, index, Runner::Blocking(Mutex::new(engine)), runs)
    }

    pub(crate) fn shared(
        model: &str,
        index: usize,
        engine: Arc<dyn AsyncEngine>,
        runs: Arc<ModelRuns>,
    ) -> Instance {
        Instance::new(model, index, Runner::Async(engine), runs)
    }

    fn new(model: &str, index: usize, engine: Runner, runs: Arc<ModelRuns>) -> Instance {
        let busy_us = Arc::new(AtomicU64::new(0));
        Instance {
            engine,
            meter: Mutex::new(BusyMeter::new(model, index, busy_us.clone())),
            runs,
            busy_us,
            presence: Arc::default(),
        }
    }

    pub(crate) fn busy_us(&self) -> &Arc<AtomicU64> {
        &self.busy_us
    }

    pub(crate) fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    /// Whether this instance's engine computes on the thread that runs it (not an upstream).
    pub(crate) fn computes_here(&self) -> bool {
        matches!(self.engine, Runner::Blocking(_))
    }

    /// Takes the engine for a batch, waiting while another thread runs one on it; `None` for
    /// an async engine.
    pub(crate) fn claim(&self) -> Option<Claimed<'_>> {
        let Runner::Blocking(engine) = &self.engine else {
            return None;
        };
        // A panic inside an engine would poison its lock; the engine itself is still whole.
        let engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
        Some(Claimed {
            instance: self,
            engine,
        })
    }

    /// Takes the engine if it is idle.
    pub(crate) fn try_claim(&self) -> Option<Claimed<'_>> {
        let Runner::Blocking(engine) = &self.engine else {
            return None;
        };
        let engine = match engine.try_lock() {
            Ok(engine) => engine,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(Claimed {
            instance: self,
            engine,
        })
    }

    /// Runs one batch of an async engine. The request runs in a task of its own, so that it
    /// finishes (and a breaker's probe reports back) whatever happens to this caller, and so
    /// that a panic in it fails this batch rather than the instance.
    pub(crate) async fn run_async(
        &self,
        inputs: &[&[Tensor]],
        rows: &[usize],
    ) -> Result<Ran, BatchError> {
        let Runner::Async(engine) = &self.engine else {
            return Err(misplaced());
        };
        let batch_inputs = split::gather(inputs);
        let engine = engine.clone();
        let started = Instant::now();
        let trace = crate::telemetry::trace::current();
        let run = async move { engine.run(&batch_inputs).await };
        let result = tokio::spawn(crate::telemetry::trace::scope(
            trace,
            run.instrument(tracing::Span::current()),
        ))
        .await
        .unwrap_or_else(|failed| {
            Err(BackendError::Execution(if failed.is_panic() {
                "the engine panicked".to_string()
            } else {
                "the gateway is shutting down".to_string()
            }))
        });
        self.account(started.elapsed(), result, rows, None)
    }

    /// Meters a run, counts it in the model's series and splits its outputs by member.
    fn account(
        &self,
        compute: Duration,
        result: Result<Vec<Tensor>, BackendError>,
        rows: &[usize],
        cold_start: Option<Duration>,
    ) -> Result<Ran, BatchError> {
        let batch_rows: usize = rows.iter().sum();
        self.meter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(compute);
        let series = &self.runs.series;
        series.executions.increment(1);
        series.rows.increment(batch_rows as u64);
        series.batch_size.record(batch_rows as f64);
        series.compute.record(compute.as_secs_f64());
        self.runs.stats.executed(batch_rows, compute);
        let per_member = split::scatter(result?, rows)?;
        Ok(Ran {
            per_member,
            batch_rows,
            compute,
            cold_start,
        })
    }

    /// The model's queue-wait histogram.
    pub(crate) fn queue_waits(&self) -> &metrics::Histogram {
        &self.runs.series.queue
    }

    /// Done with a batch taken from the instances' channel.
    pub(crate) fn handed_over_done(&self) {
        self.runs.short.handed_over_done();
    }
}

/// An instance whose engine this thread holds until the value is released or dropped.
pub(crate) struct Claimed<'a> {
    instance: &'a Instance,
    engine: MutexGuard<'a, Box<dyn Engine>>,
}

impl<'a> Claimed<'a> {
    /// Runs one batch: members' inputs and rows in batch order. An engine that panics fails
    /// this batch, not the instance or the thread running it.
    pub(crate) fn run(&mut self, inputs: &[&[Tensor]], rows: &[usize]) -> Result<Ran, BatchError> {
        let batch_inputs = split::gather(inputs);
        let bytes = inline::input_bytes(inputs.iter().copied());
        if !self.engine.is_loaded() {
            // Back on the device from here: loading is idle time of the model, not of nobody.
            self.instance.presence.arrive(tokio::time::Instant::now());
        }
        let started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.engine.run(&batch_inputs)))
            .unwrap_or_else(|panic| Err(panicked(panic.as_ref())));
        // The load is not the batch's computation, so it is neither billed nor timed as one.
        let cold_start = self.engine.take_load_time();
        let compute = started
            .elapsed()
            .saturating_sub(cold_start.unwrap_or_default());
        if cold_start.is_none() {
            self.instance.runs.short.observe(bytes, compute);
        }
        self.instance.account(compute, result, rows, cold_start)
    }

    /// Loads the session ahead of any batch (an instance added for the load).
    pub(crate) fn preload(&mut self) -> Result<(), BackendError> {
        if self.engine.is_loaded() {
            return Ok(());
        }
        self.instance.presence.arrive(tokio::time::Instant::now());
        self.engine.load()
    }

    pub(crate) fn is_loaded(&self) -> bool {
        self.engine.is_loaded()
    }

    /// Lets go of the engine's session, if it is loaded and can be loaded again; true if it
    /// was.
    pub(crate) fn unload(&mut self) -> bool {
        let unloaded = self.engine.unload();
        if unloaded {
            self.instance.presence.leave(tokio::time::Instant::now());
        }
        unloaded
    }

    /// Gives the engine back, keeping the instance to answer for.
    pub(crate) fn release(self) -> &'a Instance {
        self.instance
    }
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> BackendError {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    BackendError::Execution(format!("the engine panicked: {message}"))
}

fn misplaced() -> BatchError {
    BatchError::Backend(BackendError::Execution(
        "an instance was asked to run its engine the wrong way".into(),
    ))
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
