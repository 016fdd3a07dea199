//! The request path shared by every front end: admission, model resolution, validation, the
//! cache with single flight, the batcher, and the per-request cost. Front ends only translate.

use crate::cache::key::{self, KeyParts};
use crate::cache::value::CachedValue;
use crate::cache::Cache;
use crate::config::Config;
use crate::error::Error;
use crate::metering::cost;
use crate::model::{self, Model, Registry};
use crate::request::{CacheStatus, InferRequest, InferResponse, Served};
use crate::telemetry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

pub struct Gateway {
    pub config: Config,
    pub registry: Registry,
    pub cache: Option<Cache>,
    admission: Arc<Semaphore>,
    request_prefix: String,
    next_request: AtomicU64,
}

impl Gateway {
    /// Loads every model and starts their batchers. Must run inside the tokio runtime.
    pub fn start(config: Config) -> Result<Gateway, crate::backend::BackendError> {
        let registry = model::load_models(&config)?;
        let cache = config.cache.enabled.then(|| Cache::new(&config.cache));
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
            admission,
            request_prefix,
            next_request: AtomicU64::new(1),
        })
    }

    pub fn model(&self, name: &str, version: Option<&str>) -> Result<&Arc<Model>, Error> {
        Ok(self.registry.resolve(name, version)?)
    }

    pub async fn infer(
        &self,
        request: InferRequest,
        protocol: Protocol,
    ) -> Result<InferResponse, Error> {
        let started = Instant::now();
        // Unknown names never become metric labels.
        let model_label = match self.registry.resolve(&request.model, None) {
            Ok(model) => model.name.clone(),
            Err(_) => "unknown".to_string(),
        };
        let result = match self.admission.clone().try_acquire_owned() {
            Ok(_permit) => self.infer_admitted(request).await,
            Err(_) => {
                metrics::counter!(telemetry::REJECTIONS, "model" => model_label.clone(), "reason" => "server_concurrency").increment(1);
                Err(Error::Overloaded {
                    limit: self.config.server.max_concurrent_requests,
                })
            }
        };
        let outcome = match &result {
            Ok(_) => "success",
            Err(error) => error.metric_label(),
        };
        let labels = [
            ("model", model_label),
            ("protocol", protocol.as_str().to_string()),
            ("outcome", outcome.to_string()),
        ];
        metrics::counter!(telemetry::REQUESTS, &labels).increment(1);
        metrics::histogram!(telemetry::REQUEST_DURATION, &labels)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn infer_admitted(&self, request: InferRequest) -> Result<InferResponse, Error> {
        let model = self.model(&request.model, request.version.as_deref())?.clone();
        let control = request.options.cache;
        let id = request.id.clone();
        let prepared = model::prepare(&model, request)?;
        let cache = self
            .cache
            .as_ref()
            .filter(|_| model.cache_enabled && (control.lookup || control.store));
        let (value, status) = match cache {
            Some(cache) => {
                let key = key::compute(&KeyParts {
                    model: &model.name,
                    version: &model.version,
                    tenant: None,
                    inputs: &prepared.job.inputs,
                });
                let runner = model.clone();
                let job = prepared.job;
                cache
                    .serve(key, &model.name, model.cache_ttl, control, async move {
                        execute(&runner, job).await
                    })
                    .await?
            }
            None => {
                if let Some(cache) = &self.cache {
                    cache.count_bypass(&model.name);
                }
                (
                    Arc::new(execute(&model, prepared.job).await?),
                    CacheStatus::Bypass,
                )
            }
        };
        let computed_here = matches!(status, CacheStatus::Miss | CacheStatus::Bypass);
        let served = Served {
            request_id: format!(
                "{}-{:08x}",
                self.request_prefix,
                self.next_request.fetch_add(1, Ordering::Relaxed)
            ),
            cache: status,
            batch_rows: if computed_here { value.batch_rows as usize } else { 0 },
            queue_us: if computed_here { value.queue_us } else { 0 },
            compute_us: if computed_here { value.compute_us } else { 0 },
            cost_usd: if computed_here { value.cost_usd } else { 0.0 },
            saved_usd: if computed_here { 0.0 } else { value.cost_usd },
        };
        let outputs = prepared
            .outputs
            .iter()
            .filter_map(|name| value.outputs.iter().find(|t| &t.name == name).cloned())
            .collect();
        Ok(InferResponse {
            model: model.name.clone(),
            version: model.version.clone(),
            id,
            outputs,
            served,
        })
    }
}

/// Runs one job through the model's batcher and prices its share of the batch.
async fn execute(model: &Model, job: crate::batch::Job) -> Result<CachedValue, Error> {
    let rows = job.rows;
    let output = model.batcher.submit(job).await?;
    Ok(CachedValue {
        outputs: output.outputs,
        cost_usd: cost::share_of_batch(
            output.compute_us,
            rows,
            output.batch_rows,
            model.price_per_hour,
        ),
        compute_us: output.compute_us,
        rows: rows as u32,
        batch_rows: output.batch_rows as u32,
        queue_us: output.queue_us,
        model: Arc::from(model.name.as_str()),
        ttl: model.cache_ttl,
    })
}
