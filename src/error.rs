//! What kind of failure something is, independent of any wire protocol. Every layer's error says
//! its class; only `api::status` turns a class into an HTTP status or gRPC code, so that mapping
//! exists once.

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

impl ErrorClass {
    /// A short label for metrics (`outcome`/`reason`) and usage records, bounded in cardinality.
    pub fn label(self) -> &'static str {
        match self {
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
