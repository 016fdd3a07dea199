//! One usage record: everything the ledger keeps about one accepted request (or one stretch of
//! a model instance's idle time, under the tenant `__idle__`).

/// Tenant name under which idle device time is recorded: charged to the model, not to anyone.
pub const IDLE_TENANT: &str = "__idle__";
/// Tenant of every request when authentication is off.
pub const ANONYMOUS_TENANT: &str = "anonymous";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageRecord {
    pub request_id: String,
    /// When the request arrived, in milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    pub tenant: String,
    pub team: String,
    pub project: String,
    /// Allowed tags only (keys listed in config), sorted by key.
    pub tags: Vec<(String, String)>,
    pub model: String,
    pub version: String,
    /// "http", "grpc", or "internal" for idle records.
    pub protocol: String,
    /// "hit", "miss", "coalesced", "bypass", or "none" when the request failed before the cache.
    pub cache: String,
    pub rows: u32,
    pub batch_size: u32,
    pub queue_us: u64,
    pub compute_us: u64,
    /// Time from arrival to answer at the gateway.
    pub latency_us: u64,
    pub cost_usd: f64,
    pub saved_usd: f64,
    /// "success", an error class such as "bad_request" or "timeout", or "idle".
    pub outcome: String,
    /// The device that ran it ("cpu", "cuda:0"); for FOCUS resource columns.
    pub device: String,
}
