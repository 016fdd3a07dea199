//! The prediction cache: a memory tier (moka, weighed by bytes, TinyLFU admission, per-entry TTL)
//! over an optional shared Redis tier, with single flight for identical concurrent misses.
//! Only successful answers are ever stored.

mod admission;
mod bits;
mod flight;
mod hasher;
pub mod key;
mod seal;
mod shared;
pub mod value;

use crate::config::CacheConfig;
use crate::request::{CacheControl, CacheStatus};
use crate::telemetry;
use admission::Doorkeeper;
use flight::{Detachable, Flights, Role};
use hasher::KeyHasher;
use key::CacheKey;
use metrics::{Counter, Histogram};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use value::CachedValue;

/// A computation that was lost before it had an outcome (at shutdown): what its waiters get.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the computation for this request was abandoned (the gateway is stopping)")]
pub struct Abandoned;

/// Shared by the request path and the flights it starts (a flight can outlive its caller), so
/// it lives behind an `Arc`. `E` is the error of the computations it runs, which it only
/// hands back to their callers (it never stores one).
pub struct Cache<E> {
    memory: moka::future::Cache<CacheKey, Arc<CachedValue>, KeyHasher>,
    max_bytes: u64,
    doorkeeper: Doorkeeper,
    flights: Arc<Flights<E>>,
    shared: Option<Arc<shared::SharedTier>>,
    lookup_duration: Histogram,
    fill_duration: Histogram,
}

/// What the cache knows of one model: the name its values carry (purges go by it), the TTL of
/// its entries, when its answers are stored, and its counters, registered once at load rather
/// than looked up per request.
#[derive(Clone)]
pub struct ModelCache {
    pub name: String,
    pub ttl: Duration,
    /// False under `min_uses = 2`: an answer is stored only once the doorkeeper has seen its key.
    store_first_use: bool,
    series: CacheSeries,
}

impl ModelCache {
    /// Needs the metrics recorder installed first, or the counters record nothing.
    pub fn new(name: &str, ttl: Duration) -> ModelCache {
        ModelCache {
            name: name.to_string(),
            ttl,
            store_first_use: true,
            series: CacheSeries::new(name),
        }
    }

    /// `min_uses` as validated by the config: 1 stores every answer, 2 from an input's second
    /// computation on.
    pub fn with_min_uses(mut self, min_uses: u8) -> ModelCache {
        self.store_first_use = min_uses <= 1;
        self
    }
}

/// `tollgate_cache_requests_total` of one model, one counter per (status, tier) that occurs.
#[derive(Clone)]
struct CacheSeries {
    hit_memory: Counter,
    hit_redis: Counter,
    miss: Counter,
    coalesced: Counter,
    bypass: Counter,
    /// Answers not stored because their key was new to the doorkeeper: the memory tier was full,
    /// or the model stores only from an input's second computation.
    not_admitted: Counter,
    /// Hits a front end found by their key alone (`Cache::recall`), a part of `hit_memory`.
    recalled: Counter,
}

impl CacheSeries {
    fn new(model: &str) -> CacheSeries {
        let counter = |status: CacheStatus, tier: &'static str| {
            metrics::counter!(telemetry::CACHE_REQUESTS,
                "model" => model.to_string(), "status" => status.as_str(), "tier" => tier)
        };
        CacheSeries {
            hit_memory: counter(CacheStatus::Hit, MEMORY),
            hit_redis: counter(CacheStatus::Hit, REDIS),
            miss: counter(CacheStatus::Miss, MEMORY),
            coalesced: counter(CacheStatus::Coalesced, MEMORY),
            bypass: counter(CacheStatus::Bypass, "none"),
            not_admitted: metrics::counter!(telemetry::CACHE_NOT_ADMITTED,
                "model" => model.to_string()),
            recalled: metrics::counter!(telemetry::CACHE_RECALLED, "model" => model.to_string()),
        }
    }

    /// A request that used the cache; `tier` says where a hit was found (misses and coalesced
    /// requests count under the memory tier, where their flight lives).
    fn count(&self, status: CacheStatus, tier: Tier) {
        let counter = match (status, tier) {
            (CacheStatus::Hit, Tier::Memory) => &self.hit_memory,
            (CacheStatus::Hit, Tier::Redis) => &self.hit_redis,
            (CacheStatus::Miss, _) => &self.miss,
            (CacheStatus::Coalesced, _) => &self.coalesced,
            (CacheStatus::Bypass, _) => &self.bypass,
        };
        counter.increment(1);
    }
}

const MEMORY: &str = "memory";
const REDIS: &str = "redis";

/// Where a hit was found.
#[derive(Clone, Copy)]
enum Tier {
    Memory,
    Redis,
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

impl<E> Cache<E>
where
    E: Clone + From<Abandoned> + Send + Sync + 'static,
{
    pub fn new(config: &CacheConfig) -> Cache<E> {
        // Registered once: a full cache evicts on nearly every miss.
        let expired = metrics::counter!(telemetry::CACHE_EVICTIONS, "reason" => "expired");
        let evicted_for_size = metrics::counter!(telemetry::CACHE_EVICTIONS, "reason" => "size");
        let memory = moka::future::Cache::builder()
            .max_capacity(config.max_bytes.0)
            .weigher(|_key: &CacheKey, value: &Arc<CachedValue>| value.weight())
            .expire_after(PerModelTtl)
            .support_invalidation_closures()
            .eviction_listener(move |_key, _value, cause| {
                if cause.was_evicted() {
                    match cause {
                        moka::notification::RemovalCause::Expired => expired.increment(1),
                        _ => evicted_for_size.increment(1),
                    }
                }
            })
            .build_with_hasher(KeyHasher::new());
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let secret = config.redis_secret.as_ref();
        // The URL was checked with the config; what fails here cannot be fixed by waiting.
        let shared = config.redis_url.as_ref().and_then(|url| {
            match shared::SharedTier::new(url, secret, timeout) {
                Ok(tier) => Some(Arc::new(tier)),
                Err(reason) => {
                    tracing::error!(%reason, "cache.redis_url is unusable; the shared tier is off");
                    None
                }
            }
        });
        Cache {
            memory,
            max_bytes: config.max_bytes.0,
            doorkeeper: Doorkeeper::for_capacity(config.max_bytes.0),
            flights: Arc::new(Flights::default()),
            shared,
            lookup_duration: metrics::histogram!(telemetry::CACHE_LOOKUP_DURATION),
            fill_duration: metrics::histogram!(telemetry::CACHE_FILL_DURATION),
        }
    }

    /// Answers from the cache when allowed and present; otherwise runs `compute` once for all
    /// identical concurrent callers and stores its success.
    pub async fn serve<F>(
        self: &Arc<Self>,
        key: CacheKey,
        model: &ModelCache,
        control: CacheControl,
        compute: F,
    ) -> Result<(Arc<CachedValue>, CacheStatus), E>
    where
        F: Future<Output = Result<CachedValue, E>> + Send + 'static,
    {
        if control.lookup {
            let started = Instant::now();
            let found = self.lookup(&key, model).await;
            self.lookup_duration.record(started.elapsed().as_secs_f64());
            if let Some((value, tier)) = found {
                model.series.count(CacheStatus::Hit, tier);
                return Ok((value, CacheStatus::Hit));
            }
        }
        let (outcome, status) = match self.flights.join(key) {
            Role::Follower(flight) => (flight.outcome().await, CacheStatus::Coalesced),
            Role::Leader(publisher) => {
                let cache = self.clone();
                let not_admitted = model.series.not_admitted.clone();
                let store_first_use = model.store_first_use;
                // The leader runs the flight itself: a miss costs no task of its own and no
                // hand-off back. Should the leader go away first, the flight moves to a task
                // (see `Detachable`), so the followers still get their answer.
                let outcome = Detachable::new(async move {
                    let outcome = compute.await.map(Arc::new);
                    if let (Ok(value), true) = (&outcome, control.store) {
                        cache.fill(key, value, store_first_use, &not_admitted).await;
                    }
                    // Published after the fill: a caller arriving in between finds the value
                    // in memory or joins this flight and still gets the outcome.
                    publisher.publish(&outcome);
                    outcome
                })
                .await;
                (Some(outcome), CacheStatus::Miss)
            }
        };
        model.series.count(status, Tier::Memory);
        match outcome {
            Some(Ok(value)) => Ok((value, status)),
            Some(Err(error)) => Err(error),
            None => Err(E::from(Abandoned)),
        }
    }

    /// Stores a computed answer: in memory if admitted, and in the shared tier, whose own
    /// memory policy decides there. Under `min_uses = 2` a first computation goes to neither.
    async fn fill(
        self: &Arc<Self>,
        key: CacheKey,
        value: &Arc<CachedValue>,
        store_first_use: bool,
        not_admitted: &Counter,
    ) {
        // Room left means no eviction and nothing for admission to weigh, so the doorkeeper is
        // asked only when the insert would push something out, or when the model wants a
        // second sighting whatever the room.
        let room = store_first_use
            && self.memory.weighted_size() + u64::from(value.weight()) <= self.max_bytes;
        if room || self.doorkeeper.seen_before(&key) {
            // Timed only when something is stored: an answer turned away takes a few bit tests.
            let started = Instant::now();
            self.memory.insert(key, value.clone()).await;
            self.fill_duration.record(started.elapsed().as_secs_f64());
        } else {
            not_admitted.increment(1);
            if !store_first_use {
                return;
            }
        }
        // The shared tier's write runs in the background; its time is not the request's.
        if let Some(shared) = &self.shared {
            shared.store(key, value.clone());
        }
    }

    async fn lookup(
        self: &Arc<Self>,
        key: &CacheKey,
        model: &ModelCache,
    ) -> Option<(Arc<CachedValue>, Tier)> {
        if let Some(value) = self.memory.get(key).await {
            return Some((value, Tier::Memory));
        }
        let shared = self.shared.as_ref()?;
        let value = Arc::new(shared.fetch(key, &model.name, model.ttl).await?);
        self.memory.insert(*key, value.clone()).await;
        Some((value, Tier::Redis))
    }

    /// The memory tier's answer for `key`, if it holds one, counted as a hit of `model`:
    /// a front end that knows a request's key without decoding it asks here first. A miss
    /// counts nothing, since the caller then takes the usual path, whose lookup counts it.
    pub async fn recall(&self, key: &CacheKey, model: &ModelCache) -> Option<Arc<CachedValue>> {
        let started = Instant::now();
        let value = self.memory.get(key).await?;
        self.lookup_duration.record(started.elapsed().as_secs_f64());
        model.series.count(CacheStatus::Hit, Tier::Memory);
        model.series.recalled.increment(1);
        Some(value)
    }

    /// Records a request that did not use the cache at all.
    pub fn count_bypass(&self, model: &ModelCache) {
        model.series.bypass.increment(1);
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
