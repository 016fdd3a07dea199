//! Start-up of an upstream model: wait until some upstream describes the model, then build its
//! endpoints, start the health watcher and hand out the engine its instances share. A model no
//! upstream describes in time is not an error here: the model layer keeps asking (`describe`).
//!
//! Model loading is synchronous and runs on a runtime thread, yet the metadata needs network
//! I/O. It is fetched on a helper thread with its own small runtime (and throwaway connections),
//! and on a multi-threaded runtime the caller steps aside with `block_in_place`, so an upstream
//! served by the same runtime (as in the tests) can still answer.

use super::breaker::Breaker;
use super::endpoint::Endpoint;
use super::engine::RemoteEngine;
use super::metadata::{self, Metadata};
use super::transport::Transport;
use super::{health, Upstream, UpstreamSettings};
use crate::backend::{BackendError, Engines};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::time::Instant;

/// Pause between rounds of asking every upstream for metadata at start-up.
const STARTUP_RETRY: Duration = Duration::from_millis(500);

/// A started upstream model: its shared state and the engine its instance tasks share.
pub struct Started {
    pub upstream: Arc<Upstream>,
    pub engines: Engines,
}

/// What one upstream said of the model: enough to serve it.
pub struct Description(Metadata);

/// Waits (at most `startup_wait`) for some upstream to describe the model, from synchronous
/// model loading. `Err` says why none did.
pub fn describe_blocking(settings: &UpstreamSettings) -> Result<Description, String> {
    fetch_metadata(settings).map(Description)
}

/// Asks every upstream once, in turn, for the model's description.
pub async fn describe(settings: &UpstreamSettings) -> Result<Description, String> {
    let once = UpstreamSettings {
        startup_wait: Duration::ZERO,
        ..settings.clone()
    };
    first_description(&once).await.map(Description)
}

/// Serves the model as `description` says. Must be called inside the tokio runtime that will
/// serve the model.
pub fn start(
    settings: &UpstreamSettings,
    description: Description,
    instances: usize,
) -> Result<Started, BackendError> {
    let load_error = |reason: String| BackendError::Load {
        model: settings.model.clone(),
        reason,
    };
    let runtime = Handle::try_current().map_err(|_| {
        load_error("upstream models must be started inside the tokio runtime".into())
    })?;
    let Description(metadata) = description;
    let mut endpoints = Vec::with_capacity(settings.urls.len());
    for url in &settings.urls {
        let transport = Transport::new(url, settings).map_err(load_error)?;
        let breaker = Breaker::new(settings.breaker_failures, settings.breaker_cooldown);
        endpoints.push(Endpoint::new(
            &settings.model,
            url.clone(),
            transport,
            breaker,
        ));
    }
    let upstream = Arc::new(Upstream {
        model: settings.model.clone(),
        target: settings.target.clone(),
        endpoints,
        outputs: metadata
            .spec
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .collect(),
        spec: metadata.spec,
        platform: metadata.platform,
        binary: settings.binary,
        timeout: settings.timeout,
        retries: settings.retries,
        budget: Default::default(),
        rotation: AtomicUsize::new(0),
        health_interval: settings.health_interval,
        changed: Default::default(),
    });
    runtime.spawn(health::watch(Arc::downgrade(&upstream)));
    let engines = Engines::Tasks {
        engine: Arc::new(RemoteEngine::new(upstream.clone())),
        instances: instances.max(1),
    };
    Ok(Started { upstream, engines })
}

fn fetch_metadata(settings: &UpstreamSettings) -> Result<Metadata, String> {
    let fetch = || -> Result<Metadata, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime to reach the upstream: {e}"))?;
        runtime.block_on(first_description(settings))
    };
    let on_helper = || {
        std::thread::scope(|scope| scope.spawn(fetch).join())
            .unwrap_or_else(|_| Err("the metadata fetch panicked".into()))
    };
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(on_helper)
        }
        _ => on_helper(),
    }
}

/// Asks each upstream in turn until one describes the model or `startup_wait` runs out.
async fn first_description(settings: &UpstreamSettings) -> Result<Metadata, String> {
    let transports = settings
        .urls
        .iter()
        .map(|url| Ok((url.label.as_str(), Transport::new(url, settings)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let deadline = Instant::now() + settings.startup_wait;
    let mut announced = false;
    loop {
        let mut failures = Vec::with_capacity(transports.len());
        for (label, transport) in &transports {
            match tokio::time::timeout(settings.timeout, transport.metadata(&settings.target)).await
            {
                Ok(Ok(description)) => {
                    return metadata::check(description).map_err(|why| {
                        format!("upstream {label} model `{}`: {why}", settings.target.model)
                    })
                }
                Ok(Err(error)) => failures.push(format!("{label} {error}")),
                Err(_) => failures.push(format!(
                    "{label} did not answer within {} ms",
                    settings.timeout.as_millis()
                )),
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "no upstream described model `{}` within upstream_startup_wait_ms ({} ms): {}",
                settings.target.model,
                settings.startup_wait.as_millis(),
                failures.join("; ")
            ));
        }
        if !announced && !settings.startup_wait.is_zero() {
            // Said once, with the reason, so a typo in a URL or model name is visible at once.
            tracing::warn!(model = %settings.model, failures = %failures.join("; "),
                "waiting for an upstream to describe the model");
            announced = true;
        }
        tokio::time::sleep(STARTUP_RETRY.min(deadline - now)).await;
    }
}
