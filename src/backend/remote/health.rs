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

/// Every this many rounds a ready endpoint is also asked for the model's description: an
/// upstream replaced faster than a round is never seen down.
const DESCRIBE_EVERY: u64 = 10;

pub(super) async fn watch(upstream: Weak<Upstream>) {
    for round in 1u64.. {
        let Some(strong) = upstream.upgrade() else {
            return;
        };
        let interval = strong.health_interval;
        check_all(&strong, round % DESCRIBE_EVERY == 0).await;
        drop(strong);
        tokio::time::sleep(interval).await;
    }
}

async fn check_all(upstream: &Arc<Upstream>, describe: bool) {
    let mut checks = JoinSet::new();
    for index in 0..upstream.endpoints.len() {
        let upstream = upstream.clone();
        checks.spawn(async move { check(&upstream, index, describe).await });
    }
    while checks.join_next().await.is_some() {}
}

async fn check(upstream: &Upstream, index: usize, describe: bool) {
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
    let turned = endpoint.set_healthy(ready);
    if !ready {
        if turned {
            tracing::warn!(model = %upstream.model, upstream = %endpoint.url.label,
                "upstream is not ready; sending it nothing until it is");
        }
        return;
    }
    if turned {
        tracing::info!(model = %upstream.model, upstream = %endpoint.url.label, "upstream is ready again");
    } else if !describe {
        return;
    }
    // A restarted upstream may serve a different model: the model layer then describes it
    // again and serves the new inputs and outputs instead of failing requests one by one.
    if let Ok(Ok(metadata)) =
        tokio::time::timeout(timeout, endpoint.transport.metadata(target)).await
    {
        if metadata.spec != upstream.spec {
            tracing::warn!(model = %upstream.model, upstream = %endpoint.url.label,
                "the upstream describes the model differently now; serving the new description");
            upstream.changed.notify_one();
        }
    }
}
