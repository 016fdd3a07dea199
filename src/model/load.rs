//! Start-up: one ONNX Runtime engine per configured instance, the spec read from the model, and
//! the model's batcher started over those engines.

use super::{Model, Registry};
use crate::backend::onnx::{OnnxEngine, OnnxSettings};
use crate::backend::{BackendError, Engine};
use crate::batch::{self, BatcherSettings, Policy};
use crate::config::Config;
use std::time::Duration;

/// Loads every configured model. Must run inside the tokio runtime (batchers are tasks).
pub fn load_models(config: &Config) -> Result<Registry, BackendError> {
    let mut registry = Registry::default();
    for model_config in &config.models {
        let Some(path) = model_config.path.clone() else {
            continue;
        };
        let settings = OnnxSettings {
            model: model_config.name.clone(),
            path,
            device: model_config.device(),
            cpu_fallback: model_config.device_fallback.as_deref() == Some("cpu"),
            intra_op_threads: model_config.intra_op_threads,
            runtime: config.runtime.onnxruntime.clone(),
        };
        let mut engines: Vec<OnnxEngine> = Vec::with_capacity(model_config.instances);
        for _ in 0..model_config.instances {
            engines.push(OnnxEngine::load(&settings)?);
        }
        let Some(first) = engines.first() else {
            continue;
        };
        let spec = first.spec(&model_config.name)?;
        let provider = first.provider().to_string();
        let batching = model_config.max_batch_size > 1 && spec.has_batch_dimension();
        if model_config.max_batch_size > 1 && !batching {
            tracing::warn!(model = %model_config.name, "max_batch_size is set but the model has no open first dimension on every input and output; batching is off");
        }
        let policy = Policy {
            max_batch_rows: if batching { model_config.max_batch_size } else { 1 },
            max_queue_delay: Duration::from_micros(model_config.max_queue_delay_us),
            preferred_sizes: {
                let mut sizes = model_config.preferred_batch_sizes.clone();
                sizes.sort_unstable();
                sizes
            },
        };
        let device = if provider == "CPUExecutionProvider" {
            crate::config::Device::Cpu
        } else {
            model_config.device()
        };
        tracing::info!(
            model = %model_config.name,
            version = %model_config.version,
            provider = %provider,
            instances = model_config.instances,
            batching,
            max_batch_size = model_config.max_batch_size,
            "model loaded"
        );
        metrics::gauge!(crate::telemetry::MODEL_INFO,
            "model" => model_config.name.clone(),
            "version" => model_config.version.clone(),
            "provider" => provider.clone())
        .set(1.0);
        let batcher = batch::start(
            BatcherSettings {
                model: model_config.name.clone(),
                policy,
                max_queue_size: model_config.max_queue_size,
                batching,
            },
            engines
                .into_iter()
                .map(|e| Box::new(e) as Box<dyn Engine>)
                .collect(),
        );
        registry.insert(Model {
            name: model_config.name.clone(),
            version: model_config.version.clone(),
            spec,
            provider,
            device,
            batching,
            max_batch_size: model_config.max_batch_size,
            cache_enabled: config.cache.enabled && model_config.cache,
            cache_ttl: Duration::from_secs(
                model_config
                    .cache_ttl_seconds
                    .unwrap_or(config.cache.ttl_seconds),
            ),
            default_priority: model_config.default_priority,
            default_timeout_us: model_config.default_timeout_us,
            price_per_hour: config.price_per_hour(device),
            batcher,
        });
    }
    Ok(registry)
}
