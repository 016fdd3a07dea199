//! `[telemetry]`: the access log's sampling and the optional OTLP export of request spans.

use super::{invalid, ConfigError};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Share of requests that write an access log line (0 = none, 1 = every one).
    pub access_log_sample_ratio: f64,
    /// An OTLP/gRPC collector (`http://host:4317`); empty: spans are not exported, though
    /// trace ids are still kept and passed to upstreams.
    pub otlp_endpoint: String,
    /// Share of new traces exported; a caller's `traceparent` sampled flag is followed.
    pub trace_sample_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            access_log_sample_ratio: 0.0,
            otlp_endpoint: String::new(),
            trace_sample_ratio: 1.0,
            service_name: "tollgate".into(),
        }
    }
}

impl TelemetryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, ratio) in [
            (
                "telemetry.access_log_sample_ratio",
                self.access_log_sample_ratio,
            ),
            ("telemetry.trace_sample_ratio", self.trace_sample_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(invalid(
                    key,
                    format!("{ratio} is not a share between 0 and 1"),
                ));
            }
        }
        let endpoint = self.otlp_endpoint.trim();
        if !endpoint.is_empty() {
            let uri: hyper::Uri = endpoint
                .parse()
                .map_err(|e| invalid("telemetry.otlp_endpoint", format!("`{endpoint}`: {e}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(invalid(
                    "telemetry.otlp_endpoint",
                    format!("`{endpoint}` must be http://host:port or https://host:port"),
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid("telemetry.service_name", "must not be empty"));
        }
        Ok(())
    }
}
