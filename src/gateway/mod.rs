//! The request path shared by every front end: identity and budget admission, concurrency
//! admission, model resolution, validation, the cache with single flight, the batcher, the
//! per-request cost, and exactly one usage record per accepted request. Front ends only
//! translate.

use crate::backend::BackendError;
use crate::cache::key::{self, KeyParts};
use crate::cache::value::CachedValue;
use crate::cache::Cache;
use crate::config::{CacheScope, Config, PRIORITY_LEVELS};
use crate::metering::clock;
use crate::metering::cost;
use crate::metering::identity::Caller;
use crate::metering::idle::MeteredInstance;
use crate::metering::meter::{Admission, Metering};
use crate::metering::record::{self, UsageRecord};
use crate::metering::{MeteringError, OpenError};
use crate::model::{self, Model, Models, Registry, RequestError};
use crate::request::{CacheStatus, InferRequest, InferResponse, RequestOptions};
use crate::shutdown::Shutdown;
use crate::telemetry;
use crate::telemetry::stats::{ModelStats, Service};
use crate::telemetry::trace::{self, TraceContext};
use smol_str::SmolStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::field::Empty;
use tracing::Instrument;

pub use crate::request::Protocol;

mod access;
mod answer;
mod deferred;
mod error;
mod recall;
mod reload;
mod shadow;
mod usage;

use answer::{answer, Answered};
pub use error::Error;
pub use recall::Recall;
pub use reload::ReloadReport;
use usage::UsageGuard;

/// What a front end read off the wire about the caller, before anything is checked.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The bearer API key, without the `Bearer ` prefix.
    pub bearer: Option<String>,
    /// `k=v,...` from the `x-tollgate-tags` header or metadata.
    pub tags: Option<String>,
    /// The caller's W3C `traceparent` (and `tracestate`), when it sent a valid one.
    pub trace: Option<TraceContext>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Metering(#[from] OpenError),
    #[error("cannot join the fleet: {0}")]
    Fleet(#[from] MeteringError),
}

pub struct Gateway {
    /// The config the gateway started with; `[server]` and the other start-only keys.
    pub config: Config,
    /// The config applied last (at start, or by the latest reload).
    applied: std::sync::Mutex<Config>,
    reloading: tokio::sync::Mutex<()>,
    /// The served models; swapped whole when an upstream model is described or changes.
    pub models: Arc<Models>,
    pub cache: Option<Arc<Cache<Error>>>,
    pub metering: Arc<Metering>,
    admission: Arc<Semaphore>,
    request_prefix: String,
    next_request: AtomicU64,
    /// Which requests write an access log line (`telemetry.access_log_sample_ratio`).
    access_log: access::Sampler,
}

impl Gateway {
    /// Loads every model, opens the ledger and starts the batchers and metering duties. Must
    /// run inside the tokio runtime.
    pub fn start(config: Config, shutdown: Shutdown) -> Result<Gateway, StartError> {
        // Models and the cache register their metric handles while loading: the recorder
        // must exist by then.
        telemetry::metrics_handle();
        let metering = Arc::new(Metering::open(&config)?);
        let models = model::load_models(&config)?;
        telemetry::start_upkeep(shutdown.clone());
        metering.start_background(metered_instances(&models.snapshot()), shutdown);
        let cache = config
            .cache
            .enabled
            .then(|| Arc::new(Cache::new(&config.cache)));
        let admission = Arc::new(Semaphore::new(config.server.max_concurrent_requests));
        // Request ids are unique across restarts without coordination: a per-boot prefix.
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let request_prefix = blake3::hash(&boot.to_le_bytes()).to_hex()[..8].to_string();
        let access_log = access::Sampler::new(config.telemetry.access_log_sample_ratio);
        Ok(Gateway {
            applied: std::sync::Mutex::new(config.clone()),
            reloading: tokio::sync::Mutex::new(()),
            config,
            models,
            cache,
            metering,
            admission,
            request_prefix,
            next_request: AtomicU64::new(1),
            access_log,
        })
    }

    pub fn model(&self, name: &str, version: Option<&str>) -> Result<Arc<Model>, Error> {
        Ok(self.models.snapshot().resolve(name, version)?.clone())
    }

    /// Who is calling, with their tags; used by inference and by the admin endpoints.
    pub fn caller(
        &self,
        credentials: &Credentials,
        tag_parameter: Option<&str>,
    ) -> Result<Caller, Error> {
        let identities = &self.metering.identities();
        let mut caller = identities.caller(credentials.bearer.as_deref())?;
        let mut tags = Vec::new();
        for text in [credentials.tags.as_deref(), tag_parameter]
            .into_iter()
            .flatten()
        {
            tags.extend(identities.tags(text)?);
        }
        tags.sort();
        tags.dedup_by(|a, b| a.0 == b.0);
        caller.tags = tags;
        Ok(caller)
    }

    pub async fn infer(
        &self,
        request: InferRequest,
        protocol: Protocol,
        credentials: &Credentials,
    ) -> Result<Reply, Error> {
        let started = Instant::now();
        let work = self.run(
            Work::Compute(request),
            started,
            protocol,
            Entry::Asking(credentials),
        );
        trace::serve(protocol.as_str(), credentials.trace.as_ref(), work).await
    }

    /// Answers a repeat of a request whose hit gave `recall`, from the memory tier, without
    /// the request being decoded again. `None` when that cannot be done (the answer left
    /// the tier, the model was reloaded, another tenant asks, the caller is refused or the
    /// server is full): the front end then decodes and calls `infer`, which answers or
    /// refuses with the usual outcome. Nothing is counted or recorded for a `None`.
    pub async fn infer_recalled(
        &self,
        recall: &Recall,
        protocol: Protocol,
        credentials: &Credentials,
    ) -> Option<Result<Reply, Error>> {
        let started = Instant::now();
        let work = self.recalled(recall, started, protocol, credentials);
        trace::serve(protocol.as_str(), credentials.trace.as_ref(), work).await
    }

    async fn recalled(
        &self,
        recall: &Recall,
        started: Instant,
        protocol: Protocol,
        credentials: &Credentials,
    ) -> Option<Result<Reply, Error>> {
        let request = &recall.request;
        let model = self
            .models
            .snapshot()
            .resolve(&request.model, request.version.as_deref())
            .ok()?
            .clone();
        let cache = self.cache.as_ref().filter(|_| model.cache_enabled)?;
        if !std::ptr::eq(Arc::as_ptr(&model), recall.model.as_ptr()) {
            return None;
        }
        let caller = self
            .caller(credentials, request.options.tags.as_deref())
            .ok()?;
        if recall.tenant.as_ref() != self.key_tenant(&caller) {
            return None;
        }
        // Taken before the lookup, so that a hit is only counted for a request let in.
        let permit = self.admission.clone().try_acquire_owned().ok()?;
        let value = cache.recall(&recall.key, &model.cache).await?;
        let work = Work::Recalled {
            recall,
            model: model.clone(),
            value,
        };
        Some(
            self.run(work, started, protocol, Entry::Admitted(caller, permit))
                .await,
        )
    }

    /// The path every request takes once read: caller, admission, exactly one usage record,
    /// the request metrics.
    async fn run(
        &self,
        work: Work<'_>,
        started: Instant,
        protocol: Protocol,
        entry: Entry<'_>,
    ) -> Result<Reply, Error> {
        let arrived_ms = clock::now_ms();
        // Resolved once, here: the metric label needs it and so does the request path.
        let resolved = match &work {
            Work::Compute(request) => self
                .models
                .snapshot()
                .resolve(&request.model, request.version.as_deref())
                .and_then(|primary| model::select(primary, request.options.variant.as_deref())),
            Work::Recalled { model, .. } => Ok(model.clone()),
        };
        // Unknown names never become metric labels.
        let metric_model: Result<Arc<Model>, String> = match &resolved {
            Ok(model) => Ok(model.clone()),
            Err(
                RequestError::UnknownVersion { model, .. } | RequestError::NotReady { model, .. },
            ) => Err(model.clone()),
            Err(_) => Err("unknown".to_string()),
        };
        let model_label = || match &metric_model {
            Ok(model) => model.name.clone(),
            Err(label) => label.clone(),
        };
        let result = async {
            let refused = || {
                metrics::counter!(telemetry::REJECTIONS, "model" => model_label(), "reason" => "server_concurrency").increment(1);
                Error::Overloaded {
                    limit: self.config.server.max_concurrent_requests,
                }
            };
            let (mut caller, _permit, handed_back) = match entry {
                Entry::Admitted(caller, permit) => (caller, permit, None),
                Entry::Asking(credentials) => {
                    let tags = work.request().options.tags.as_deref();
                    let caller = self.caller(credentials, tags)?;
                    let permit = self.admission.clone().try_acquire_owned();
                    (caller, permit.map_err(|_| refused())?, None)
                }
                Entry::Deferred { caller, record } => {
                    let permit = self.admission.clone().try_acquire_owned();
                    (caller, permit.map_err(|_| refused())?, Some(record))
                }
            };
            // Accepted from here on: whatever happens, one usage record is written. Its id
            // carries its arrival time, by which the ledger finds it.
            let counter = self.next_request.fetch_add(1, Ordering::Relaxed);
            let request_id = record::request_id(&self.request_prefix, counter, arrived_ms);
            let label = match &metric_model {
                Ok(model) => model.name.as_str(),
                Err(label) => label.as_str(),
            };
            trace::describe(&request_id, &caller.tenant.name, label);
            let mut usage = UsageGuard::new(
                self.metering.clone(),
                &mut caller,
                work.request(),
                resolved.as_ref().ok(),
                protocol,
                arrived_ms,
                &request_id,
            );
            // Failures from here on are outcomes of the record, never early returns.
            let outcome = match (self.metering.admit(&caller).await, resolved) {
                (Ok(admission), Ok(model)) => match work {
                    Work::Compute(mut request) => {
                        let mut model = model;
                        if admission == Admission::Demoted {
                            request.options.priority = Some(PRIORITY_LEVELS);
                            usage.demote();
                        }
                        if admission == Admission::Downgraded {
                            model = model::cheapest(&model);
                            usage.served_by(&model);
                        }
                        let accepted = Accepted {
                            caller: &caller,
                            usage: &mut usage,
                            request_id,
                        };
                        self.infer_admitted(model, request, accepted).await
                    }
                    Work::Recalled { recall, value, .. } => Ok(Reply {
                        response: answer(
                            &model,
                            Answered {
                                value,
                                status: CacheStatus::Hit,
                                rows: recall.rows,
                                outputs: recall.outputs.as_deref(),
                            },
                            recall.request.id.clone(),
                            request_id,
                        ),
                        recall: None,
                    }),
                },
                (Err(error), _) => Err(error.into()),
                (_, Err(error)) => Err(error.into()),
            };
            let mut outcome = outcome;
            if handed_back.is_some() {
                usage.defer();
                // Priced once, on the answer: its record copies the figures from it.
                if let Ok(reply) = &mut outcome {
                    let factor = self.config.deferred.price_factor;
                    reply.response.served.cost_usd *= factor;
                    reply.response.served.saved_usd *= factor;
                }
            }
            let record = usage.complete(&outcome, started.elapsed().as_micros() as u64);
            if self.access_log.picks(counter) {
                access::log(&record, trace::current().as_ref());
            }
            match handed_back {
                Some(slot) => *slot = Some(record),
                None => self.metering.settle(record).await?,
            }
            outcome
        }
        .await;
        let took = started.elapsed();
        let seconds = took.as_secs_f64();
        if let Ok(model) = &metric_model {
            count_statistics(&model.stats, &result, took, arrived_ms);
        }
        match (&result, &metric_model) {
            (Ok(_), Ok(model)) => model.requests.record_success(protocol, seconds),
            (Ok(_), Err(_)) => {
                telemetry::record_request(&model_label(), protocol, "success", seconds)
            }
            (Err(error), _) => {
                telemetry::record_request(&model_label(), protocol, error.metric_label(), seconds)
            }
        }
        result
    }

    async fn infer_admitted(
        &self,
        model: Arc<Model>,
        mut request: InferRequest,
        accepted: Accepted<'_>,
    ) -> Result<Reply, Error> {
        let Accepted {
            caller,
            usage,
            request_id,
        } = accepted;
        let control = request.options.cache;
        let id = request.id.clone();
        // Moved out before the tensors go to the batcher: a recall keeps them.
        let asked_version = request.version.take();
        let tags = request.options.tags.take();
        let wants_recall = request.options.recall;
        let prepared = model::prepare(&model, request)?;
        let rows = prepared.job.rows;
        let shadowed = shadow::pick(&model, &prepared.job);
        let cache = self
            .cache
            .as_ref()
            .filter(|_| model.cache_enabled && (control.lookup || control.store));
        let (value, status, key) = match cache {
            Some(cache) => {
                let key = key::compute(&KeyParts {
                    model: &model.name,
                    version: &model.version,
                    tenant: self.key_tenant(caller).map(SmolStr::as_str),
                    inputs: &prepared.job.inputs,
                });
                let runner = model.clone();
                let job = prepared.job;
                // Only a leader's computation runs; it bills this request even if it ends
                // after the caller left.
                let tab = usage.tab();
                let (value, status) = cache
                    .serve(key, &model.cache, control, async move {
                        let value = execute(&runner, job).await;
                        if let Ok(value) = &value {
                            tab.computed(value);
                        }
                        value
                    })
                    .await?;
                (value, status, Some(key))
            }
            None => {
                if let Some(cache) = &self.cache {
                    cache.count_bypass(&model.cache);
                }
                let value = Arc::new(execute(&model, prepared.job).await?);
                (value, CacheStatus::Bypass, None)
            }
        };
        // A client chooses the id's length: a long one is not kept in a front end's memo.
        let text_kept = || {
            [&id, &tags, &asked_version]
                .into_iter()
                .map(|text| text.as_ref().map_or(0, String::len))
                .sum::<usize>()
        };
        let recall = match key {
            Some(key)
                if wants_recall && status == CacheStatus::Hit && text_kept() <= MAX_RECALL_TEXT =>
            {
                Some(Arc::new(Recall {
                    request: InferRequest {
                        model: model.name.clone(),
                        version: asked_version,
                        id: id.clone(),
                        options: RequestOptions {
                            tags,
                            ..RequestOptions::default()
                        },
                        ..InferRequest::default()
                    },
                    key,
                    model: Arc::downgrade(&model),
                    tenant: self.key_tenant(caller).cloned(),
                    outputs: prepared.outputs.clone(),
                    rows,
                }))
            }
            _ => None,
        };
        tracing::Span::current().record("cache", status.as_str());
        if let Some(shadowed) = shadowed {
            shadow::launch(&self.metering, &model, shadowed, value.outputs.clone());
        }
        let answered = Answered {
            value,
            status,
            rows,
            outputs: prepared.outputs.as_deref(),
        };
        Ok(Reply {
            response: answer(&model, answered, id, request_id),
            recall,
        })
    }

    /// The tenant a cache key is made for: the caller's under `cache.scope = "tenant"`.
    fn key_tenant<'c>(&self, caller: &'c Caller) -> Option<&'c SmolStr> {
        (self.config.cache.scope == CacheScope::Tenant).then_some(&caller.tenant.name)
    }

    /// Graceful end: idle time and queued usage records reach the ledger.
    pub async fn finish(&self) {
        self.metering.finish().await;
    }
}

/// An answer, and with a hit that asked for it (`RequestOptions::recall`), the way back to it.
pub struct Reply {
    pub response: InferResponse,
    pub recall: Option<Arc<Recall>>,
}

/// Triton's statistics of the request's model: one answer (how it was served) or one failure.
fn count_statistics(
    stats: &ModelStats,
    result: &Result<Reply, Error>,
    took: Duration,
    arrived_ms: i64,
) {
    let now_ms = u64::try_from(arrived_ms).unwrap_or(0) + took.as_millis() as u64;
    let Ok(reply) = result else {
        stats.failed(took, now_ms);
        return;
    };
    let served = &reply.response.served;
    let service = match served.cache {
        CacheStatus::Hit => Service::Hit,
        status => Service::Computed {
            queue: Duration::from_micros(served.queue_us),
            compute: Duration::from_micros(served.compute_us),
            looked_up: matches!(status, CacheStatus::Miss | CacheStatus::Coalesced),
        },
    };
    stats.answered(service, took, now_ms);
}

/// Every local model instance, for idle billing. An upstream model's instance threads wait on
/// someone else's server; their idle time is not a device of ours standing still.
fn metered_instances(registry: &Registry) -> Vec<MeteredInstance> {
    registry
        .all()
        .flat_map(|model| std::iter::once(model).chain(&model.variants))
        .filter(|model| model.upstream.is_none())
        .flat_map(|model| {
            model
                .batcher
                .busy_counters()
                .iter()
                .zip(model.batcher.presences())
                .enumerate()
                .map(|(index, (busy_us, presence))| MeteredInstance {
                    model: model.text.name.clone(),
                    version: model.text.version.clone(),
                    device: model.text.device.clone(),
                    index,
                    price_per_hour: model.price_per_hour,
                    busy_us: busy_us.clone(),
                    presence: presence.clone(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The most bytes of request text (id, tags, version) a `Recall` keeps.
const MAX_RECALL_TEXT: usize = 256;

/// How an admitted request is answered.
enum Work<'a> {
    /// Validated, keyed, looked up, and computed on a miss.
    Compute(InferRequest),
    /// A recalled hit whose answer the memory tier still held.
    Recalled {
        recall: &'a Recall,
        model: Arc<Model>,
        value: Arc<CachedValue>,
    },
}

impl Work<'_> {
    /// What the usage record and the caller's tags are read from.
    fn request(&self) -> &InferRequest {
        match self {
            Work::Compute(request) => request,
            Work::Recalled { recall, .. } => &recall.request,
        }
    }
}

/// An accepted request's caller, its usage record and the id that record carries.
struct Accepted<'a> {
    caller: &'a Caller,
    usage: &'a mut UsageGuard,
    request_id: String,
}

/// How far a request got before `Gateway::run`.
enum Entry<'a> {
    /// A deferred job's row, for its job's tenant; its usage record is handed back here
    /// instead of being written.
    Deferred {
        caller: Caller,
        record: &'a mut Option<UsageRecord>,
    },
    /// Only its credentials are known: the caller is still to be found and admitted.
    Asking(&'a Credentials),
    /// Already identified and let in (a recall checks both before its lookup).
    Admitted(Caller, OwnedSemaphorePermit),
}

/// Runs one job through the model's batcher and prices its share of the batch.
async fn execute(model: &Model, job: crate::batch::Job) -> Result<CachedValue, Error> {
    let rows = job.rows;
    let span = tracing::debug_span!("batch", rows, batch_rows = Empty, queue_us = Empty);
    let output = model.batcher.submit(job).instrument(span.clone()).await?;
    span.record("batch_rows", output.batch_rows);
    span.record("queue_us", output.queue_us);
    Ok(CachedValue {
        outputs: output.outputs,
        // Device (or upstream) time shared by rows, plus an upstream's per-request price,
        // shared the same way since one upstream request carried the whole batch.
        cost_usd: cost::share_of_batch(
            output.compute_us,
            rows,
            output.batch_rows,
            model.price_per_hour,
        ) + model.price_per_request * rows as f64 / output.batch_rows.max(1) as f64,
        compute_us: output.compute_us,
        rows: rows as u32,
        batch_rows: output.batch_rows as u32,
        queue_us: output.queue_us,
        cold_start_us: output.cold_start_us,
        model: Arc::from(model.name.as_str()),
        ttl: model.cache.ttl,
    })
    .inspect(|value| {
        let rows = u64::from(value.rows);
        model
            .measured
            .record(value.compute_us, value.cost_usd, rows);
    })
}
