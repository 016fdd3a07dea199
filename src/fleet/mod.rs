//! State shared by every replica that names the same Redis: the connection itself (one server
//! or a cluster, its breaker, its metrics), used by the cache's shared tier and by fleet-wide
//! budgets and alerts.

mod breaker;
mod client;

pub use client::{Redis, Role};

/// Why a call to Redis did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    /// No answer (down, unreachable, slow, a cluster without a primary), or the breaker is
    /// open after such failures.
    #[error("{0}")]
    Unavailable(String),
    /// Redis answered with an error reply: it is alive, and refused this one command (a write
    /// under `noeviction` when full, say).
    #[error("Redis refused the command: {0}")]
    Refused(String),
}
