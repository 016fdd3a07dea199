//! Start-up: the engines of each model (one ONNX Runtime session per instance for a local file,
//! one remote engine per instance for an upstream server), the spec read from the model or the
//! upstream's metadata, and the model's batcher started over those engines.

use super::keeper::{self, Keeper};
use super::{Model, ModelText, Models, Registry};
use crate::backend::onnx::{OnnxEngine, OnnxSettings};
use crate::backend::remote::{self, Description, Target, Upstream, UpstreamSettings};
use crate::backend::{BackendError, Engine, Engines};
use crate::batch::{self, BatcherSettings, Policy};
use crate::cache::ModelCache;
use crate::config::{Config, Device, DeviceFallback, ModelConfig};
use crate::spec::ModelSpec;
use crate::telemetry::stats::ModelStats;
use crate::telemetry::RequestSeries;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What either kind of model brings to the common part of loading.
pub(super) struct Loaded {
    engines: Engines,
    spec: ModelSpec,
    provider: String,
    device: Device,
    price_per_hour: f64,
    pub(super) upstream: Option<Arc<Upstream>>,
}

/// Loads every configured model. Must run inside the tokio runtime (batchers are tasks). An
/// upstream model that no upstream describes within its `upstream_startup_wait_ms` is not an
/// error: it is registered as not ready, and its keeper describes it in the background.
pub fn load_models(config: &Config) -> Result<Arc<Models>, BackendError> {
    let mut registry = Registry::default();
    let mut kept = Vec::new();
    for model_config in &config.models {
        if let Some(path) = &model_config.path {
            registry.insert(local_model(config, model_config, path)?);
            continue;
        }
        let settings = upstream_settings(model_config);
        match remote::describe_blocking(&settings) {
            Ok(description) => {
                let loaded = start_upstream(model_config, &settings, description)?;
                let upstream = loaded.upstream.clone();
                registry.insert(assemble(config, model_config, loaded));
                kept.push((model_config.clone(), upstream));
            }
            Err(reason) => {
                tracing::warn!(model = %model_config.name, %reason,
                    "no upstream describes the model yet; it is not ready until one does");
                registry = registry.with_pending(&model_config.name, reason);
                kept.push((model_config.clone(), None));
            }
        }
    }
    let models = Arc::new(Models::new(registry));
    let config = Arc::new(config.clone());
    for (model_config, serving) in kept {
        tokio::spawn(keeper::keep(Keeper {
            models: Arc::downgrade(&models),
            config: config.clone(),
            model_config,
            serving,
        }));
    }
    Ok(models)
}

pub(super) fn load_local(
    config: &Config,
    model_config: &ModelConfig,
    path: &Path,
) -> Result<Loaded, BackendError> {
    let settings = OnnxSettings {
        model: model_config.name.clone(),
        path: path.to_path_buf(),
        device: model_config.device(),
        cpu_fallback: model_config.device_fallback == Some(DeviceFallback::Cpu),
        intra_op_threads: model_config.intra_op_threads,
        intra_op_spinning: model_config.intra_op_spinning,
        runtime: config.runtime.onnxruntime.clone(),
    };
    let (_, max_instances) = model_config.instance_range();
    let mut engines: Vec<OnnxEngine> = Vec::with_capacity(max_instances);
    for _ in 0..model_config.instances {
        engines.push(OnnxEngine::load(&settings)?);
    }
    // Instances the load may add later open their sessions when they start.
    for _ in model_config.instances..max_instances {
        engines.push(OnnxEngine::deferred(&settings));
    }
    let Some(first) = engines.first() else {
        return Err(BackendError::Load {
            model: model_config.name.clone(),
            reason: "no instances configured".into(),
        });
    };
    let spec = first.spec(&model_config.name)?;
    let provider = first.provider().to_string();
    let device = if provider == "CPUExecutionProvider" {
        Device::Cpu
    } else {
        model_config.device()
    };
    Ok(Loaded {
        engines: Engines::Threads(
            engines
                .into_iter()
                .map(|e| Box::new(e) as Box<dyn Engine>)
                .collect(),
        ),
        spec,
        provider,
        device,
        price_per_hour: model_config
            .price_per_hour
            .unwrap_or_else(|| config.price_per_hour(device)),
        upstream: None,
    })
}

pub(super) fn upstream_settings(model_config: &ModelConfig) -> UpstreamSettings {
    let millis = Duration::from_millis;
    UpstreamSettings {
        model: model_config.name.clone(),
        target: Target {
            model: model_config.upstream_model_name().to_string(),
            version: model_config.upstream_version.clone(),
        },
        urls: model_config.upstreams.clone(),
        binary: model_config.upstream_binary,
        timeout: millis(model_config.upstream_timeout_ms),
        connect_timeout: millis(model_config.upstream_connect_timeout_ms),
        ca_path: model_config.upstream_ca_path.clone(),
        headers: model_config.upstream_headers.clone(),
        retries: model_config.upstream_retries,
        breaker_failures: model_config.upstream_breaker_failures,
        breaker_cooldown: millis(model_config.upstream_breaker_cooldown_ms),
        health_interval: millis(model_config.upstream_health_interval_ms),
        startup_wait: millis(model_config.upstream_startup_wait_ms),
    }
}

/// An upstream model served as `description` says.
pub(super) fn start_upstream(
    model_config: &ModelConfig,
    settings: &UpstreamSettings,
    description: Description,
) -> Result<Loaded, BackendError> {
    let started = remote::start(settings, description, model_config.instances)?;
    let upstream = started.upstream;
    Ok(Loaded {
        engines: started.engines,
        spec: upstream.spec().clone(),
        provider: format!("upstream:{}", upstream.platform()),
        // The device is the upstream's; nothing runs here, and only the configured prices apply.
        device: Device::Cpu,
        price_per_hour: model_config.price_per_hour.unwrap_or(0.0),
        upstream: Some(upstream),
    })
}

/// The part every model shares: batching policy, batcher and the registry entry.
pub(super) fn assemble(config: &Config, model_config: &ModelConfig, loaded: Loaded) -> Model {
    let spec = loaded.spec;
    let batching = model_config.max_batch_size > 1 && spec.has_batch_dimension();
    if model_config.max_batch_size > 1 && !batching {
        tracing::warn!(model = %model_config.name, "max_batch_size is set but the model has no open first dimension on every input and output; batching is off");
    }
    if model_config.max_batch_size == 0 && spec.has_batch_dimension() {
        // Triton's default, kept; but a model that could batch and does not is worth a line.
        tracing::warn!(model = %model_config.name, "max_batch_size is not set, so batching is off although the model's first dimension is open; set max_batch_size (e.g. 64) to batch");
    }
    let policy = Policy {
        max_batch_rows: if batching {
            model_config.max_batch_size
        } else {
            1
        },
        max_queue_delay: Duration::from_micros(model_config.max_queue_delay_us),
        wait: model_config.batch_wait,
        preferred_sizes: {
            let mut sizes = model_config.preferred_batch_sizes.clone();
            sizes.sort_unstable();
            sizes
        },
        deferred_rows: config.deferred.batch_rows,
    };
    tracing::info!(
        model = %model_config.name,
        version = %model_config.version,
        provider = %loaded.provider,
        instances = model_config.instances,
        batching,
        max_batch_size = model_config.max_batch_size,
        "model loaded"
    );
    metrics::gauge!(crate::telemetry::MODEL_INFO,
        "model" => model_config.name.clone(),
        "version" => model_config.version.clone(),
        "provider" => loaded.provider.clone())
    .set(1.0);
    let stats = Arc::new(ModelStats::default());
    let batcher = batch::start(
        BatcherSettings {
            model: model_config.name.clone(),
            policy,
            max_queue_size: model_config.max_queue_size,
            batching,
            stats: stats.clone(),
            idle_unload_after: (model_config.idle_unload_after_s > 0)
                .then(|| Duration::from_secs(model_config.idle_unload_after_s)),
            instances: {
                let (min, max) = model_config.instance_range();
                batch::InstanceRange {
                    start: model_config.instances,
                    min,
                    max,
                }
            },
        },
        loaded.engines,
    );
    Model {
        name: model_config.name.clone(),
        version: model_config.version.clone(),
        text: ModelText::new(&model_config.name, &model_config.version, &loaded.device),
        spec,
        provider: loaded.provider,
        device: loaded.device,
        batching,
        max_batch_size: model_config.max_batch_size,
        cache_enabled: config.cache.enabled && model_config.cache,
        cache: ModelCache::new(
            &model_config.name,
            Duration::from_secs(
                model_config
                    .cache_ttl_seconds
                    .unwrap_or(config.cache.ttl_seconds),
            ),
        )
        .with_min_uses(model_config.cache_min_uses.unwrap_or(config.cache.min_uses)),
        requests: RequestSeries::new(&model_config.name),
        stats,
        default_priority: model_config.default_priority,
        default_timeout_us: model_config.default_timeout_us,
        price_per_hour: loaded.price_per_hour,
        price_per_request: model_config.price_per_request.unwrap_or(0.0),
        max_element_bytes: config.server.max_element_bytes.as_usize(),
        batcher,
        upstream: loaded.upstream,
        config: model_config.clone(),
        variant: None,
        variants: Vec::new(),
        shadow: Default::default(),
        shadow_seen: Default::default(),
        measured: Default::default(),
    }
}

/// A local model with its variants (`[[models.variants]]`), each loaded as a model of its own
/// named `parent:variant` and held by the parent; the registry knows only the parent.
pub(super) fn local_model(
    config: &Config,
    model_config: &ModelConfig,
    path: &Path,
) -> Result<Model, BackendError> {
    let mut model = assemble(
        config,
        model_config,
        load_local(config, model_config, path)?,
    );
    for variant in &model_config.variants {
        let entry = variant.entry(model_config);
        let loaded = match &variant.path {
            Some(path) => load_local(config, &entry, path)?,
            None => {
                let settings = upstream_settings(&entry);
                match remote::describe_blocking(&settings) {
                    Ok(description) => start_upstream(&entry, &settings, description)?,
                    // The model serves without it until a reload finds the upstream.
                    Err(reason) => {
                        tracing::warn!(model = %entry.name, %reason, "variant not served: no upstream describes it");
                        continue;
                    }
                }
            }
        };
        let mut loaded = assemble(config, &entry, loaded);
        loaded.variant = Some(super::VariantOf {
            primary: model_config.name.clone(),
            name: smol_str::SmolStr::new(&variant.name),
        });
        model.variants.push(Arc::new(loaded));
    }
    Ok(model)
}
