//! The three wire formats behind one `Client` that sends pre-encoded request number `index`.

pub mod grpc;
pub mod http;

use crate::stats::ReplyInfo;
use crate::tensor::Scalar;

/// A response that arrived with a success status.
#[derive(Debug, Default)]
pub struct Reply {
    pub info: ReplyInfo,
    /// Decoded checked output, present only when verification asked for it.
    pub output: Option<Result<Vec<Scalar>, String>>,
}

/// Request failures are reported as an error-kind label (`http_503`, `grpc_unavailable`, `connect`, ...).
pub type Outcome = Result<Reply, String>;

/// Only one exists per run, so the size gap between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Client {
    Http(http::HttpInfer),
    Grpc(grpc::GrpcInfer),
}

impl Client {
    /// `lane` spreads gRPC traffic over several channels; HTTP pools connections itself.
    pub async fn send(&self, index: usize, lane: usize) -> Outcome {
        match self {
            Client::Http(h) => h.send(index).await,
            Client::Grpc(g) => g.send(index, lane).await,
        }
    }
}

/// Turns `DeadlineExceeded`-style names into `deadline_exceeded` for error-kind labels.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn snake_case_labels() {
        assert_eq!(super::snake_case("DeadlineExceeded"), "deadline_exceeded");
        assert_eq!(super::snake_case("Unavailable"), "unavailable");
    }
}
