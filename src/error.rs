//! The gateway's error, one variant per layer, and the wire-agnostic class each maps to.
//! Only `api::status` turns a class into an HTTP status or gRPC code, so that mapping exists once.

use crate::backend::BackendError;
use crate::batch::BatchError;
use crate::metering::identity::IdentityError;
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
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Over a `reject` budget; the message names the budget and when it resets.
    #[error("{message}")]
    BudgetExhausted { message: String, retry_after_s: u64 },
    /// `ledger.durability = "sync"` and the record could not be committed.
    #[error("usage ledger unavailable: {0}")]
    LedgerUnavailable(String),
    /// A malformed admin or cost query.
    #[error("{0}")]
    BadQuery(String),
}

/// What kind of failure this is, independent of any wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    BadRequest,
    NotFound,
    TooLarge,
    Overloaded,
    Timeout,
    Unavailable,
    Unimplemented,
    Unauthenticated,
    Forbidden,
    PaymentRequired,
    Internal,
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
            Error::Overloaded { .. } => ErrorClass::Overloaded,
            Error::NotFound(_) => ErrorClass::NotFound,
            Error::Unimplemented(_) => ErrorClass::Unimplemented,
            Error::Identity(
                IdentityError::Missing
                | IdentityError::Unknown
                | IdentityError::AdminIsNotATenant
                | IdentityError::AdminMissing,
            ) => ErrorClass::Unauthenticated,
            Error::Identity(IdentityError::NotAdmin) => ErrorClass::Forbidden,
            Error::Identity(IdentityError::Tags(_)) | Error::BadQuery(_) => ErrorClass::BadRequest,
            Error::BudgetExhausted { .. } => ErrorClass::PaymentRequired,
            Error::LedgerUnavailable(_) => ErrorClass::Unavailable,
        }
    }

    /// A short label for metrics (`outcome`/`reason`), bounded in cardinality.
    pub fn metric_label(&self) -> &'static str {
        match self.class() {
            ErrorClass::BadRequest => "bad_request",
            ErrorClass::NotFound => "not_found",
            ErrorClass::TooLarge => "too_large",
            ErrorClass::Overloaded => "overloaded",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Unimplemented => "unimplemented",
            ErrorClass::Unauthenticated => "unauthenticated",
            ErrorClass::Forbidden => "forbidden",
            ErrorClass::PaymentRequired => "budget_exhausted",
            ErrorClass::Internal => "internal",
        }
    }
}
