//! Served models: their specs, their batchers and the checks a request must pass before it may
//! reach the cache or a batch.

mod keeper;
mod load;
mod measured;
mod registry;
mod reload;
pub mod shadow;
mod validate;

pub use load::load_models;
pub use registry::{Models, Registry};
pub use reload::{reload, Reloaded};
pub use validate::{prepare, Prepared};

use crate::batch::BatchHandle;
use crate::config::Device;
use crate::error::ErrorClass;
use crate::spec::ModelSpec;
use smol_str::SmolStr;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    #[error("model `{model}` has no version `{version}` (available: {available})")]
    UnknownVersion {
        model: String,
        version: String,
        available: String,
    },
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    /// An upstream model that no upstream has described yet: it cannot be validated against.
    #[error("model `{model}` is not ready: {reason}")]
    NotReady { model: String, reason: String },
}

impl RequestError {
    pub fn class(&self) -> ErrorClass {
        match self {
            RequestError::UnknownModel(_) | RequestError::UnknownVersion { .. } => {
                ErrorClass::NotFound
            }
            RequestError::Invalid { .. } => ErrorClass::BadRequest,
            RequestError::NotReady { .. } => ErrorClass::Unavailable,
        }
    }

    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> RequestError {
        RequestError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A loaded model version and everything the request path needs to know about it.
pub struct Model {
    pub name: String,
    pub version: String,
    /// Name, version and device once more, as the usage records and `Served` hold them.
    pub text: ModelText,
    pub spec: ModelSpec,
    pub provider: String,
    pub device: Device,
    /// True when requests of several callers may share a batch along the first dimension.
    pub batching: bool,
    pub max_batch_size: usize,
    pub cache_enabled: bool,
    pub cache: crate::cache::ModelCache,
    pub requests: crate::telemetry::RequestSeries,
    /// Triton's statistics extension, counted from the same events as `requests`.
    pub stats: Arc<crate::telemetry::stats::ModelStats>,
    pub default_priority: u8,
    pub default_timeout_us: u64,
    pub price_per_hour: f64,
    /// Price of one execution (for an upstream model, one upstream request), shared by the
    /// rows of its batch like compute time is.
    pub price_per_request: f64,
    /// The longest BYTES element a request may carry (`server.max_element_bytes`).
    pub max_element_bytes: usize,
    pub batcher: BatchHandle,
    /// The `[[models]]` entry it was made from: a reload keeps the model while it is unchanged.
    pub config: crate::config::ModelConfig,
    /// Set when an upstream model server runs this model; readiness then follows its health.
    pub upstream: Option<Arc<crate::backend::remote::Upstream>>,
    /// Set for a variant: the model it is a variant of, and its own name there.
    pub variant: Option<VariantOf>,
    /// This model's variants, each a model of its own (`config::VariantConfig`).
    pub variants: Vec<Arc<Model>>,
    /// A variant's answers compared with its primary's on shadowed requests.
    pub shadow: shadow::ShadowStats,
    /// Primary requests seen, which picks those shadowed (`shadow_sample_ratio`).
    pub shadow_seen: std::sync::atomic::AtomicU64,
    /// What its runs measured (compute times, cost per row), for right-sizing.
    pub measured: measured::Measured,
}

/// The model that answers a request: `model` itself, or the variant its `variant` parameter
/// names (`"primary"` names the model itself).
pub fn select(model: &Arc<Model>, variant: Option<&str>) -> Result<Arc<Model>, RequestError> {
    let wanted = match variant {
        None => return Ok(model.clone()),
        Some(name) if name == crate::config::PRIMARY_VARIANT => return Ok(model.clone()),
        Some(name) => name,
    };
    if let Some(found) = model
        .variants
        .iter()
        .find(|v| v.variant.as_ref().is_some_and(|of| of.name == wanted))
    {
        return Ok(found.clone());
    }
    let known: Vec<&str> = std::iter::once(crate::config::PRIMARY_VARIANT)
        .chain(
            model
                .variants
                .iter()
                .filter_map(|v| Some(v.variant.as_ref()?.name.as_str())),
        )
        .collect();
    Err(RequestError::invalid(
        "parameters.variant",
        format!(
            "model `{}` has no variant `{wanted}` (it has: {})",
            model.name,
            known.join(", ")
        ),
    ))
}

/// The cheapest of a model's variants by measured cost per row (by price where none was
/// measured yet), for a tenant over a `downgrade` budget; the model itself when it has none.
pub fn cheapest(model: &Arc<Model>) -> Arc<Model> {
    let measured = model
        .variants
        .iter()
        .filter_map(|v| Some((v.measured.cost_per_row()?, v)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| v);
    let priced = || {
        model
            .variants
            .iter()
            .min_by(|a, b| a.price_per_hour.total_cmp(&b.price_per_hour))
    };
    measured.or_else(priced).unwrap_or(model).clone()
}

/// What a variant is a variant of.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantOf {
    pub primary: String,
    pub name: SmolStr,
}

/// A model's name, version and device as shared `Text`, made once at load: each request's
/// usage record then takes references to them instead of copies.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelText {
    pub name: SmolStr,
    pub version: SmolStr,
    pub device: SmolStr,
}

impl ModelText {
    pub fn new(name: &str, version: &str, device: &Device) -> ModelText {
        ModelText {
            name: SmolStr::new(name),
            version: SmolStr::new(version),
            // Static where the name is: a CPU model's records share nothing at all.
            device: match device {
                Device::Cpu => SmolStr::new_static("cpu"),
                other => SmolStr::from(other.to_string()),
            },
        }
    }
}

impl Model {
    /// Local models are ready while their batcher runs; upstream ones while some upstream is
    /// ready as well.
    pub fn is_ready(&self) -> bool {
        self.batcher.is_running()
            && self
                .upstream
                .as_ref()
                .is_none_or(|upstream| upstream.is_ready())
    }
}
