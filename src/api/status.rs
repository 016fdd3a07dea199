//! The one place where failures become wire codes: an HTTP status or a gRPC code per class.

use crate::error::ErrorClass;
use crate::gateway::Error;
use crate::metering::MeteringError;
use hyper::StatusCode;

pub fn http_status(error: &Error) -> StatusCode {
    match error.class() {
        ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorClass::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorClass::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorClass::Forbidden => StatusCode::FORBIDDEN,
        ErrorClass::PaymentRequired => StatusCode::PAYMENT_REQUIRED,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub fn grpc_status(error: &Error) -> tonic::Status {
    let code = match error.class() {
        ErrorClass::BadRequest => tonic::Code::InvalidArgument,
        ErrorClass::NotFound => tonic::Code::NotFound,
        ErrorClass::TooLarge | ErrorClass::Overloaded => tonic::Code::ResourceExhausted,
        ErrorClass::Timeout => tonic::Code::DeadlineExceeded,
        ErrorClass::Unavailable => tonic::Code::Unavailable,
        ErrorClass::Unimplemented => tonic::Code::Unimplemented,
        ErrorClass::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorClass::Forbidden => tonic::Code::PermissionDenied,
        ErrorClass::PaymentRequired => tonic::Code::ResourceExhausted,
        ErrorClass::Internal => tonic::Code::Internal,
    };
    tonic::Status::new(code, error.to_string())
}

/// Seconds a refused client should wait before retrying, for `Retry-After`: a moment after
/// overload, the rest of the budget period after a 402.
pub fn retry_after_seconds(error: &Error) -> Option<u64> {
    match error {
        Error::Metering(MeteringError::BudgetExhausted { retry_after_s, .. }) => {
            Some((*retry_after_s).max(1))
        }
        _ if error.class() == ErrorClass::Overloaded => Some(1),
        _ => None,
    }
}
