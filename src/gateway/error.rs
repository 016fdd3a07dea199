//! The gateway's error: one variant per layer (each keeps its own error and class) and the
//! front ends' own failures. It lives here, where every layer is visible, so that no layer
//! below imports it.

use crate::backend::BackendError;
use crate::batch::BatchError;
use crate::cache::Abandoned;
use crate::error::ErrorClass;
use crate::metering::identity::IdentityError;
use crate::metering::MeteringError;
use crate::model::RequestError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request could not be read off the wire (bad JSON, binary framing, sizes).
    #[error("{0}")]
    Decode(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("server is at its limit of {limit} concurrent requests; retry later")]
    Overloaded { limit: usize },
    /// Refused before its body was read: the bodies being read and served already hold the
    /// server's budget (`server.max_body_bytes_in_flight`).
    #[error("server is holding its limit of {limit} bytes of request bodies; retry later")]
    BodiesInFlight { limit: usize },
    #[error("{0}")]
    NotFound(String),
    /// A tenant's deferred jobs are at one of `[deferred]`'s limits.
    #[error("{0}")]
    JobLimit(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Metering(#[from] MeteringError),
    #[error(transparent)]
    Abandoned(#[from] Abandoned),
    /// A cost or usage query the ledger could not answer.
    #[error("usage ledger unavailable: {0}")]
    LedgerUnavailable(String),
    /// A malformed admin or cost query.
    #[error("{0}")]
    BadQuery(String),
    /// A reload refused: the new config does not read (the old one keeps serving).
    #[error("config not reloaded, the running one keeps serving: {0}")]
    Reload(String),
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Decode(_) => ErrorClass::BadRequest,
            Error::BodyTooLarge { .. } => ErrorClass::TooLarge,
            Error::Request(e) => e.class(),
            // Upstream failures keep their own class wherever they surface.
            Error::Batch(BatchError::Backend(e)) | Error::Backend(e) => e.class(),
            Error::Batch(e) => e.class(),
            Error::Overloaded { .. } | Error::BodiesInFlight { .. } | Error::JobLimit(_) => {
                ErrorClass::Overloaded
            }
            Error::NotFound(_) => ErrorClass::NotFound,
            Error::Unimplemented(_) => ErrorClass::Unimplemented,
            Error::Identity(e) => e.class(),
            Error::BadQuery(_) | Error::Reload(_) => ErrorClass::BadRequest,
            Error::Metering(e) => e.class(),
            Error::Abandoned(_) => ErrorClass::Unavailable,
            Error::LedgerUnavailable(_) => ErrorClass::Unavailable,
        }
    }

    /// A short label for metrics (`outcome`/`reason`), bounded in cardinality.
    pub fn metric_label(&self) -> &'static str {
        self.class().label()
    }
}
