//! The prediction cache: a memory tier (moka, weighed by bytes, TinyLFU admission, per-entry TTL)
//! over an optional shared Redis tier, with single flight for identical concurrent misses.
//! Only successful answers are ever stored.

mod flight;
pub mod key;
mod redis;
pub mod value;

use crate::config::CacheConfig;
use crate::error::Error;
use crate::request::{CacheControl, CacheStatus};
use crate::telemetry;
use flight::{Flights, Role};
use key::CacheKey;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use value::CachedValue;

pub struct Cache {
    memory: moka::future::Cache<CacheKey, Arc<CachedValue>>,
    flights: Arc<Flights>,
    shared: Option<Arc<redis::SharedTier>>,
}

/// Lets each entry live as long as its model's TTL.
struct PerModelTtl;

impl moka::Expiry<CacheKey, Arc<CachedValue>> for PerModelTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedValue>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl Cache {
    pub fn new(config: &CacheConfig) -> Cache {
        let memory = moka::future::Cache::builder()
            .max_capacity(config.max_bytes.0)
            .weigher(|_key: &CacheKey, value: &Arc<CachedValue>| value.weight())
            .expire_after(PerModelTtl)
            .support_invalidation_closures()
            .eviction_listener(|_key, _value, cause| {
                if cause.was_evicted() {
                    let reason = match cause {
                        moka::notification::RemovalCause::Expired => "expired",
                        _ => "size",
                    };
                    metrics::counter!(telemetry::CACHE_EVICTIONS, "reason" => reason).increment(1);
                }
            })
            .build();
        let shared = config.redis_url.as_deref().and_then(|url| {
            match redis::SharedTier::new(url, Duration::from_millis(config.redis_timeout_ms)) {
                Ok(tier) => Some(Arc::new(tier)),
                Err(reason) => {
                    tracing::error!(%reason, "cache.redis_url is unusable; the shared tier is off");
                    None
                }
            }
        });
        Cache {
            memory,
            flights: Arc::new(Flights::default()),
            shared,
        }
    }

    /// Answers from the cache when allowed and present; otherwise runs `compute` once for all
    /// identical concurrent callers and stores its success.
    pub async fn serve<F>(
        &self,
        key: CacheKey,
        model: &str,
        ttl: Duration,
        control: CacheControl,
        compute: F,
    ) -> Result<(Arc<CachedValue>, CacheStatus), Error>
    where
        F: Future<Output = Result<CachedValue, Error>> + Send + 'static,
    {
        if control.lookup {
            let started = Instant::now();
            let found = self.lookup(&key, model, ttl).await;
            metrics::histogram!(telemetry::CACHE_LOOKUP_DURATION)
                .record(started.elapsed().as_secs_f64());
            if let Some((value, tier)) = found {
                self.count(model, CacheStatus::Hit, tier);
                return Ok((value, CacheStatus::Hit));
            }
        }
        let (role, receiver) = self.flights.join(key);
        let status = match role {
            Role::Follower => CacheStatus::Coalesced,
            Role::Leader(sender) => {
                let memory = self.memory.clone();
                let flights = self.flights.clone();
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    let outcome = compute.await.map(Arc::new);
                    if let (Ok(value), true) = (&outcome, control.store) {
                        let started = Instant::now();
                        memory.insert(key, value.clone()).await;
                        if let Some(shared) = shared {
                            shared.store(key, value.clone());
                        }
                        metrics::histogram!(telemetry::CACHE_FILL_DURATION)
                            .record(started.elapsed().as_secs_f64());
                    }
                    // Publish before landing: a caller arriving in between finds the value in
                    // memory or joins this flight and still gets the outcome.
                    let _ = sender.send(Some(outcome));
                    flights.land(&key);
                });
                CacheStatus::Miss
            }
        };
        self.count(model, status, "memory");
        match flight::outcome(receiver).await {
            Some(Ok(value)) => Ok((value, status)),
            Some(Err(error)) => Err(error),
            None => Err(Error::Backend(crate::backend::BackendError::Execution(
                "the computation for this request was abandoned".into(),
            ))),
        }
    }

    async fn lookup(
        &self,
        key: &CacheKey,
        model: &str,
        ttl: Duration,
    ) -> Option<(Arc<CachedValue>, &'static str)> {
        if let Some(value) = self.memory.get(key).await {
            return Some((value, "memory"));
        }
        let shared = self.shared.as_ref()?;
        let value = Arc::new(shared.fetch(key, model, ttl).await?);
        self.memory.insert(*key, value.clone()).await;
        Some((value, "redis"))
    }

    fn count(&self, model: &str, status: CacheStatus, tier: &'static str) {
        metrics::counter!(telemetry::CACHE_REQUESTS,
            "model" => model.to_string(), "status" => status.as_str(), "tier" => tier)
        .increment(1);
    }

    /// Records a request that did not use the cache at all.
    pub fn count_bypass(&self, model: &str) {
        self.count(model, CacheStatus::Bypass, "none");
    }

    /// Drops every entry, or one model's, from both tiers. Returns the memory entries removed.
    pub async fn purge(&self, model: Option<&str>) -> u64 {
        self.memory.run_pending_tasks().await;
        let before = self.memory.entry_count();
        match model {
            None => self.memory.invalidate_all(),
            Some(name) => {
                let name: Arc<str> = Arc::from(name);
                let _ = self
                    .memory
                    .invalidate_entries_if(move |_, value| value.model == name);
            }
        }
        self.memory.run_pending_tasks().await;
        if let Some(shared) = &self.shared {
            shared.purge(model).await;
        }
        before.saturating_sub(self.memory.entry_count())
    }

    /// Empties the memory tier alone, leaving the shared tier as it is; lets tests (and an
    /// operator replacing a replica's memory) see what the shared tier holds.
    pub async fn clear_memory_tier(&self) {
        self.memory.invalidate_all();
        self.memory.run_pending_tasks().await;
    }

    /// Publishes the size gauges; called when metrics are scraped.
    pub fn report(&self) {
        metrics::gauge!(telemetry::CACHE_ENTRIES).set(self.memory.entry_count() as f64);
        metrics::gauge!(telemetry::CACHE_BYTES).set(self.memory.weighted_size() as f64);
    }

    pub async fn settle(&self) {
        self.memory.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests;
