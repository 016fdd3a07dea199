//! One Redis as a replica uses it: a single server (one multiplexed connection, reconnected in
//! the background) or a Redis Cluster (one multiplexed connection per node), behind a breaker,
//! with a time limit on every call. Connections are opened lazily, so a gateway starts while
//! Redis is down and uses it once it answers.

use super::breaker::Breaker;
use super::FleetError;
use crate::config::RedisUrl;
use crate::telemetry;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, RedisFuture, ServerErrorKind, Value};
use std::future::Future;
use std::time::{Duration, Instant};

/// Opening a connection (a TLS handshake included) may take longer than one call may wait;
/// it goes on in the background while the calls that gave up on it count as failures.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A purge stops after this many SCAN pages per node, so a huge keyspace cannot hold an admin
/// call forever.
const MAX_SCAN_PAGES: usize = 10_000;

/// Who uses a connection: labels its metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The shared tier of the prediction cache.
    Cache,
    /// Budgets, spend and alert de-duplication across replicas.
    Fleet,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Cache => "cache",
            Role::Fleet => "fleet",
        }
    }
}

#[derive(Clone)]
enum Connection {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Lets every command and script run on either kind of connection.
impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

pub struct Redis {
    connection: Connection,
    role: Role,
    /// The URL(s) without passwords, for logs.
    target: String,
    timeout: Duration,
    breaker: Breaker,
    breaker_gauge: metrics::Gauge,
}

impl Redis {
    /// Builds the client; nothing is connected yet. `timeout` bounds every call.
    pub fn new(url: &RedisUrl, role: Role, timeout: Duration) -> Result<Redis, FleetError> {
        let connect_timeout = CONNECT_TIMEOUT.max(timeout);
        let connection = match url {
            RedisUrl::Server(url) => {
                let client = redis::Client::open(url.as_str()).map_err(unusable)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Connection::Server(
                    ConnectionManager::new_lazy_with_config(client, config).map_err(unusable)?,
                )
            }
            RedisUrl::Cluster(urls) => {
                let client = redis::cluster::ClusterClientBuilder::new(urls.clone())
                    .connection_timeout(connect_timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .build()
                    .map_err(unusable)?;
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(connect_timeout)
                    .set_response_timeout(timeout);
                Connection::Cluster(client.get_pending_async_connection_with_config(config))
            }
        };
        Ok(Redis {
            connection,
            role,
            target: url.to_string(),
            timeout,
            breaker: Breaker::default(),
            breaker_gauge: metrics::gauge!(telemetry::REDIS_BREAKER_OPEN, "role" => role.as_str()),
        })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// False while the breaker is open: Redis failed its last calls.
    pub fn is_up(&self) -> bool {
        !self.breaker.is_open()
    }

    /// One command, within the client's time limit.
    pub async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T, FleetError> {
        self.query_within(op, self.timeout, cmd).await
    }

    /// One command, within `limit` (for calls off the request path, which may wait longer).
    pub async fn query_within<T: FromRedisValue>(
        &self,
        op: &'static str,
        limit: Duration,
        cmd: &Cmd,
    ) -> Result<T, FleetError> {
        self.run(op, limit, |mut connection| async move {
            cmd.query_async(&mut connection).await
        })
        .await
    }

    /// A Lua script (EVALSHA, loaded on first use); its keys must share one hash slot.
    pub async fn script<T: FromRedisValue>(
        &self,
        op: &'static str,
        limit: Duration,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, FleetError> {
        self.run(op, limit, |mut connection| async move {
            invocation.invoke_async(&mut connection).await
        })
        .await
    }

    /// Answers once Redis does (every node of a cluster included).
    pub async fn ping(&self, limit: Duration) -> Result<(), FleetError> {
        let mut ping = redis::cmd("PING");
        if matches!(self.connection, Connection::Cluster(_)) {
            ping = redis::cmd("CLUSTER");
            ping.arg("INFO");
        }
        let _: Value = self.query_within("ping", limit, &ping).await?;
        Ok(())
    }

    /// Deletes every key matching `pattern` (SCAN and UNLINK, node by node in a cluster).
    pub async fn delete_matching(&self, pattern: &str, limit: Duration) -> Result<u64, FleetError> {
        let nodes = match &self.connection {
            Connection::Server(_) => vec![None],
            Connection::Cluster(_) => self.primaries(limit).await?.into_iter().map(Some).collect(),
        };
        let mut deleted = 0;
        for node in nodes {
            let mut cursor: u64 = 0;
            for _ in 0..MAX_SCAN_PAGES {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                let (next, keys): (u64, Vec<Vec<u8>>) = self.on_node(&node, limit, scan).await?;
                // One UNLINK per key: in a cluster, keys of one page live in many slots.
                for key in &keys {
                    let mut unlink = redis::cmd("UNLINK");
                    unlink.arg(key);
                    let gone: u64 = self.query_within("purge", limit, &unlink).await?;
                    deleted += gone;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }

    async fn on_node<T: FromRedisValue>(
        &self,
        node: &Option<(String, u16)>,
        limit: Duration,
        cmd: Cmd,
    ) -> Result<T, FleetError> {
        match node {
            None => self.query_within("purge", limit, &cmd).await,
            Some((host, port)) => {
                use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = self
                    .run("purge", limit, |connection| async move {
                        match connection {
                            Connection::Cluster(mut c) => c.route_command(cmd, routing).await,
                            Connection::Server(mut c) => cmd.query_async(&mut c).await,
                        }
                    })
                    .await?;
                T::from_redis_value(value).map_err(|e| FleetError::Refused(e.to_string()))
            }
        }
    }

    /// The primaries of a cluster, from CLUSTER SLOTS: each slot range names its primary first.
    async fn primaries(&self, limit: Duration) -> Result<Vec<(String, u16)>, FleetError> {
        let mut slots = redis::cmd("CLUSTER");
        slots.arg("SLOTS");
        let ranges: Vec<Value> = self.query_within("purge", limit, &slots).await?;
        let mut primaries = Vec::new();
        for range in ranges {
            let Value::Array(parts) = range else { continue };
            let Some(Value::Array(primary)) = parts.get(2) else {
                continue;
            };
            let (Some(Value::BulkString(host)), Some(Value::Int(port))) =
                (primary.first(), primary.get(1))
            else {
                continue;
            };
            let node = (
                String::from_utf8_lossy(host).into_owned(),
                u16::try_from(*port).unwrap_or(0),
            );
            if !primaries.contains(&node) {
                primaries.push(node);
            }
        }
        Ok(primaries)
    }

    /// Runs one call through the breaker and the time limit, and tells the outcomes apart: an
    /// error reply (a refused write, say) comes from a Redis that is alive and leaves the
    /// breaker alone; no answer, a dropped connection or a cluster without a primary count
    /// against it.
    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        limit: Duration,
        call: F,
    ) -> Result<T, FleetError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let role = self.role.as_str();
        let count = |outcome: &'static str| {
            metrics::counter!(telemetry::REDIS_CALLS, "role" => role, "op" => op, "outcome" => outcome)
                .increment(1);
        };
        if !self.breaker.allows() {
            count("skipped");
            return Err(FleetError::Unavailable(format!(
                "Redis at {} failed its last calls; retrying shortly",
                self.target
            )));
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(limit, call(self.connection.clone())).await;
        metrics::histogram!(telemetry::REDIS_CALL_DURATION, "role" => role, "op" => op)
            .record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(value)) => {
                count("ok");
                self.answered();
                Ok(value)
            }
            Ok(Err(error)) if is_reply(&error) => {
                count("refused");
                self.answered();
                Err(FleetError::Refused(error.to_string()))
            }
            Ok(Err(error)) => {
                count("failed");
                self.failed(&error.to_string());
                Err(FleetError::Unavailable(format!(
                    "Redis at {}: {error}",
                    self.target
                )))
            }
            Err(_) => {
                count("timeout");
                self.failed("no answer in time");
                Err(FleetError::Unavailable(format!(
                    "Redis at {} did not answer within {} ms",
                    self.target,
                    limit.as_millis()
                )))
            }
        }
    }

    fn answered(&self) {
        if self.breaker.succeeded() {
            self.breaker_gauge.set(0.0);
            tracing::info!(role = self.role.as_str(), target = %self.target, "Redis is back");
        }
    }

    fn failed(&self, detail: &str) {
        if self.breaker.failed() {
            self.breaker_gauge.set(1.0);
            tracing::warn!(role = self.role.as_str(), target = %self.target, %detail, "Redis unavailable; calls are skipped until it answers again");
        }
    }
}

/// An error reply of a live server that is about this command (OOM under `noeviction`, a
/// script error, a missing permission), as opposed to a server or cluster that cannot serve.
fn is_reply(error: &RedisError) -> bool {
    match error.kind() {
        ErrorKind::Extension => true,
        ErrorKind::Server(kind) => !matches!(
            kind,
            ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::TryAgain
                | ServerErrorKind::BusyLoading
        ),
        _ => false,
    }
}

fn unusable(error: RedisError) -> FleetError {
    FleetError::Unavailable(format!("the Redis URL cannot be used: {error}"))
}
