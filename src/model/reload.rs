//! Live reload of the served models from a new config: a model whose entry (and the global
//! keys it is built from) did not change is kept as it is, with its batcher, cache entries and
//! statistics; an added or changed local model is loaded before anything is swapped, so a
//! model that does not load leaves everything as it was; an added or changed upstream model
//! is handed to a keeper, which serves it once an upstream describes it (a changed one keeps
//! its old description serving meanwhile); a removed model stops being served. The new set
//! replaces the old in one swap: requests in flight finish on the models they found.

use super::keeper::{self, Keeper};
use super::load::local_model;
use super::{Model, Models};
use crate::backend::BackendError;
use crate::config::{Config, ModelConfig};
use std::sync::Arc;

/// What a reload did, by model (`name:version`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

/// Whether `model` can keep serving `entry` under `config`.
fn same(model: &Model, entry: &ModelConfig, old: &Config, new: &Config) -> bool {
    model.config == *entry
        && old.cache.enabled == new.cache.enabled
        && old.cache.ttl_seconds == new.cache.ttl_seconds
        && old.cache.min_uses == new.cache.min_uses
        && old.price_per_hour(entry.device()) == new.price_per_hour(entry.device())
}

/// Serves `new`'s models in place of `old`'s. Blocks while local models load: call it where
/// blocking is allowed (`spawn_blocking`), inside the runtime.
pub fn reload(models: &Arc<Models>, old: &Config, new: &Config) -> Result<Reloaded, BackendError> {
    let label = |m: &ModelConfig| format!("{}:{}", m.name, m.version);
    let before = models.snapshot().clone();
    let mut report = Reloaded::default();
    // Loaded first, swapped in together: a model that fails to load changes nothing.
    let mut built: Vec<Model> = Vec::new();
    let mut kept: Vec<&ModelConfig> = Vec::new();
    let mut described_later: Vec<ModelConfig> = Vec::new();
    for entry in &new.models {
        let served = before.find(&entry.name, &entry.version);
        match served {
            Some(model) if same(model, entry, old, new) => {
                kept.push(entry);
                report.unchanged.push(label(entry));
                continue;
            }
            Some(_) => report.changed.push(label(entry)),
            None => report.added.push(label(entry)),
        }
        match &entry.path {
            Some(path) => built.push(local_model(new, entry, path)?),
            None => described_later.push(entry.clone()),
        }
    }
    for model in before.all() {
        let still = new
            .models
            .iter()
            .any(|e| e.name == model.name && e.version == model.version);
        if !still {
            report
                .removed
                .push(format!("{}:{}", model.name, model.version));
        }
    }
    let pending: Vec<(String, bool)> = described_later
        .iter()
        .map(|e| (e.name.clone(), before.find(&e.name, &e.version).is_some()))
        .collect();
    models.change(|now| {
        let mut next = super::Registry::default();
        // Kept models as they are now (a keeper may have replaced one since the snapshot).
        for entry in &kept {
            if let Some(model) = now.find(&entry.name, &entry.version) {
                next.insert_shared(model.clone());
            }
        }
        // A changed upstream model keeps its old description until its keeper has the new.
        for entry in &described_later {
            if let Some(model) = now.find(&entry.name, &entry.version) {
                next.insert_shared(model.clone());
            }
        }
        for model in built {
            next.insert(model);
        }
        for (name, served) in &pending {
            if !served {
                next = next.with_pending(name, "waiting for an upstream to describe it".into());
            }
        }
        next
    });
    let config = Arc::new(new.clone());
    for model_config in described_later {
        tokio::spawn(keeper::keep(Keeper {
            models: Arc::downgrade(models),
            config: config.clone(),
            model_config,
            serving: None,
        }));
    }
    Ok(report)
}
