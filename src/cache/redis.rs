//! The shared tier: a small Redis client (RESP2 over a pool of TCP connections) behind a
//! circuit breaker. Redis being down or slow costs a request at most `timeout`, and nothing at
//! all while the breaker is open; it never turns into an error for the caller.

use super::key::CacheKey;
use super::value::{self, CachedValue};
use crate::telemetry;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// Consecutive failures that open the breaker, and how long it then stays open.
const FAILURES_TO_OPEN: u32 = 3;
const OPEN_FOR: Duration = Duration::from_secs(5);
const POOL_SIZE: usize = 16;
/// Values beyond this are refused on read: a corrupt length must not allocate gigabytes.
const MAX_VALUE_BYTES: usize = 512 << 20;
/// Namespace and layout version of our keys.
const PREFIX: &str = "tollgate:v1";

type Connection = BufStream<TcpStream>;

pub struct SharedTier {
    address: String,
    timeout: Duration,
    pool: Mutex<Vec<Connection>>,
    breaker: Breaker,
}

#[derive(Debug)]
enum Reply {
    Nil,
    Simple,
    Integer,
    Bulk(Bytes),
    Array(Vec<Reply>),
}

impl SharedTier {
    pub fn new(url: &str, timeout: Duration) -> Result<SharedTier, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("`{url}` does not start with redis://"))?;
        let address = rest.split('/').next().unwrap_or(rest);
        if address.is_empty() || address.contains('@') {
            return Err(format!("`{url}`: only redis://host:port is supported"));
        }
        Ok(SharedTier {
            address: address.to_string(),
            timeout,
            pool: Mutex::new(Vec::new()),
            breaker: Breaker::default(),
        })
    }

    fn redis_key(key: &CacheKey, model: &str) -> String {
        format!("{PREFIX}:{model}:{}", key.to_hex())
    }

    pub async fn fetch(&self, key: &CacheKey, model: &str, ttl: Duration) -> Option<CachedValue> {
        let redis_key = Self::redis_key(key, model);
        match self
            .call(&[b"GET", redis_key.as_bytes()], self.timeout)
            .await?
        {
            Reply::Bulk(bytes) => {
                let decoded = value::decode(bytes, Arc::from(model), ttl);
                if decoded.is_none() {
                    metrics::counter!(telemetry::CACHE_REDIS_ERRORS, "kind" => "undecodable")
                        .increment(1);
                }
                decoded
            }
            _ => None,
        }
    }

    /// Writes in the background: a fill never waits for the shared tier.
    pub fn store(self: &Arc<Self>, key: CacheKey, value: Arc<CachedValue>) {
        let tier = self.clone();
        tokio::spawn(async move {
            let redis_key = Self::redis_key(&key, &value.model);
            let encoded = value::encode(&value);
            let ttl_ms = value.ttl.as_millis().max(1).to_string();
            let _ = tier
                .call(
                    &[
                        b"SET",
                        redis_key.as_bytes(),
                        &encoded,
                        b"PX",
                        ttl_ms.as_bytes(),
                    ],
                    tier.timeout * 5,
                )
                .await;
        });
    }

    pub async fn purge(&self, model: Option<&str>) {
        let pattern = format!("{PREFIX}:{}:*", model.unwrap_or("*"));
        let mut cursor = b"0".to_vec();
        // Bounded, so a huge keyspace cannot hold an admin call forever.
        for _ in 0..10_000 {
            let reply = self
                .call(
                    &[
                        b"SCAN",
                        &cursor,
                        b"MATCH",
                        pattern.as_bytes(),
                        b"COUNT",
                        b"1000",
                    ],
                    self.timeout * 10,
                )
                .await;
            let Some(Reply::Array(mut parts)) = reply else {
                return;
            };
            let keys = parts.pop();
            let next = parts.pop();
            if let Some(Reply::Array(keys)) = keys {
                let mut command: Vec<&[u8]> = vec![b"UNLINK"];
                let names: Vec<Bytes> = keys
                    .into_iter()
                    .filter_map(|k| match k {
                        Reply::Bulk(b) => Some(b),
                        _ => None,
                    })
                    .collect();
                if !names.is_empty() {
                    command.extend(names.iter().map(|b| b.as_ref()));
                    let _ = self.call(&command, self.timeout * 10).await;
                }
            }
            match next {
                Some(Reply::Bulk(next)) if next.as_ref() != b"0" => cursor = next.to_vec(),
                _ => return,
            }
        }
    }

    /// Runs one command within `limit`, through the breaker. `None` on any failure.
    async fn call(&self, command: &[&[u8]], limit: Duration) -> Option<Reply> {
        if !self.breaker.allows() {
            return None;
        }
        let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        let attempt = async {
            let mut connection = match pooled {
                Some(connection) => connection,
                None => BufStream::new(TcpStream::connect(&self.address).await?),
            };
            write_command(&mut connection, command).await?;
            let reply = read_reply(&mut connection, 0).await?;
            Ok::<_, std::io::Error>((connection, reply))
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok((connection, reply))) => {
                self.breaker.succeeded();
                if let Ok(mut pool) = self.pool.lock() {
                    if pool.len() < POOL_SIZE {
                        pool.push(connection);
                    }
                }
                Some(reply)
            }
            Ok(Err(error)) => {
                self.failed("io", &error.to_string());
                None
            }
            Err(_) => {
                self.failed("timeout", "no answer in time");
                None
            }
        }
    }

    fn failed(&self, kind: &'static str, detail: &str) {
        metrics::counter!(telemetry::CACHE_REDIS_ERRORS, "kind" => kind).increment(1);
        if self.breaker.failed() {
            tracing::warn!(address = %self.address, %detail, "Redis cache tier unavailable; serving from memory only until it recovers");
        }
    }
}

async fn write_command(connection: &mut Connection, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(16 + parts.iter().map(|p| p.len() + 16).sum::<usize>());
    frame.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for part in parts {
        frame.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        frame.extend_from_slice(part);
        frame.extend_from_slice(b"\r\n");
    }
    connection.write_all(&frame).await?;
    connection.flush().await
}

fn protocol_error(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

fn read_reply<'a>(
    connection: &'a mut Connection,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Reply>> + Send + 'a>> {
    Box::pin(async move {
        if depth > 4 {
            return Err(protocol_error("reply nested too deeply"));
        }
        let mut line = Vec::new();
        connection.read_until(b'\n', &mut line).await?;
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            return Err(protocol_error("truncated reply"));
        }
        let body = std::str::from_utf8(&line[1..line.len() - 2])
            .map_err(|_| protocol_error("reply header is not text"))?;
        let length = || {
            body.parse::<i64>()
                .map_err(|_| protocol_error("bad length"))
        };
        match line[0] {
            b'+' => Ok(Reply::Simple),
            b':' => Ok(Reply::Integer),
            b'-' => Err(protocol_error(body)),
            b'$' => {
                let len = length()?;
                if len < 0 {
                    return Ok(Reply::Nil);
                }
                let len = len as usize;
                if len > MAX_VALUE_BYTES {
                    return Err(protocol_error("value too large"));
                }
                let mut data = vec![0; len + 2];
                connection.read_exact(&mut data).await?;
                data.truncate(len);
                Ok(Reply::Bulk(Bytes::from(data)))
            }
            b'*' => {
                let count = length()?;
                if count < 0 {
                    return Ok(Reply::Nil);
                }
                let mut items = Vec::with_capacity((count as usize).min(1024));
                for _ in 0..count {
                    items.push(read_reply(connection, depth + 1).await?);
                }
                Ok(Reply::Array(items))
            }
            _ => Err(protocol_error("unknown reply type")),
        }
    })
}

/// Closed → open after `FAILURES_TO_OPEN` consecutive failures; after `OPEN_FOR` one call is
/// let through (half-open), and its success closes the breaker again.
struct Breaker {
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    open: AtomicBool,
    epoch: Instant,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            open: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn allows(&self) -> bool {
        if !self.open.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_ms();
        let until = self.open_until_ms.load(Ordering::Acquire);
        // One caller wins the half-open probe by pushing the deadline forward.
        now >= until
            && self
                .open_until_ms
                .compare_exchange(
                    until,
                    now + OPEN_FOR.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Release);
        if self.open.swap(false, Ordering::AcqRel) {
            metrics::gauge!(telemetry::CACHE_REDIS_BREAKER_OPEN).set(0.0);
            tracing::info!("Redis cache tier is back");
        }
    }

    /// Returns true when this failure opened the breaker (so the caller logs once).
    fn failed(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        self.open_until_ms.store(
            self.now_ms() + OPEN_FOR.as_millis() as u64,
            Ordering::Release,
        );
        if failures >= FAILURES_TO_OPEN && !self.open.swap(true, Ordering::AcqRel) {
            metrics::gauge!(telemetry::CACHE_REDIS_BREAKER_OPEN).set(1.0);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_closes_on_success() {
        let breaker = Breaker::default();
        assert!(breaker.allows());
        assert!(!breaker.failed());
        assert!(!breaker.failed());
        assert!(breaker.failed(), "the third failure opens it");
        assert!(!breaker.allows(), "open: calls are skipped");
        breaker.succeeded();
        assert!(breaker.allows());
    }

    #[test]
    fn urls_are_checked() {
        assert!(SharedTier::new("redis://127.0.0.1:6379", Duration::from_millis(5)).is_ok());
        assert!(SharedTier::new("redis://127.0.0.1:6379/0", Duration::from_millis(5)).is_ok());
        assert!(SharedTier::new("http://x", Duration::from_millis(5)).is_err());
        assert!(SharedTier::new("redis://user:pw@h:1", Duration::from_millis(5)).is_err());
    }
}
