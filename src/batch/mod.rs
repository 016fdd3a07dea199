//! The dynamic batcher: one actor per model gathers requests into batches (see `policy`) and
//! hands them to worker threads that each own an engine. Callers talk to it through a cheap,
//! cloneable `BatchHandle`; admission is bounded so overload is refused at the door.

mod actor;
mod arrivals;
mod inline;
mod instance;
pub mod policy;
mod scale;
pub mod split;
mod timer;
mod unload;
mod worker;

use crate::backend::{BackendError, Engines};
use crate::error::ErrorClass;
use crate::tensor::Tensor;
use inline::Local;
use instance::{Instance, ModelRuns};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub use policy::Policy;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error("model {model} has {limit} requests queued, its max_queue_size; retry later")]
    QueueFull { model: String, limit: usize },
    #[error("request timed out after waiting {waited_us} µs in the queue of model {model}, before it could run")]
    TimedOut { model: String, waited_us: u64 },
    #[error("model {model} is shutting down")]
    Closed { model: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl BatchError {
    pub fn class(&self) -> ErrorClass {
        match self {
            BatchError::QueueFull { .. } => ErrorClass::Overloaded,
            BatchError::TimedOut { .. } => ErrorClass::Timeout,
            BatchError::Closed { .. } => ErrorClass::Unavailable,
            BatchError::Backend(_) => ErrorClass::Internal,
        }
    }
}

/// One request's share of work, with the model's inputs in the model's order.
#[derive(Debug)]
pub struct Job {
    pub inputs: Vec<Tensor>,
    /// Rows this request contributes to a batch (its first dimension when batching).
    pub rows: usize,
    /// Requests only share a batch when this matches (non-batch dims and datatypes).
    pub group: BatchGroup,
    /// 1 is the highest lane.
    pub priority: u8,
    pub deadline: Option<Instant>,
}

/// The non-batch dimensions a model leaves open, as one request gave them: requests share a
/// batch only when these are equal. Empty for most models (every other dimension is fixed),
/// which costs no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchGroup(Option<Arc<[usize]>>);

impl BatchGroup {
    pub fn of_open_dims(dims: Vec<usize>) -> BatchGroup {
        BatchGroup((!dims.is_empty()).then(|| dims.into()))
    }
}

/// What a request gets back from its batch.
#[derive(Debug, Clone)]
pub struct JobOutput {
    /// Every output of the model, cut down to this request's rows.
    pub outputs: Arc<[Tensor]>,
    pub batch_rows: usize,
    pub queue_us: u64,
    pub compute_us: u64,
    /// Time the batch waited for its model's session to be loaded again (0: it was loaded).
    pub cold_start_us: u64,
}

pub(crate) struct Pending {
    job: Job,
    enqueued: Instant,
    sequence: u64,
    reply: oneshot::Sender<Result<JobOutput, BatchError>>,
    /// The caller's span and trace: a batch runs in its first member's, so that an upstream
    /// request for it carries that trace.
    span: tracing::Span,
    trace: Option<crate::telemetry::trace::TraceContext>,
}

/// Settings of one model's batcher, from validated config.
#[derive(Debug, Clone)]
pub struct BatcherSettings {
    pub model: String,
    pub policy: Policy,
    pub max_queue_size: usize,
    /// When true, the first dimension of every input is the batch dimension.
    pub batching: bool,
    /// The model's Triton-style statistics, which count every batch run.
    pub stats: Arc<crate::telemetry::stats::ModelStats>,
    /// Unload the sessions after this long without a request (local models only).
    pub idle_unload_after: Option<std::time::Duration>,
    /// How many instances run at start, and the range they follow the load in.
    pub instances: InstanceRange,
}

/// `start` instances run at first; with `min < max` their number follows the load. Engines
/// beyond `start` are handed over unloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceRange {
    pub start: usize,
    pub min: usize,
    pub max: usize,
}

impl InstanceRange {
    pub fn fixed(count: usize) -> InstanceRange {
        InstanceRange {
            start: count,
            min: count,
            max: count,
        }
    }
}

#[derive(Clone)]
pub struct BatchHandle {
    sender: mpsc::UnboundedSender<Pending>,
    queued: Arc<AtomicUsize>,
    settings: Arc<BatcherSettings>,
    local: Local,
    /// Busy microseconds of each instance, for idle-time metering.
    busy: Arc<[Arc<AtomicU64>]>,
    presences: Arc<[Arc<crate::backend::presence::Presence>]>,
    flow: Arc<arrivals::Flow>,
}

impl BatchHandle {
    /// Queues the job and waits for its batch. The queue is unbounded as a channel but bounded
    /// by the admission counter, so a refusal is immediate and memory stays bounded.
    ///
    /// Without batching, a job that finds the queue empty runs at once on the caller's thread
    /// when an instance is idle and the job is no larger than runs of this model known to be
    /// short (`inline`): nothing waits that it could overtake, and it saves the hand-offs to
    /// the actor and an instance thread and back.
    pub async fn submit(&self, job: Job) -> Result<JobOutput, BatchError> {
        let _inflight = self.flow.enter();
        if let Some(done) = self.try_inline(&job) {
            return done;
        }
        let limit = self.settings.max_queue_size;
        if self.queued.fetch_add(1, Ordering::AcqRel) >= limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(crate::telemetry::REJECTIONS, "model" => self.settings.model.clone(), "reason" => "queue_full").increment(1);
            return Err(BatchError::QueueFull {
                model: self.settings.model.clone(),
                limit,
            });
        }
        let (reply, receive) = oneshot::channel();
        let pending = Pending {
            job,
            enqueued: Instant::now(),
            sequence: 0,
            reply,
            span: tracing::Span::current(),
            trace: crate::telemetry::trace::current(),
        };
        if self.sender.send(pending).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(self.closed());
        }
        receive.await.unwrap_or_else(|_| Err(self.closed()))
    }

    fn try_inline(&self, job: &Job) -> Option<Result<JobOutput, BatchError>> {
        if self.settings.batching
            || self.queued.load(Ordering::Acquire) > 0
            || job
                .deadline
                .is_some_and(|deadline| deadline <= Instant::now())
        {
            return None;
        }
        let mut claimed = self
            .local
            .claim(inline::input_bytes([job.inputs.as_slice()]))?;
        let ran = claimed.run(&[&job.inputs], &[job.rows]);
        claimed.release().queue_waits().record(0.0);
        Some(ran.map(|mut ran| JobOutput {
            outputs: ran.per_member.pop().unwrap_or_else(|| Arc::new([])),
            batch_rows: ran.batch_rows,
            queue_us: 0,
            compute_us: ran.compute.as_micros() as u64,
            cold_start_us: ran.cold_start.map_or(0, |d| d.as_micros() as u64),
        }))
    }

    /// False once the batching loop has stopped: the model can answer nothing any more, and
    /// says so on its readiness endpoint.
    pub fn is_running(&self) -> bool {
        !self.sender.is_closed()
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub fn settings(&self) -> &BatcherSettings {
        &self.settings
    }

    pub fn busy_counters(&self) -> &[Arc<AtomicU64>] {
        &self.busy
    }

    /// Each instance's loaded state and unloaded time, beside `busy_counters`.
    pub fn presences(&self) -> &[Arc<crate::backend::presence::Presence>] {
        &self.presences
    }

    fn closed(&self) -> BatchError {
        BatchError::Closed {
            model: self.settings.model.clone(),
        }
    }
}

/// Starts a model's batcher: one actor task and one thread per engine. Must be called inside a
/// tokio runtime. The threads end when every handle is dropped and the queue drains.
pub fn start(settings: BatcherSettings, engines: Engines) -> BatchHandle {
    let settings = Arc::new(settings);
    let queued = Arc::new(AtomicUsize::new(0));
    let (sender, receiver) = mpsc::unbounded_channel();
    // Capacity 1: one batch waits ready while the workers run theirs, so a device never idles
    // for assembly, and requests that arrive meanwhile can still join the next batch.
    let (work_sender, work_receiver) = mpsc::channel(1);
    let runs = Arc::new(ModelRuns::new(&settings.model, settings.stats.clone()));
    // A range beyond the engines there are is cut to them.
    let count = engines.len();
    let range = InstanceRange {
        start: settings.instances.start.min(count),
        min: settings.instances.min.min(count),
        max: settings.instances.max.min(count),
    };
    let scale = Arc::new(scale::Scale::new(&settings.model, range.start));
    let model = settings.model.as_str();
    let instances: Vec<Arc<Instance>> = match engines {
        Engines::Threads(engines) => {
            let receiver = Arc::new(std::sync::Mutex::new(work_receiver));
            let instances: Vec<_> = engines
                .into_iter()
                .enumerate()
                .map(|(index, engine)| {
                    Arc::new(Instance::blocking(model, index, engine, runs.clone()))
                })
                .collect();
            for (index, instance) in instances.iter().enumerate() {
                worker::spawn_thread(
                    settings.clone(),
                    worker::Slot {
                        index,
                        instance: instance.clone(),
                        scale: scale.clone(),
                    },
                    receiver.clone(),
                );
            }
            instances
        }
        Engines::Tasks { engine, instances } => {
            let receiver = Arc::new(tokio::sync::Mutex::new(work_receiver));
            let instances: Vec<_> = (0..instances)
                .map(|index| Arc::new(Instance::shared(model, index, engine.clone(), runs.clone())))
                .collect();
            for instance in &instances {
                worker::spawn_task(settings.clone(), instance.clone(), receiver.clone());
            }
            instances
        }
    };
    let local = Local::new(&instances, runs);
    let busy = instances.iter().map(|i| i.busy_us().clone()).collect();
    let presences = instances.iter().map(|i| i.presence().clone()).collect();
    let flow = Arc::new(arrivals::Flow::new(model));
    // Instances that do not run yet hold no session, and are not billed for idling.
    for instance in instances.iter().skip(range.start) {
        instance.presence().leave(Instant::now());
    }
    if range.min < range.max {
        tokio::spawn(scale::follow(
            scale.clone(),
            scale::Follow::new(range.min, range.max),
            Arc::downgrade(&flow),
            Arc::downgrade(&queued),
            instances.clone(),
            settings.model.clone(),
        ));
    }
    if let Some(after) = settings.idle_unload_after {
        let computing: Vec<_> = instances
            .iter()
            .filter(|i| i.computes_here())
            .cloned()
            .collect();
        if !computing.is_empty() {
            tokio::spawn(unload::watch(
                settings.model.clone(),
                after,
                Arc::downgrade(&flow),
                computing,
            ));
        }
    }
    tokio::spawn(actor::run(
        settings.clone(),
        receiver,
        actor::Outlets {
            workers: work_sender,
            local: local.clone(),
        },
        queued.clone(),
        flow.clone(),
    ));
    BatchHandle {
        sender,
        queued,
        settings,
        local,
        busy,
        presences,
        flow,
    }
}

#[cfg(test)]
mod tests;
