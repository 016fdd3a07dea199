//! `[[models.variants]]`: right-sized alternatives of a model (quantised, distilled, ...) served
//! beside it. A variant is its parent's entry with its own file (or upstream server), device,
//! instances, batching and price; it runs as a model of its own named `parent:variant`, so
//! that it is batched, cached, counted and billed apart from its parent.

use super::{invalid, ConfigError, Device, ModelConfig, UpstreamUrl};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    pub name: String,
    /// The variant's `.onnx` file, or
    pub path: Option<PathBuf>,
    /// a KServe V2 server that runs it (with the parent's upstream settings), under
    /// `upstream_model` (default: the parent's name).
    pub upstream: Option<UpstreamUrl>,
    pub upstream_model: Option<String>,
    pub device: Option<Device>,
    pub instances: Option<usize>,
    pub max_batch_size: Option<usize>,
    pub max_queue_delay_us: Option<u64>,
    pub price_per_hour: Option<f64>,
}

/// The name a response gives to its primary's answer.
pub const PRIMARY_VARIANT: &str = "primary";

impl VariantConfig {
    /// The `[[models]]` entry the variant runs as, from its parent's (already validated).
    pub fn entry(&self, parent: &ModelConfig) -> ModelConfig {
        let upstream = self.upstream.clone();
        ModelConfig {
            name: format!("{}:{}", parent.name, self.name),
            path: self.path.clone(),
            upstreams: upstream.iter().cloned().collect(),
            upstream_model: upstream.as_ref().map(|_| {
                self.upstream_model
                    .clone()
                    .unwrap_or_else(|| parent.name.clone())
            }),
            upstream,
            device: self.device.unwrap_or(parent.device),
            instances: self.instances.unwrap_or(1),
            min_instances: None,
            max_instances: None,
            max_batch_size: self.max_batch_size.unwrap_or(parent.max_batch_size),
            max_queue_delay_us: self.max_queue_delay_us.unwrap_or(parent.max_queue_delay_us),
            // An upstream variant runs on someone else's device: it costs what is set for it.
            price_per_hour: match self.path {
                Some(_) => self.price_per_hour.or(parent.price_per_hour),
                None => self.price_per_hour,
            },
            variants: Vec::new(),
            shadow_sample_ratio: 0.0,
            ..parent.clone()
        }
    }
}

/// Checks a model's variants and makes their paths absolute (as the model's own are).
pub(super) fn validate(
    parent: &mut ModelConfig,
    index: usize,
    base_dir: &std::path::Path,
) -> Result<(), ConfigError> {
    if !parent.variants.is_empty() && parent.path.is_none() {
        return Err(invalid(
            format!("models[{index}].variants"),
            "variants are served beside a local model (`path`) for now",
        ));
    }
    let mut seen = Vec::new();
    for (v, variant) in parent.variants.iter_mut().enumerate() {
        let key = |field: &str| format!("models[{index}].variants[{v}].{field}");
        let name = variant.name.as_str();
        if name.is_empty() || name == PRIMARY_VARIANT || name.contains([':', '/']) {
            return Err(invalid(
                key("name"),
                "must be non-empty, not `primary`, and contain no ':' or '/'",
            ));
        }
        if seen.contains(&name.to_string()) {
            return Err(invalid(key("name"), format!("`{name}` is named twice")));
        }
        seen.push(name.to_string());
        match (&mut variant.path, &variant.upstream) {
            (Some(path), None) => {
                if !path.is_absolute() {
                    *path = base_dir.join(&*path);
                }
                if !path.is_file() {
                    let shown = path.display();
                    return Err(invalid(key("path"), format!("no model file at {shown}")));
                }
            }
            (None, Some(_)) => {}
            _ => {
                return Err(invalid(
                    key("path"),
                    "a variant has either a `path` or an `upstream`",
                ))
            }
        }
        if variant.instances.is_some_and(|n| !(1..=64).contains(&n)) {
            return Err(invalid(key("instances"), "must be between 1 and 64"));
        }
        if variant
            .price_per_hour
            .is_some_and(|p| !(p.is_finite() && p >= 0.0))
        {
            return Err(invalid(key("price_per_hour"), "must be a price >= 0"));
        }
    }
    Ok(())
}
