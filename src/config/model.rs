//! One `[[models]]` entry: its keys, their defaults and its validation (upstream keys are in
//! `upstream.rs`).

use super::{
    invalid, upstream, ConfigError, Device, UpstreamHeaders, UpstreamUrl, PRIORITY_LEVELS,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where a model whose device cannot be used runs instead; the CPU is the only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceFallback {
    Cpu,
}

/// How long a batch that is not full waits for more rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchWait {
    /// As soon as waiting cannot add rows (every recent caller is waiting, or arrivals have
    /// stopped), and never later than `max_queue_delay_us`.
    #[default]
    Adaptive,
    /// Triton's rule: until the batch is full, reaches a preferred size, or its oldest request
    /// has waited `max_queue_delay_us`.
    Fixed,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    #[serde(default = "default_version")]
    pub version: String,
    pub path: Option<PathBuf>,
    /// A KServe V2 server that runs this model instead of a local `path` (see upstream.rs).
    pub upstream: Option<UpstreamUrl>,
    /// Several servers of the same model, balanced; validation folds `upstream` in here.
    #[serde(default)]
    pub upstreams: Vec<UpstreamUrl>,
    /// The upstream's name for the model; defaults to `name`.
    pub upstream_model: Option<String>,
    pub upstream_version: Option<String>,
    /// CA bundle (PEM) that `https://` and `grpcs://` upstreams are checked against; the
    /// system's roots when unset.
    pub upstream_ca_path: Option<PathBuf>,
    /// Sent with every upstream request; `"env:NAME"` values come from the environment.
    #[serde(default)]
    pub upstream_headers: UpstreamHeaders,
    /// REST upstreams: the binary tensor extension; false sends JSON (MLServer needs that).
    #[serde(default = "yes")]
    pub upstream_binary: bool,
    #[serde(default = "upstream::default_timeout_ms")]
    pub upstream_timeout_ms: u64,
    #[serde(default = "upstream::default_connect_timeout_ms")]
    pub upstream_connect_timeout_ms: u64,
    #[serde(default = "upstream::default_retries")]
    pub upstream_retries: u32,
    #[serde(default = "upstream::default_breaker_failures")]
    pub upstream_breaker_failures: u32,
    #[serde(default = "upstream::default_breaker_cooldown_ms")]
    pub upstream_breaker_cooldown_ms: u64,
    #[serde(default = "upstream::default_health_interval_ms")]
    pub upstream_health_interval_ms: u64,
    #[serde(default = "upstream::default_startup_wait_ms")]
    pub upstream_startup_wait_ms: u64,
    #[serde(default = "default_device")]
    pub device: Device,
    /// "cpu" lets a model whose CUDA provider fails to register run on the CPU instead.
    pub device_fallback: Option<DeviceFallback>,
    #[serde(default = "one")]
    pub instances: usize,
    #[serde(default = "one")]
    pub intra_op_threads: usize,
    /// Whether ONNX Runtime's intra-op threads busy-wait for work between runs. Off by
    /// default: in a gateway the same cores also read requests, and a spinning pool takes
    /// their time (BENCHMARKS.md, compute-bound). Only matters with intra_op_threads > 1.
    #[serde(default)]
    pub intra_op_spinning: bool,
    #[serde(default)]
    pub max_batch_size: usize,
    #[serde(default)]
    pub max_queue_delay_us: u64,
    #[serde(default)]
    pub batch_wait: BatchWait,
    /// Above 0: the sessions are unloaded after this many seconds without a request, and
    /// loaded again by the next one (local models only).
    #[serde(default)]
    pub idle_unload_after_s: u64,
    /// Instances follow the load between these two (local models); both default to
    /// `instances`, which is how many run at start.
    pub min_instances: Option<usize>,
    pub max_instances: Option<usize>,
    #[serde(default)]
    pub preferred_batch_sizes: Vec<usize>,
    #[serde(default = "default_queue_size")]
    pub max_queue_size: usize,
    #[serde(default)]
    pub default_timeout_us: u64,
    /// Lane for requests that do not name one: 1 realtime, 2 standard, 3 batch.
    #[serde(default = "default_priority")]
    pub default_priority: u8,
    #[serde(default = "yes")]
    pub cache: bool,
    pub cache_ttl_seconds: Option<u64>,
    /// Overrides `cache.min_uses` for this model.
    pub cache_min_uses: Option<u8>,
    pub price_per_request: Option<f64>,
    pub price_per_hour: Option<f64>,
    /// Right-sized alternatives served beside this model (`variant.rs`).
    #[serde(default)]
    pub variants: Vec<super::VariantConfig>,
    /// Share of this model's requests also run, off the request path, on every variant.
    #[serde(default)]
    pub shadow_sample_ratio: f64,
}

impl ModelConfig {
    /// (min_instances, max_instances), each `instances` unless set.
    pub fn instance_range(&self) -> (usize, usize) {
        (
            self.min_instances.unwrap_or(self.instances),
            self.max_instances.unwrap_or(self.instances),
        )
    }

    pub(super) fn validate(&mut self, index: usize, base_dir: &Path) -> Result<(), ConfigError> {
        let key = |field: &str| format!("models[{index}].{field}");
        if self.name.is_empty() || self.name.contains('/') {
            return Err(invalid(key("name"), "must be non-empty and contain no '/'"));
        }
        if self.version.is_empty() || self.version.contains('/') {
            return Err(invalid(
                key("version"),
                "must be non-empty and contain no '/'",
            ));
        }
        let has_upstream = self.upstream.is_some() || !self.upstreams.is_empty();
        match (&self.path, has_upstream) {
            (None, false) => {
                return Err(invalid(
                    key("path"),
                    "each model needs a `path` to an .onnx file (or an `upstream`)",
                ))
            }
            (Some(_), true) => {
                return Err(invalid(
                    key("upstream"),
                    "a model has either a `path` or an `upstream`, not both",
                ))
            }
            (None, true) => self.validate_upstream(index, base_dir)?,
            (Some(path), false) => {
                self.refuse_upstream_keys(index)?;
                let resolved = if path.is_absolute() {
                    path.clone()
                } else {
                    base_dir.join(path)
                };
                if !resolved.is_file() {
                    return Err(invalid(
                        key("path"),
                        format!("no model file at {}", resolved.display()),
                    ));
                }
                self.path = Some(resolved);
            }
        }
        super::variant::validate(self, index, base_dir)?;
        if !(1..=64).contains(&self.instances) {
            return Err(invalid(key("instances"), "must be between 1 and 64"));
        }
        let (min, max) = self.instance_range();
        if max > 64 {
            return Err(invalid(key("max_instances"), "must be at most 64"));
        }
        if min > self.instances || self.instances > max {
            return Err(invalid(
                key("min_instances"),
                format!(
                    "min_instances ({min}) <= instances ({}) <= max_instances ({max}) must hold",
                    self.instances
                ),
            ));
        }
        if min == 0 && self.idle_unload_after_s == 0 {
            return Err(invalid(
                key("min_instances"),
                "0 needs idle_unload_after_s: the last instance goes only by idling",
            ));
        }
        if max > self.instances && self.path.is_none() {
            return Err(invalid(
                key("max_instances"),
                "applies to local models only: an upstream pool is scaled where it runs",
            ));
        }
        if !(1..=256).contains(&self.intra_op_threads) {
            return Err(invalid(
                key("intra_op_threads"),
                "must be between 1 and 256",
            ));
        }
        if !(0.0..=1.0).contains(&self.shadow_sample_ratio) {
            return Err(invalid(
                key("shadow_sample_ratio"),
                "must be a share between 0 and 1",
            ));
        }
        if self.max_batch_size > 1 << 20 {
            return Err(invalid(key("max_batch_size"), "must be at most 1048576"));
        }
        if self.max_queue_delay_us > 10_000_000 {
            return Err(invalid(
                key("max_queue_delay_us"),
                "must be at most 10 s (10000000)",
            ));
        }
        for size in &self.preferred_batch_sizes {
            if *size == 0 || *size > self.max_batch_size.max(1) {
                return Err(invalid(
                    key("preferred_batch_sizes"),
                    format!(
                        "{size} must be between 1 and max_batch_size ({})",
                        self.max_batch_size
                    ),
                ));
            }
        }
        if self.max_queue_size == 0 {
            return Err(invalid(key("max_queue_size"), "must be at least 1"));
        }
        if !(1..=PRIORITY_LEVELS).contains(&self.default_priority) {
            return Err(invalid(
                key("default_priority"),
                format!("must be between 1 and {PRIORITY_LEVELS}"),
            ));
        }
        super::check_min_uses(&key("cache_min_uses"), self.cache_min_uses)?;
        if self.cache_ttl_seconds == Some(0) {
            return Err(invalid(
                key("cache_ttl_seconds"),
                "must be at least 1 (use cache = false to turn caching off)",
            ));
        }
        for (field, price) in [
            ("price_per_request", self.price_per_request),
            ("price_per_hour", self.price_per_hour),
        ] {
            if price.is_some_and(|p| !p.is_finite() || p < 0.0) {
                return Err(invalid(key(field), "must be a non-negative number"));
            }
        }
        Ok(())
    }

    pub fn device(&self) -> Device {
        self.device
    }
}

fn default_version() -> String {
    "1".into()
}
fn default_device() -> Device {
    Device::Cpu
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_queue_size() -> usize {
    1024
}
fn default_priority() -> u8 {
    2
}
