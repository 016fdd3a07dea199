//! The configuration file: parsed strictly (unknown keys are errors), then validated once into the
//! `Config` every other layer reads. Nothing downstream re-checks what is validated here.

mod deferred;
mod device;
mod model;
mod redis_url;
mod server;
mod telemetry;
mod tenant;
mod units;
mod upstream;
mod upstream_headers;
mod upstream_url;
mod variant;

pub use deferred::{DeferredConfig, Window};
pub use device::Device;
pub use model::{BatchWait, DeviceFallback, ModelConfig};
pub use redis_url::{OnRedisDown, RedisUrl};
pub use server::ServerConfig;
pub use telemetry::TelemetryConfig;
pub use tenant::{BudgetAction, BudgetPeriod, TenantConfig};
pub use units::ByteSize;
pub use upstream_headers::UpstreamHeaders;
pub use upstream_url::{UpstreamUrl, Wire};
pub use variant::{VariantConfig, PRIMARY_VARIANT};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub pricing: PricingConfig,
    #[serde(default)]
    pub ledger: LedgerConfig,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub fleet: FleetConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub metering: MeteringConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub deferred: DeferredConfig,
    /// The file this config was read from, which a reload reads again (`None`: not a file).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    pub onnxruntime: RuntimeLibrary,
}

/// Where the ONNX Runtime library comes from: `"auto"` (ORT_DYLIB_PATH, then `.runtime/`), or
/// the path of a `libonnxruntime.so.*`, checked to be a file when the config is validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RuntimeLibrary {
    #[default]
    Auto,
    Path(PathBuf),
}

impl<'de> Deserialize<'de> for RuntimeLibrary {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.as_str() {
            "auto" => RuntimeLibrary::Auto,
            _ => RuntimeLibrary::Path(PathBuf::from(text)),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    Shared,
    Tenant,
}

/// The largest `cache.body_memo_entries`: 2^24 slots take 256 MiB before any entry.
pub const MAX_BODY_MEMO_ENTRIES: usize = 1 << 24;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    pub max_bytes: ByteSize,
    pub ttl_seconds: u64,
    pub scope: CacheScope,
    /// Defaults to `fleet.redis_url`.
    pub redis_url: Option<RedisUrl>,
    /// Names the environment variable holding the key that authenticates values in Redis.
    pub redis_secret_env: Option<String>,
    /// The key itself, read from that variable when the config is validated.
    #[serde(skip)]
    pub redis_secret: Option<RedisSecret>,
    /// Longest a Redis round trip may add to a request before it counts as a miss.
    pub redis_timeout_ms: u64,
    /// Slots of the HTTP body memo, which answers a hit's exact body again without decoding
    /// it (rounded up to a power of two; 0 turns it off).
    pub body_memo_entries: usize,
    /// How many times an input must be computed before its answer is stored: 1 stores every
    /// answer; 2 stores one the second time (within the doorkeeper's window), so inputs seen
    /// once never cost a store. Models may override it.
    pub min_uses: u8,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_bytes: ByteSize(256 << 20),
            ttl_seconds: 3600,
            scope: CacheScope::Shared,
            redis_url: None,
            redis_secret_env: None,
            redis_secret: None,
            redis_timeout_ms: 20,
            body_memo_entries: 65_536,
            min_uses: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    pub currency: String,
    pub device_per_hour: BTreeMap<String, f64>,
}

impl Default for PricingConfig {
    fn default() -> Self {
        PricingConfig {
            currency: "USD".into(),
            device_per_hour: BTreeMap::from([("cpu".to_string(), 0.10)]),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    pub path: PathBuf,
    /// `postgres://USER@HOST:PORT/DATABASE`: one ledger for the whole fleet instead of `path`.
    pub url: Option<String>,
    pub durability: Durability,
    /// Per-request records older than this many days are deleted; 0 keeps them.
    pub retention_days: u32,
    /// Rollup rows older than this many days are deleted; 0 keeps them.
    pub rollup_retention_days: u32,
    pub detail: LedgerDetail,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            path: PathBuf::from("data/ledger.sqlite"),
            url: None,
            durability: Durability::Async,
            retention_days: 90,
            rollup_retention_days: 800,
            detail: LedgerDetail::All,
        }
    }
}

/// Which requests keep a per-request record besides being counted in the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerDetail {
    All,
    /// Every request but those answered from the cache (hits and coalesced).
    Misses,
    None,
}

impl LedgerDetail {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerDetail::All => "all",
            LedgerDetail::Misses => "misses",
            LedgerDetail::None => "none",
        }
    }
}

/// When a request's usage record is safe: `async` records are committed in groups every
/// 50 ms or so after the answer; `sync` answers only once its record is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Async,
    Sync,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Async => "async",
            Durability::Sync => "sync",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeteringConfig {
    /// Tag keys requests may carry (`x-tollgate-tags: k=v` or parameter `tags`); others are refused.
    pub allowed_tags: Vec<String>,
    /// How often each model instance's idle time is written to the ledger as `__idle__` cost.
    pub idle_interval_seconds: u64,
    /// Tenants with a label of their own on the cost metrics; the rest are `other`.
    pub metric_tenants: usize,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        MeteringConfig {
            allowed_tags: Vec::new(),
            idle_interval_seconds: 60,
            metric_tenants: 200,
        }
    }
}

/// The key that authenticates cache values in Redis; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSecret(pub Vec<u8>);

impl fmt::Debug for RedisSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisSecret(..)")
    }
}

/// State shared by every replica that names the same Redis.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Budgets, spend and alert de-duplication become fleet-wide.
    pub redis_url: Option<RedisUrl>,
    pub on_redis_down: OnRedisDown,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub webhook_url: Option<String>,
    /// Spend per minute above mean + k·σ (EWMA) counts as anomalous...
    pub anomaly_k: f64,
    /// ...when it stays there for this many consecutive minutes.
    pub anomaly_window_minutes: u32,
    /// Weight of the newest minute in the EWMA mean and variance.
    pub anomaly_alpha: f64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: None,
            anomaly_k: 3.0,
            anomaly_window_minutes: 2,
            anomaly_alpha: 0.1,
        }
    }
}

/// An `IP:port` listening address. Host names are refused rather than resolved: a name may
/// stand for several addresses, and which one a gateway listens on must not depend on DNS.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("`{text}` is not an IP:port address (such as 127.0.0.1:8000, 0.0.0.0:8000 or [::]:8000; host names are not resolved)")
    })
}

fn socket_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_socket_addr(&text).map_err(serde::de::Error::custom)
}

/// Lowest-priority lane; requests may name 1 (highest) up to this.
pub const PRIORITY_LEVELS: u8 = 3;

/// The lane of deferred jobs' rows, below every lane a request may ask for.
pub const DEFERRED_LANE: u8 = PRIORITY_LEVELS + 1;

impl RuntimeLibrary {
    /// A relative path is read from the config file's folder, like model paths.
    fn validate(&self, base_dir: &Path) -> Result<RuntimeLibrary, ConfigError> {
        let RuntimeLibrary::Path(path) = self else {
            return Ok(RuntimeLibrary::Auto);
        };
        let resolved = if path.is_relative() {
            base_dir.join(path)
        } else {
            path.clone()
        };
        let why = match std::fs::metadata(&resolved) {
            Ok(meta) if meta.is_file() => return Ok(RuntimeLibrary::Path(resolved)),
            Ok(meta) if meta.is_dir() => {
                "is a directory; name the libonnxruntime.so.* file in it".to_string()
            }
            Ok(_) => "is not a regular file".to_string(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                "does not exist".to_string()
            }
            Err(error) => format!("cannot be read ({error})"),
        };
        Err(invalid(
            "runtime.onnxruntime",
            format!(
                "{} {why} (\"auto\" finds the library `make runtime` installs)",
                resolved.display()
            ),
        ))
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate(path.parent().unwrap_or(Path::new(".")))
    }

    /// Checks every value and resolves relative model paths against `base_dir` (the directory
    /// of the config file), so the gateway can be started from anywhere.
    pub fn validate(mut self, base_dir: &Path) -> Result<Config, ConfigError> {
        self.server.validate(base_dir)?;
        self.telemetry.validate()?;
        self.deferred.validate()?;
        if self.cache.ttl_seconds == 0 {
            return Err(invalid(
                "cache.ttl_seconds",
                "must be at least 1 (set cache.enabled = false to turn the cache off)",
            ));
        }
        check_min_uses("cache.min_uses", Some(self.cache.min_uses))?;
        if self.cache.body_memo_entries > MAX_BODY_MEMO_ENTRIES {
            return Err(invalid(
                "cache.body_memo_entries",
                format!("must be at most {MAX_BODY_MEMO_ENTRIES} (0 turns the memo off)"),
            ));
        }
        if let Some(url) = &self.fleet.redis_url {
            url.check()
                .map_err(|reason| invalid("fleet.redis_url", reason))?;
        }
        if let Some(url) = &self.cache.redis_url {
            url.check()
                .map_err(|reason| invalid("cache.redis_url", reason))?;
        } else {
            self.cache.redis_url = self.fleet.redis_url.clone();
        }
        if let Some(name) = &self.cache.redis_secret_env {
            match std::env::var(name) {
                Ok(secret) if !secret.is_empty() => {
                    self.cache.redis_secret = Some(RedisSecret(secret.into_bytes()))
                }
                _ => {
                    return Err(invalid(
                        "cache.redis_secret_env",
                        format!("the environment variable {name} is not set (or empty); every replica needs the same secret there"),
                    ))
                }
            }
        }
        for (device, price) in &self.pricing.device_per_hour {
            if Device::parse(device).is_none() {
                return Err(invalid(
                    format!("pricing.device_per_hour.{device}"),
                    "device names are \"cpu\" or \"cuda:N\"",
                ));
            }
            if !price.is_finite() || *price < 0.0 {
                return Err(invalid(
                    format!("pricing.device_per_hour.{device}"),
                    "must be a non-negative number",
                ));
            }
        }
        if self.metering.idle_interval_seconds == 0 {
            return Err(invalid(
                "metering.idle_interval_seconds",
                "must be at least 1",
            ));
        }
        if let Some(url) = &self.alerts.webhook_url {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(invalid(
                    "alerts.webhook_url",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if !(self.alerts.anomaly_k.is_finite() && self.alerts.anomaly_k > 0.0) {
            return Err(invalid("alerts.anomaly_k", "must be a positive number"));
        }
        if self.alerts.anomaly_window_minutes == 0 {
            return Err(invalid(
                "alerts.anomaly_window_minutes",
                "must be at least 1",
            ));
        }
        if !(self.alerts.anomaly_alpha > 0.0 && self.alerts.anomaly_alpha <= 1.0) {
            return Err(invalid("alerts.anomaly_alpha", "must be in (0, 1]"));
        }
        if let Some(url) = &self.ledger.url {
            let scheme_ok = url.starts_with("postgres://") || url.starts_with("postgresql://");
            if !scheme_ok || url.parse::<tokio_postgres::Config>().is_err() {
                return Err(invalid(
                    "ledger.url",
                    "must be a PostgreSQL URL: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                ));
            }
        }
        // Like model paths, a relative ledger path is read from the config file's folder.
        if self.ledger.path.is_relative() {
            self.ledger.path = base_dir.join(&self.ledger.path);
        }
        self.runtime.onnxruntime = self.runtime.onnxruntime.validate(base_dir)?;
        for (index, tag) in self.metering.allowed_tags.iter().enumerate() {
            check_tag_key(&format!("metering.allowed_tags[{index}]"), tag)?;
        }
        if self.models.is_empty() {
            return Err(invalid("models", "at least one [[models]] entry is needed"));
        }
        let mut seen = std::collections::HashSet::new();
        for (index, model) in self.models.iter_mut().enumerate() {
            model.validate(index, base_dir)?;
            if !seen.insert((model.name.clone(), model.version.clone())) {
                return Err(invalid(
                    format!("models[{index}]"),
                    format!(
                        "model `{}` version `{}` is configured twice",
                        model.name, model.version
                    ),
                ));
            }
        }
        self.validate_tenants()?;
        Ok(self)
    }

    /// Each tenant once by name and once by key: a key two tenants share leaves "who pays"
    /// undecided. With `auth.required` there must be someone to call inference at all.
    fn validate_tenants(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        let mut keys = std::collections::HashMap::new();
        for (index, tenant) in self.tenants.iter().enumerate() {
            let key = format!("tenants[{index}]");
            if tenant.name.is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            if !names.insert(tenant.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("tenant `{}` is configured twice", tenant.name),
                ));
            }
            check_blake3_hex(&format!("{key}.api_key_blake3"), &tenant.api_key_blake3)?;
            let hash = tenant.api_key_blake3.to_ascii_lowercase();
            if let Some(other) = keys.insert(hash, tenant.name.as_str()) {
                return Err(invalid(
                    format!("{key}.api_key_blake3"),
                    format!(
                        "tenant `{}` has the same API key hash as tenant `{other}`; each key must name one payer",
                        tenant.name
                    ),
                ));
            }
            if let Some(budget) = tenant.budget_usd {
                if !budget.is_finite() || budget < 0.0 {
                    return Err(invalid(
                        format!("{key}.budget_usd"),
                        "must be a non-negative number of the pricing currency",
                    ));
                }
            }
        }
        if self.auth.required && self.tenants.is_empty() {
            return Err(invalid(
                "auth.required",
                "is true but no [[tenants]] are configured, so no key could call inference",
            ));
        }
        Ok(())
    }

    pub fn price_per_hour(&self, device: Device) -> f64 {
        self.pricing
            .device_per_hour
            .get(&device.to_string())
            .copied()
            .unwrap_or(0.0)
    }
}

/// `min_uses` counts computations the doorkeeper remembers, and it remembers one sighting.
fn check_min_uses(field: &str, min_uses: Option<u8>) -> Result<(), ConfigError> {
    match min_uses {
        None | Some(1 | 2) => Ok(()),
        Some(_) => Err(invalid(
            field,
            "must be 1 (store every answer) or 2 (store an answer the second time its input is computed)",
        )),
    }
}

/// Tag keys travel as `key=value` pairs separated by commas, so neither may be in a key.
fn check_tag_key(field: &str, key: &str) -> Result<(), ConfigError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    if !key.is_empty() && key.len() <= 64 && key.bytes().all(allowed) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("`{key}` is not a tag key: use 1 to 64 letters, digits, '_', '-' or '.' (the key alone, without `=value`)"),
        ))
    }
}

fn check_blake3_hex(key: &str, hex: &str) -> Result<(), ConfigError> {
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(invalid(
            key,
            "must be the 64 hex digits of a blake3 hash (never the secret itself)",
        ))
    }
}

#[cfg(test)]
mod tests;
