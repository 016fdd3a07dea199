//! The shared tier: answers in Redis (one server or a cluster), sealed to their keys, read
//! within the cache's Redis timeout and written in the background. Redis being down, slow or
//! full never turns into an error for a caller: it is a miss, or a write not made.

use super::key::CacheKey;
use super::seal::Seal;
use super::value::{self, CachedValue};
use crate::config::{RedisSecret, RedisUrl};
use crate::fleet::{FleetError, Redis, Role};
use crate::telemetry;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Namespace and layout version of our keys (v2: values sealed, see `seal`).
const PREFIX: &str = "tollgate:v2";
/// Writes in flight at once; a fill that finds them all taken skips its write instead of
/// queueing without bound behind a slow Redis.
const WRITES_IN_FLIGHT: usize = 64;
/// A write or a purge is off the request path and may wait longer than a read.
const WRITE_TIMEOUT_FACTOR: u32 = 5;
const PURGE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct SharedTier {
    redis: Redis,
    seal: Seal,
    timeout: Duration,
    writes: Arc<Semaphore>,
    /// A rejected value is logged once; the counter tells how many followed.
    warned: AtomicBool,
}

impl SharedTier {
    pub fn new(
        url: &RedisUrl,
        secret: Option<&RedisSecret>,
        timeout: Duration,
    ) -> Result<SharedTier, FleetError> {
        Ok(SharedTier {
            redis: Redis::new(url, Role::Cache, timeout)?,
            seal: Seal::new(secret),
            timeout,
            writes: Arc::new(Semaphore::new(WRITES_IN_FLIGHT)),
            warned: AtomicBool::new(false),
        })
    }

    fn redis_key(key: &CacheKey, model: &str) -> String {
        format!("{PREFIX}:{model}:{}", key.to_hex())
    }

    pub async fn fetch(&self, key: &CacheKey, model: &str, ttl: Duration) -> Option<CachedValue> {
        let redis_key = Self::redis_key(key, model);
        let mut get = redis::cmd("GET");
        get.arg(&redis_key);
        let stored: Option<Vec<u8>> = self.redis.query("get", &get).await.ok()?;
        let stored = Bytes::from(stored?);
        let payload = match self.seal.open(redis_key.as_bytes(), stored) {
            Ok(payload) => payload,
            Err(rejected) => {
                self.rejected(rejected.as_str(), &redis_key);
                return None;
            }
        };
        let decoded = value::decode(payload, Arc::from(model), ttl);
        if decoded.is_none() {
            self.rejected("undecodable", &redis_key);
        }
        decoded
    }

    fn rejected(&self, reason: &'static str, redis_key: &str) {
        metrics::counter!(telemetry::CACHE_REDIS_REJECTED, "reason" => reason).increment(1);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(reason, key = redis_key, "a value in Redis failed its check and was served as a miss (logged once; see tollgate_cache_redis_rejected_total)");
        }
    }

    /// Writes in the background: a fill never waits for the shared tier.
    pub fn store(self: &Arc<Self>, key: CacheKey, value: Arc<CachedValue>) {
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            metrics::counter!(telemetry::CACHE_REDIS_SKIPPED, "reason" => "backlog").increment(1);
            return;
        };
        let tier = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let redis_key = Self::redis_key(&key, &value.model);
            let sealed = tier.seal.seal(redis_key.as_bytes(), &value::encode(&value));
            let ttl_ms = value.ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
            let mut set = redis::cmd("SET");
            set.arg(&redis_key).arg(sealed).arg("PX").arg(ttl_ms);
            let limit = tier.timeout * WRITE_TIMEOUT_FACTOR;
            match tier.redis.query_within::<()>("set", limit, &set).await {
                Ok(()) => {}
                // Alive but refusing (full under `noeviction`, say): a write not made.
                Err(FleetError::Refused(reason)) => {
                    metrics::counter!(telemetry::CACHE_REDIS_SKIPPED, "reason" => "refused")
                        .increment(1);
                    tracing::debug!(%reason, "Redis refused a cache write");
                }
                Err(FleetError::Unavailable(_)) => {}
            }
        });
    }

    pub async fn purge(&self, model: Option<&str>) {
        let pattern = format!("{PREFIX}:{}:*", model.unwrap_or("*"));
        if let Err(error) = self.redis.delete_matching(&pattern, PURGE_TIMEOUT).await {
            tracing::warn!(%error, "purging the Redis tier did not finish");
        }
    }
}
