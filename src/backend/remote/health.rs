//! The health watcher of one model's upstreams: asks every endpoint for the model's readiness
//! at a fixed interval, so an endpoint that is down or not ready stops receiving requests and
//! our own readiness follows the upstreams'. It holds the upstreams weakly and ends when the
//! model is dropped.

use super::Upstream;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::JoinSet;

/// A readiness check slower than this counts as not ready.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn watch(upstream: Weak<Upstream>) {
    loop {
        let Some(strong) = upstream.upgrade() else {
            return;
        };
        let interval = strong.health_interval;
        check_all(&strong).await;
        drop(strong);
        tokio::time::sleep(interval).await;
    }
}

async fn check_all(upstream: &Arc<Upstream>) {
    let mut checks = JoinSet::new();
    for index in 0..upstream.endpoints.len() {
        let upstream = upstream.clone();
        checks.spawn(async move { check(&upstream, index).await });
    }
    while checks.join_next().await.is_some() {}
}

async fn check(upstream: &Upstream, index: usize) {
    let endpoint = &upstream.endpoints[index];
    let timeout = CHECK_TIMEOUT.min(upstream.timeout);
    let target = &upstream.target;
    let ready = match tokio::time::timeout(timeout, endpoint.transport.ready(target)).await {
        Ok(Ok(ready)) => ready,
        Ok(Err(error)) => {
            tracing::debug!(upstream = %endpoint.url.label, %error, "health check failed");
            false
        }
        Err(_) => false,
    };
    // Refreshes the breaker gauge too: open turns half-open by time alone.
    endpoint.breaker_state();
    if !endpoint.set_healthy(ready) {
        return;
    }
    if !ready {
        tracing::warn!(model = %upstream.model, upstream = %endpoint.url.label,
            "upstream is not ready; sending it nothing until it is");
        return;
    }
    tracing::info!(model = %upstream.model, upstream = %endpoint.url.label, "upstream is ready again");
    // A restarted upstream may serve a different model; requests are still checked against the
    // start-up spec, so say so loudly rather than fail them one by one.
    if let Ok(Ok(metadata)) =
        tokio::time::timeout(timeout, endpoint.transport.metadata(target)).await
    {
        if metadata.spec != upstream.spec {
            tracing::warn!(model = %upstream.model, upstream = %endpoint.url.label,
                "the upstream's model metadata changed since start-up; restart Tollgate to serve the new inputs and outputs");
        }
    }
}
