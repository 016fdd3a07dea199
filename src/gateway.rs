//! The request path shared by every front end: identity and budget admission, concurrency
//! admission, model resolution, validation, the cache with single flight, the batcher, the
//! per-request cost, and exactly one usage record per accepted request. Front ends only
//! translate.

use crate::backend::BackendError;
use crate::cache::key::{self, KeyParts};
use crate::cache::value::CachedValue;
use crate::cache::Cache;
use crate::config::{CacheScope, Config, PRIORITY_LEVELS};
use crate::error::Error;
use crate::metering::clock;
use crate::metering::cost;
use crate::metering::identity::Caller;
use crate::metering::ledger::LedgerError;
use crate::metering::meter::{Admission, Metering};
use crate::metering::record::{self, UsageRecord};
use crate::metering::text::Text;
use crate::model::{self, Model, Registry, RequestError};
use crate::request::{CacheStatus, InferRequest, InferResponse, Outputs, Rendering, Served};
use crate::shutdown::Shutdown;
use crate::telemetry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

pub use crate::request::Protocol;

/// What a front end read off the wire about the caller, before anything is checked.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The bearer API key, without the `Bearer ` prefix.
    pub bearer: Option<String>,
    /// `k=v,...` from the `x-tollgate-tags` header or metadata.
    pub tags: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot open the usage ledger: {0}")]
    Ledger(#[from] LedgerError),
}

pub struct Gateway {
    pub config: Config,
    pub registry: Registry,
    pub cache: Option<Arc<Cache>>,
    pub metering: Arc<Metering>,
    admission: Arc<Semaphore>,
    request_prefix: String,
    next_request: AtomicU64,
}

impl Gateway {
    /// Loads every model, opens the ledger and starts the batchers and metering duties. Must
    /// run inside the tokio runtime.
    pub fn start(config: Config, shutdown: Shutdown) -> Result<Gateway, StartError> {
        // Models and the cache register their metric handles while loading: the recorder
        // must exist by then.
        telemetry::metrics_handle();
        let metering = Arc::new(Metering::open(&config)?);
        let registry = model::load_models(&config)?;
        telemetry::start_upkeep(shutdown.clone());
        metering.start_background(&registry, shutdown);
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
        Ok(Gateway {
            config,
            registry,
            cache,
            metering,
            admission,
            request_prefix,
            next_request: AtomicU64::new(1),
        })
    }

    pub fn model(&self, name: &str, version: Option<&str>) -> Result<&Arc<Model>, Error> {
        Ok(self.registry.resolve(name, version)?)
    }

    /// Who is calling, with their tags; used by inference and by the admin endpoints.
    pub fn caller(
        &self,
        credentials: &Credentials,
        tag_parameter: Option<&str>,
    ) -> Result<Caller, Error> {
        let identities = &self.metering.identities;
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
        mut request: InferRequest,
        protocol: Protocol,
        credentials: &Credentials,
    ) -> Result<InferResponse, Error> {
        let started = Instant::now();
        let arrived_ms = clock::now_ms();
        // Resolved once, here: the metric label needs it and so does the request path.
        let resolved = self
            .registry
            .resolve(&request.model, request.version.as_deref())
            .cloned();
        // Unknown names never become metric labels.
        let metric_model: Result<Arc<Model>, String> = match &resolved {
            Ok(model) => Ok(model.clone()),
            Err(RequestError::UnknownVersion { model, .. }) => Err(model.clone()),
            Err(_) => Err("unknown".to_string()),
        };
        let model_label = || match &metric_model {
            Ok(model) => model.name.clone(),
            Err(label) => label.clone(),
        };
        let result = async {
            let mut caller = self.caller(credentials, request.options.tags.as_deref())?;
            let Ok(_permit) = self.admission.clone().try_acquire_owned() else {
                metrics::counter!(telemetry::REJECTIONS, "model" => model_label(), "reason" => "server_concurrency").increment(1);
                return Err(Error::Overloaded {
                    limit: self.config.server.max_concurrent_requests,
                });
            };
            // Accepted from here on: whatever happens, one usage record is written. Its id
            // carries its arrival time, by which the ledger finds it.
            let counter = self.next_request.fetch_add(1, Ordering::Relaxed);
            let request_id = record::request_id(&self.request_prefix, counter, arrived_ms);
            let usage = UsageGuard::new(
                self.metering.clone(),
                &mut caller,
                &request,
                resolved.as_ref().ok(),
                protocol,
                arrived_ms,
                &request_id,
            );
            // Failures from here on are outcomes of the record, never early returns.
            let outcome = match (self.metering.admit(&caller), resolved) {
                (Ok(admission), Ok(model)) => {
                    if admission == Admission::Demoted {
                        request.options.priority = Some(PRIORITY_LEVELS);
                    }
                    self.infer_admitted(model, request, &caller, request_id)
                        .await
                }
                (Err(error), _) => Err(error),
                (_, Err(error)) => Err(error.into()),
            };
            let record = usage.complete(&outcome, started.elapsed().as_micros() as u64);
            self.metering.settle(record).await?;
            outcome
        }
        .await;
        let seconds = started.elapsed().as_secs_f64();
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
        request: InferRequest,
        caller: &Caller,
        request_id: String,
    ) -> Result<InferResponse, Error> {
        let control = request.options.cache;
        let id = request.id.clone();
        let prepared = model::prepare(&model, request)?;
        let rows = prepared.job.rows;
        let cache = self
            .cache
            .as_ref()
            .filter(|_| model.cache_enabled && (control.lookup || control.store));
        let (value, status) = match cache {
            Some(cache) => {
                let tenant = (self.config.cache.scope == CacheScope::Tenant)
                    .then_some(caller.tenant.name.as_str());
                let key = key::compute(&KeyParts {
                    model: &model.name,
                    version: &model.version,
                    tenant,
                    inputs: &prepared.job.inputs,
                });
                let runner = model.clone();
                let job = prepared.job;
                cache
                    .serve(key, &model.cache, control, async move {
                        execute(&runner, job).await
                    })
                    .await?
            }
            None => {
                if let Some(cache) = &self.cache {
                    cache.count_bypass(&model.cache);
                }
                (
                    Arc::new(execute(&model, prepared.job).await?),
                    CacheStatus::Bypass,
                )
            }
        };
        let computed_here = matches!(status, CacheStatus::Miss | CacheStatus::Bypass);
        let served = Served {
            request_id,
            cache: status,
            rows,
            batch_rows: if computed_here {
                value.batch_rows as usize
            } else {
                0
            },
            queue_us: if computed_here { value.queue_us } else { 0 },
            compute_us: if computed_here { value.compute_us } else { 0 },
            cost_usd: if computed_here { value.cost_usd } else { 0.0 },
            saved_usd: if computed_here { 0.0 } else { value.cost_usd },
            device: model.text.device.clone(),
        };
        let outputs = match &prepared.outputs {
            Some(named) => Outputs::pick(value.outputs.clone(), named.iter().map(String::as_str)),
            None => Outputs::pick(
                value.outputs.clone(),
                model.spec.outputs.iter().map(|o| o.name.as_str()),
            ),
        };
        // Kept from the first repeat on: most computed answers are never asked for again, and
        // keeping their text would cost every miss a copy and the cache the memory.
        let outputs = if matches!(status, CacheStatus::Hit | CacheStatus::Coalesced) {
            outputs.with_rendering(value.rendering.clone())
        } else {
            outputs
        };
        Ok(InferResponse {
            model: model.name.clone(),
            version: model.version.clone(),
            id,
            outputs,
            served,
        })
    }

    /// Graceful end: idle time and queued usage records reach the ledger.
    pub async fn finish(&self) {
        self.metering.finish().await;
    }
}

/// Holds the usage record of an accepted request until it completes. If the request future is
/// dropped first (the client went away), the record is still written, as `cancelled`.
///
/// The record's text is static or shared with the model and tenant wherever it can be (`Text`):
/// it is built for every request and dropped on the ledger's thread.
struct UsageGuard {
    metering: Arc<Metering>,
    record: Option<UsageRecord>,
    /// The resolved model's version, for the record of a successful answer.
    version: Text,
}

impl UsageGuard {
    /// Takes the caller's tags: the record is their last user.
    fn new(
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
            None => Text::copy(&request.model),
        };
        let version = match (request.version.as_deref(), resolved) {
            (None, _) => Text::EMPTY,
            (Some(asked), Some(text)) if text.version == asked => text.version.clone(),
            (Some(asked), _) => Text::copy(asked),
        };
        let record = UsageRecord {
            request_id: Text::copy(request_id),
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
            device: Text::EMPTY,
        };
        UsageGuard {
            metering,
            record: Some(record),
            version: resolved.map(|t| t.version.clone()).unwrap_or_default(),
        }
    }

    fn complete(mut self, outcome: &Result<InferResponse, Error>, latency_us: u64) -> UsageRecord {
        let Some(mut record) = self.record.take() else {
            // Only `complete` and `drop` take the record, and `complete` consumes the guard.
            return UsageRecord::default();
        };
        record.latency_us = latency_us;
        match outcome {
            Ok(response) => {
                let served = &response.served;
                record.version = if response.version == self.version {
                    self.version.clone()
                } else {
                    Text::copy(&response.version)
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

/// Runs one job through the model's batcher and prices its share of the batch.
async fn execute(model: &Model, job: crate::batch::Job) -> Result<CachedValue, Error> {
    let rows = job.rows;
    let output = model.batcher.submit(job).await?;
    Ok(CachedValue {
        rendering: Arc::new(Rendering::for_outputs(&output.outputs)),
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
        model: Arc::from(model.name.as_str()),
        ttl: model.cache.ttl,
    })
}
