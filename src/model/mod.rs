//! Served models: their specs, their batchers and the checks a request must pass before it may
//! reach the cache or a batch.

mod load;
mod validate;

pub use load::load_models;
pub use validate::{prepare, Prepared};

use crate::batch::BatchHandle;
use crate::config::Device;
use crate::error::ErrorClass;
use crate::spec::ModelSpec;
use smol_str::SmolStr;
use std::collections::HashMap;
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
}

impl RequestError {
    pub fn class(&self) -> ErrorClass {
        match self {
            RequestError::UnknownModel(_) | RequestError::UnknownVersion { .. } => {
                ErrorClass::NotFound
            }
            RequestError::Invalid { .. } => ErrorClass::BadRequest,
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
    pub batcher: BatchHandle,
    /// Set when an upstream model server runs this model; readiness then follows its health.
    pub upstream: Option<Arc<crate::backend::remote::Upstream>>,
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

/// Models by name, each with its versions, newest last.
#[derive(Default)]
pub struct Registry {
    models: HashMap<String, Vec<Arc<Model>>>,
}

impl Registry {
    pub fn insert(&mut self, model: Model) {
        let versions = self.models.entry(model.name.clone()).or_default();
        versions.push(Arc::new(model));
        versions.sort_by(|a, b| version_order(&a.version, &b.version));
    }

    pub fn resolve(&self, name: &str, version: Option<&str>) -> Result<&Arc<Model>, RequestError> {
        let versions = self
            .models
            .get(name)
            .ok_or_else(|| RequestError::UnknownModel(name.to_string()))?;
        match version {
            None | Some("") => versions
                .last()
                .ok_or_else(|| RequestError::UnknownModel(name.to_string())),
            Some(wanted) => versions
                .iter()
                .find(|m| m.version == wanted)
                .ok_or_else(|| RequestError::UnknownVersion {
                    model: name.to_string(),
                    version: wanted.to_string(),
                    available: versions
                        .iter()
                        .map(|m| m.version.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
        }
    }

    /// Versions of one model, oldest first.
    pub fn versions(&self, name: &str) -> Vec<String> {
        self.models
            .get(name)
            .map(|v| v.iter().map(|m| m.version.clone()).collect())
            .unwrap_or_default()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values().flatten()
    }
}

/// Numeric versions compare as numbers ("10" after "9"); others as text, after numbers.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        let mut versions = vec!["10", "9", "beta", "1"];
        versions.sort_by(|a, b| version_order(a, b));
        assert_eq!(versions, vec!["1", "9", "10", "beta"]);
    }
}
