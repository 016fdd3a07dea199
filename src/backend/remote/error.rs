//! How one upstream attempt failed, classified once: whether it may be retried (only when it
//! cannot have run), whether it counts against the endpoint's breaker, and which class the
//! caller sees (the upstream's 4xx stay 4xx; its outages become 503, its slowness 504).

use crate::error::ErrorClass;
use std::error::Error as StdError;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The request never reached the upstream: connecting failed, or the server refused the
    /// stream (REFUSED_STREAM, or a GOAWAY before it processed it). Safe to retry anywhere.
    #[error("not reachable: {0}")]
    NotSent(String),
    #[error("did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The upstream answered with an error status (`code` is e.g. "400" or "InvalidArgument").
    #[error("answered {code}: {message}")]
    Status {
        class: ErrorClass,
        code: String,
        message: String,
    },
    /// The connection broke after the request may have been sent.
    #[error("connection failed: {0}")]
    Transport(String),
    /// The answer was not a KServe V2 response this model can use.
    #[error("sent an invalid response: {0}")]
    Protocol(String),
    /// Refused here without sending: every endpoint's breaker is open or none is healthy.
    #[error("{0}")]
    Refused(String),
}

impl UpstreamError {
    pub fn retryable(&self) -> bool {
        matches!(self, UpstreamError::NotSent(_))
    }

    /// Whether this failure says the endpoint is unwell. A 4xx says the opposite: the upstream
    /// was well enough to judge the request.
    pub fn is_outage(&self) -> bool {
        match self {
            UpstreamError::Status { class, .. } => matches!(
                class,
                ErrorClass::Unavailable | ErrorClass::Internal | ErrorClass::Timeout
            ),
            UpstreamError::Refused(_) => false,
            _ => true,
        }
    }

    /// A bounded label for the error metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::NotSent(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Status { .. } if self.is_outage() => "server_error",
            UpstreamError::Status { .. } => "client_error",
            UpstreamError::Transport(_) => "transport",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Refused(_) => "refused",
        }
    }

    /// How the caller sees it.
    pub fn class(&self) -> ErrorClass {
        match self {
            UpstreamError::Timeout(_) => ErrorClass::Timeout,
            UpstreamError::Status { class, .. } => *class,
            _ => ErrorClass::Unavailable,
        }
    }
}

/// The class an upstream HTTP error status maps to. 401 and 403 mean *our* credentials are
/// wrong, which the caller cannot fix, so they count as the upstream being unavailable.
pub fn http_status_class(status: u16) -> ErrorClass {
    match status {
        404 => ErrorClass::NotFound,
        413 => ErrorClass::TooLarge,
        429 => ErrorClass::Overloaded,
        408 | 504 => ErrorClass::Timeout,
        501 => ErrorClass::Unimplemented,
        401 | 403 => ErrorClass::Unavailable,
        400..=499 => ErrorClass::BadRequest,
        _ => ErrorClass::Unavailable,
    }
}

/// The class a gRPC status code maps to, on the same reasoning as `http_status_class`.
pub fn grpc_code_class(code: tonic::Code) -> ErrorClass {
    use tonic::Code;
    match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            ErrorClass::BadRequest
        }
        Code::NotFound => ErrorClass::NotFound,
        Code::ResourceExhausted => ErrorClass::Overloaded,
        Code::DeadlineExceeded => ErrorClass::Timeout,
        Code::Unimplemented => ErrorClass::Unimplemented,
        _ => ErrorClass::Unavailable,
    }
}

/// True when an error's chain proves the request never reached the upstream's handler.
pub fn never_reached(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(client) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
            if client.is_connect() {
                return true;
            }
        }
        if error.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            // Streams above a GOAWAY's last processed id fail with a remote GOAWAY; the server
            // promises it never started them. REFUSED_STREAM makes the same promise.
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote())
            {
                return true;
            }
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        current = error.source();
    }
    false
}

/// An error and its sources as one line, skipping a source that repeats its parent's text.
pub fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(source) = current {
        let part = source.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_class_a_caller_should_see() {
        let cases: &[(u16, ErrorClass)] = &[
            (400, ErrorClass::BadRequest),
            (422, ErrorClass::BadRequest),
            (404, ErrorClass::NotFound),
            (429, ErrorClass::Overloaded),
            (403, ErrorClass::Unavailable),
            (500, ErrorClass::Unavailable),
            (503, ErrorClass::Unavailable),
            (504, ErrorClass::Timeout),
        ];
        for (status, class) in cases {
            assert_eq!(http_status_class(*status), *class, "{status}");
        }
        assert_eq!(
            grpc_code_class(tonic::Code::InvalidArgument),
            ErrorClass::BadRequest
        );
        assert_eq!(
            grpc_code_class(tonic::Code::Internal),
            ErrorClass::Unavailable
        );
    }

    #[test]
    fn only_failures_that_cannot_have_run_are_retried() {
        let status = |class| UpstreamError::Status {
            class,
            code: "x".into(),
            message: "m".into(),
        };
        let cases: Vec<(UpstreamError, bool, bool, &str)> = vec![
            (
                UpstreamError::NotSent("refused".into()),
                true,
                true,
                "connect",
            ),
            (
                UpstreamError::Timeout(Duration::from_millis(5)),
                false,
                true,
                "timeout",
            ),
            (
                UpstreamError::Transport("reset".into()),
                false,
                true,
                "transport",
            ),
            (status(ErrorClass::BadRequest), false, false, "client_error"),
            (status(ErrorClass::Unavailable), false, true, "server_error"),
            (
                UpstreamError::Refused("open".into()),
                false,
                false,
                "refused",
            ),
        ];
        for (error, retry, outage, kind) in cases {
            assert_eq!(error.retryable(), retry, "{error}");
            assert_eq!(error.is_outage(), outage, "{error}");
            assert_eq!(error.kind(), kind, "{error}");
        }
    }

    #[test]
    fn a_refused_connection_and_a_remote_goaway_never_reached_the_handler() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(never_reached(&refused));
        let wrapped = tonic::ConnectError(Box::new(std::io::Error::other("dns")));
        assert!(never_reached(&wrapped));
        let refused_stream = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert!(never_reached(&refused_stream));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!never_reached(&reset));
        assert!(!never_reached(&h2::Error::from(h2::Reason::INTERNAL_ERROR)));
    }
}
