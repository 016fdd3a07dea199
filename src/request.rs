//! The protocol-neutral request and response every front end decodes into and encodes from.

use crate::metering::text::Text;
use crate::tensor::Tensor;

/// The front end a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Http, Protocol::Grpc];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }

    /// Position in `ALL`, for per-protocol arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    pub model: String,
    /// `None` asks for the model's newest version.
    pub version: Option<String>,
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Outputs to return; empty means all of them.
    pub outputs: Vec<String>,
    pub options: RequestOptions,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestOptions {
    /// 1 is the highest lane; `None` takes the model's default.
    pub priority: Option<u8>,
    /// May only shorten the model's `default_timeout_us`.
    pub timeout_us: Option<u64>,
    pub cache: CacheControl,
    /// `k=v,...` tags given as the `tags` parameter.
    pub tags: Option<String>,
}

/// What the caller allows the cache to do for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheControl {
    pub lookup: bool,
    pub store: bool,
}

impl Default for CacheControl {
    fn default() -> Self {
        CacheControl {
            lookup: true,
            store: true,
        }
    }
}

impl CacheControl {
    /// The request parameter `cache`: "default", "bypass" (neither) or "refresh" (skip the
    /// lookup, store the fresh answer).
    pub fn from_parameter(value: &str) -> Option<CacheControl> {
        match value {
            "default" => Some(CacheControl::default()),
            "bypass" => Some(CacheControl {
                lookup: false,
                store: false,
            }),
            "refresh" => Some(CacheControl {
                lookup: false,
                store: true,
            }),
            _ => None,
        }
    }
}

/// How a response was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    /// Answered by an identical request that was already running.
    Coalesced,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Bypass => "bypass",
        }
    }
}

#[derive(Debug, Clone)]
pub struct InferResponse {
    pub model: String,
    pub version: String,
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
    pub served: Served,
}

/// Per-request facts the front ends put into headers and response parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub request_id: String,
    pub cache: CacheStatus,
    /// Rows this request asked for.
    pub rows: usize,
    /// Rows in the batch that computed this answer (0 for a cache hit).
    pub batch_rows: usize,
    pub queue_us: u64,
    pub compute_us: u64,
    pub cost_usd: f64,
    pub saved_usd: f64,
    /// The device that computed it ("cpu", "cuda:0"); shared with the model and usage record.
    pub device: Text,
}
