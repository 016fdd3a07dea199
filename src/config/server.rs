//! `[server]`: listeners, limits, TLS files and the admin token, with their validation.

use super::{check_blake3_hex, invalid, socket_addr, ByteSize, ConfigError};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    #[serde(deserialize_with = "socket_addr")]
    pub http_addr: SocketAddr,
    #[serde(deserialize_with = "socket_addr")]
    pub grpc_addr: SocketAddr,
    pub max_body_bytes: ByteSize,
    pub max_concurrent_requests: usize,
    pub admin_token_blake3: Option<String>,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace_ms: u64,
    /// Threads that serve requests; one per CPU core when unset. Fewer leaves cores to
    /// neighbours on a shared machine, and spares cross-core wake-ups when there are few.
    pub worker_threads: Option<usize>,
    /// A connection that has not sent a whole request head this long after it began waiting
    /// for one (on connecting, or idle between keep-alive requests) is closed.
    pub header_read_timeout_ms: u64,
    /// Open client connections per listener; beyond it new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Streams one HTTP/2 (or gRPC) connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 and gRPC keep-alive pings to idle clients; a client that does not answer one in
    /// time is closed. 0 turns them off.
    pub keepalive_interval_ms: u64,
    /// Request bodies (HTTP) held at once, while read and until answered; a body that does not
    /// fit is refused before it is read.
    pub max_body_bytes_in_flight: ByteSize,
    /// The longest element a BYTES tensor may hold; a whole tensor is bounded by the body.
    pub max_element_bytes: ByteSize,
    /// With `tls_key_path`: HTTPS on `http_addr` and TLS on `grpc_addr` (PEM files, read again
    /// on SIGHUP).
    pub tls_cert_path: Option<PathBuf>,
    pub tls_key_path: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 8001)),
            max_body_bytes: ByteSize(64 << 20),
            max_concurrent_requests: 4096,
            admin_token_blake3: None,
            shutdown_grace_ms: 10_000,
            worker_threads: None,
            header_read_timeout_ms: 10_000,
            max_connections: 10_000,
            http2_max_concurrent_streams: 256,
            keepalive_interval_ms: 30_000,
            max_body_bytes_in_flight: ByteSize(1 << 30),
            max_element_bytes: ByteSize(1 << 20),
            tls_cert_path: None,
            tls_key_path: None,
        }
    }
}

// Secrets (even hashed ones) stay out of logs.
impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("http_addr", &self.http_addr)
            .field("grpc_addr", &self.grpc_addr)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field(
                "admin_token_blake3",
                &self.admin_token_blake3.as_ref().map(|_| "<redacted>"),
            )
            .field("shutdown_grace_ms", &self.shutdown_grace_ms)
            .field("worker_threads", &self.worker_threads)
            .field("header_read_timeout_ms", &self.header_read_timeout_ms)
            .field("max_connections", &self.max_connections)
            .field(
                "http2_max_concurrent_streams",
                &self.http2_max_concurrent_streams,
            )
            .field("keepalive_interval_ms", &self.keepalive_interval_ms)
            .field("max_body_bytes_in_flight", &self.max_body_bytes_in_flight)
            .field("max_element_bytes", &self.max_element_bytes)
            .field("tls_cert_path", &self.tls_cert_path)
            .field("tls_key_path", &self.tls_key_path)
            .finish()
    }
}

impl ServerConfig {
    /// Checks every value; relative TLS paths are read from `base_dir`.
    pub(super) fn validate(&mut self, base_dir: &Path) -> Result<(), ConfigError> {
        if self.max_concurrent_requests == 0 {
            return Err(invalid(
                "server.max_concurrent_requests",
                "must be at least 1",
            ));
        }
        if self.worker_threads == Some(0) {
            return Err(invalid(
                "server.worker_threads",
                "must be at least 1 (leave it out for one per core)",
            ));
        }
        for (field, value) in [
            ("server.header_read_timeout_ms", self.header_read_timeout_ms),
            ("server.max_connections", self.max_connections as u64),
            (
                "server.http2_max_concurrent_streams",
                u64::from(self.http2_max_concurrent_streams),
            ),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if self.max_body_bytes.0 < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1KiB"));
        }
        if self.max_body_bytes_in_flight.0 < self.max_body_bytes.0 {
            return Err(invalid(
                "server.max_body_bytes_in_flight",
                "must be at least server.max_body_bytes (or no body of the largest size could be read)",
            ));
        }
        if self.max_element_bytes.0 == 0 {
            return Err(invalid("server.max_element_bytes", "must be at least 1B"));
        }
        if let Some(hex) = &self.admin_token_blake3 {
            check_blake3_hex("server.admin_token_blake3", hex)?;
        }
        match (&mut self.tls_cert_path, &mut self.tls_key_path) {
            (Some(cert), Some(key)) => {
                for path in [cert, key] {
                    if path.is_relative() {
                        *path = base_dir.join(&*path);
                    }
                }
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(invalid(
                    "server.tls_key_path",
                    "must be set with server.tls_cert_path",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "server.tls_cert_path",
                    "must be set with server.tls_key_path",
                ))
            }
        }
        Ok(())
    }
}
