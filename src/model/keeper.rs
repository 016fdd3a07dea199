//! The keeper of one upstream model: while no upstream describes it, asks again with backoff
//! (the model answers 503 with the latest reason meanwhile); once described, serves it; when
//! an upstream back from an outage describes it otherwise, serves the new description in place
//! of the old (requests in flight finish on the old one).

use super::load::{self, upstream_settings};
use super::Models;
use crate::backend::remote::{self, Upstream};
use crate::config::{Config, ModelConfig};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The first pause between descriptions asked for; it doubles up to `LONGEST_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// How often a keeper waiting for a change checks that its model is still served.
const WATCH_TICK: Duration = Duration::from_secs(2);

pub(super) struct Keeper {
    pub(super) models: Weak<Models>,
    pub(super) config: Arc<Config>,
    pub(super) model_config: ModelConfig,
    /// The upstream of the model as served now; `None` while no upstream has described it.
    pub(super) serving: Option<Arc<Upstream>>,
}

pub(super) async fn keep(keeper: Keeper) {
    let Keeper {
        models,
        config,
        model_config,
        mut serving,
    } = keeper;
    let name = model_config.name.as_str();
    let settings = upstream_settings(&model_config);
    loop {
        if let Some(upstream) = serving.take() {
            if !changed(Arc::downgrade(&upstream), &models).await {
                return;
            }
        }
        let mut pause = FIRST_PAUSE;
        let loaded = loop {
            if models.strong_count() == 0 {
                return;
            }
            let failure = match remote::describe(&settings).await {
                Ok(description) => {
                    match load::start_upstream(&model_config, &settings, description) {
                        Ok(loaded) => break loaded,
                        Err(error) => error.to_string(),
                    }
                }
                Err(reason) => reason,
            };
            let Some(strong) = models.upgrade() else {
                return;
            };
            // Requests asking meanwhile are told the latest reason.
            if strong.snapshot().resolve(name, None).is_err() {
                strong.change(|registry| registry.with_pending(name, failure.clone()));
            }
            tracing::debug!(model = %name, reason = %failure, "no upstream describes the model yet");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        };
        let Some(strong) = models.upgrade() else {
            return;
        };
        serving = loaded.upstream.clone();
        let model = load::assemble(&config, &model_config, loaded);
        strong.change(|registry| registry.with(model));
        tracing::info!(model = %name, "an upstream describes the model; serving it");
    }
}

/// Waits until the served upstream says its description changed (true), or until the model is
/// no longer served by it (false: the keeper ends).
async fn changed(upstream: Weak<Upstream>, models: &Weak<Models>) -> bool {
    loop {
        let Some(strong) = upstream.upgrade() else {
            return false;
        };
        if models.strong_count() == 0 {
            return false;
        }
        tokio::select! {
            _ = strong.changed() => return true,
            _ = tokio::time::sleep(WATCH_TICK) => {}
        }
    }
}
