//! The served models by name and version, swapped whole when a model comes, changes or goes,
//! so a request sees one consistent set and in-flight requests finish on the models they found.

use super::{Model, RequestError};
use crate::telemetry;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Models by name, each with its versions, newest last.
#[derive(Default, Clone)]
pub struct Registry {
    models: HashMap<String, Vec<Arc<Model>>>,
    /// Upstream models no upstream has described yet, with the latest reason.
    pending: HashMap<String, String>,
}

impl Registry {
    pub fn insert(&mut self, model: Model) {
        let versions = self.models.entry(model.name.clone()).or_default();
        versions.push(Arc::new(model));
        versions.sort_by(|a, b| version_order(&a.version, &b.version));
    }

    /// This registry with `model` in place of the same name and version (if any), no longer
    /// pending.
    pub fn with(&self, model: Model) -> Registry {
        let mut next = self.clone();
        next.pending.remove(&model.name);
        if let Some(versions) = next.models.get_mut(&model.name) {
            versions.retain(|m| m.version != model.version);
        }
        next.insert(model);
        next
    }

    /// The model served under exactly this name and version.
    pub fn find(&self, name: &str, version: &str) -> Option<&Arc<Model>> {
        self.models.get(name)?.iter().find(|m| m.version == version)
    }

    /// Adds a model already shared (one kept across a reload).
    pub fn insert_shared(&mut self, model: Arc<Model>) {
        let versions = self.models.entry(model.name.clone()).or_default();
        versions.push(model);
        versions.sort_by(|a, b| version_order(&a.version, &b.version));
    }

    /// This registry with `name` waiting for its description, for `reason`.
    pub fn with_pending(&self, name: &str, reason: String) -> Registry {
        let mut next = self.clone();
        next.pending.insert(name.to_string(), reason);
        next
    }

    pub fn resolve(&self, name: &str, version: Option<&str>) -> Result<&Arc<Model>, RequestError> {
        let Some(versions) = self.models.get(name) else {
            return Err(match self.pending.get(name) {
                Some(reason) => RequestError::NotReady {
                    model: name.to_string(),
                    reason: reason.clone(),
                },
                None => RequestError::UnknownModel(name.to_string()),
            });
        };
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

    /// Sets each model's readiness and loaded gauges. They are states, not events, so they are
    /// read at each scrape: pending models are not ready, and a local model is loaded while
    /// any instance holds its session.
    pub fn report(&self) {
        let gauge = |name: &'static str, model: &str, on: bool| {
            metrics::gauge!(name, "model" => model.to_string()).set(if on { 1.0 } else { 0.0 });
        };
        for (name, versions) in &self.models {
            gauge(
                telemetry::MODEL_READY,
                name,
                versions.iter().any(|m| m.is_ready()),
            );
            if versions.iter().all(|m| m.upstream.is_none()) {
                let loaded = versions
                    .iter()
                    .any(|m| m.batcher.presences().iter().any(|p| p.is_loaded()));
                gauge(telemetry::MODEL_LOADED, name, loaded);
            }
        }
        for name in self.pending.keys() {
            gauge(telemetry::MODEL_READY, name, false);
        }
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

/// The registry requests read now. Readers take a snapshot without locking; writers (the
/// model keepers, a reload) swap in a whole new one, one writer at a time.
pub struct Models {
    current: ArcSwap<Registry>,
    writer: Mutex<()>,
}

impl Models {
    pub fn new(registry: Registry) -> Models {
        Models {
            current: ArcSwap::from_pointee(registry),
            writer: Mutex::new(()),
        }
    }

    /// The registry as it is now, for a moment: take what is needed out of it (an
    /// `Arc<Model>`), rather than hold it across an await.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Registry>> {
        self.current.load()
    }

    /// Replaces the registry with `change` of the current one.
    pub fn change(&self, change: impl FnOnce(&Registry) -> Registry) {
        let _one_writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let next = change(&self.current.load());
        self.current.store(Arc::new(next));
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
