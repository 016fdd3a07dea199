//! The upstream keys of a model: checked here once, so the remote engine can trust them. A
//! model names one server with `upstream = "http://host:port"` or several replicas with
//! `upstreams = [...]`; validation folds both into `upstreams`.

use super::{invalid, ConfigError, ModelConfig};

pub fn default_timeout_ms() -> u64 {
    30_000
}
pub fn default_connect_timeout_ms() -> u64 {
    1_000
}
pub fn default_retries() -> u32 {
    2
}
pub fn default_breaker_failures() -> u32 {
    5
}
pub fn default_breaker_cooldown_ms() -> u64 {
    5_000
}
pub fn default_health_interval_ms() -> u64 {
    1_000
}
pub fn default_startup_wait_ms() -> u64 {
    30_000
}

const HOUR_MS: u64 = 3_600_000;

impl ModelConfig {
    /// The upstream's name for this model (after validation it is always set).
    pub fn upstream_model_name(&self) -> &str {
        self.upstream_model.as_deref().unwrap_or(&self.name)
    }

    pub(super) fn validate_upstream(
        &mut self,
        index: usize,
        base_dir: &std::path::Path,
    ) -> Result<(), ConfigError> {
        let key = |field: &str| format!("models[{index}].{field}");
        if self.idle_unload_after_s > 0 {
            return Err(invalid(
                key("idle_unload_after_s"),
                "applies to local models only: an upstream model holds no session here",
            ));
        }
        if let Some(single) = self.upstream.take() {
            if !self.upstreams.is_empty() {
                return Err(invalid(
                    key("upstreams"),
                    "give `upstream` or `upstreams`, not both",
                ));
            }
            self.upstreams = vec![single];
        }
        for (position, url) in self.upstreams.iter().enumerate() {
            if self.upstreams[..position]
                .iter()
                .any(|u| u.label == url.label)
            {
                return Err(invalid(
                    key(&format!("upstreams[{position}]")),
                    format!("`{}` is listed twice", url.label),
                ));
            }
        }
        let model = self.upstream_model.get_or_insert_with(|| self.name.clone());
        if model.is_empty() {
            return Err(invalid(key("upstream_model"), "must not be empty"));
        }
        if self.upstream_version.as_deref() == Some("") {
            return Err(invalid(
                key("upstream_version"),
                "must not be empty (leave it out for the upstream's default)",
            ));
        }
        if let Some(path) = &self.upstream_ca_path {
            let resolved = base_dir.join(path);
            if !resolved.is_file() {
                return Err(invalid(
                    key("upstream_ca_path"),
                    format!("no CA file at {}", resolved.display()),
                ));
            }
            self.upstream_ca_path = Some(resolved);
        }
        self.upstream_headers
            .resolve(|name| std::env::var(name).ok())
            .map_err(|(name, why)| invalid(key(&format!("upstream_headers.{name}")), why))?;
        let ranges: [(&str, u64, u64, u64); 7] = [
            ("upstream_timeout_ms", self.upstream_timeout_ms, 1, HOUR_MS),
            (
                "upstream_connect_timeout_ms",
                self.upstream_connect_timeout_ms,
                1,
                60_000,
            ),
            ("upstream_retries", self.upstream_retries.into(), 0, 10),
            (
                "upstream_breaker_failures",
                self.upstream_breaker_failures.into(),
                1,
                1_000,
            ),
            (
                "upstream_breaker_cooldown_ms",
                self.upstream_breaker_cooldown_ms,
                1,
                HOUR_MS,
            ),
            (
                "upstream_health_interval_ms",
                self.upstream_health_interval_ms,
                10,
                HOUR_MS,
            ),
            (
                "upstream_startup_wait_ms",
                self.upstream_startup_wait_ms,
                0,
                HOUR_MS,
            ),
        ];
        for (field, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(invalid(
                    key(field),
                    format!("must be between {low} and {high}"),
                ));
            }
        }
        Ok(())
    }

    /// Upstream-only keys on a local model are a mistake worth naming, not ignoring.
    pub(super) fn refuse_upstream_keys(&self, index: usize) -> Result<(), ConfigError> {
        for (field, set) in [
            ("upstream_model", self.upstream_model.is_some()),
            ("upstream_version", self.upstream_version.is_some()),
            ("upstream_ca_path", self.upstream_ca_path.is_some()),
            ("upstream_headers", !self.upstream_headers.is_empty()),
        ] {
            if set {
                return Err(invalid(
                    format!("models[{index}].{field}"),
                    "only applies to a model with an `upstream`",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(body: &str) -> Result<Config, String> {
        let text = format!("[[models]]\nname = \"m\"\n{body}\n");
        Config::parse(&text, Path::new("/nonexistent/config.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn upstream_models_validate_and_normalise() {
        let config = parse("upstream = \"http://a:8000/\"").unwrap();
        let model = &config.models[0];
        let labels: Vec<&str> = model.upstreams.iter().map(|u| u.label.as_str()).collect();
        assert_eq!(labels, vec!["http://a:8000"]);
        assert_eq!(model.upstream_model_name(), "m");
        assert!(model.upstream_binary);
        let config =
            parse("upstreams = [\"grpc://a:1\", \"h2c://b:2\"]\nupstream_model = \"d\"").unwrap();
        assert_eq!(config.models[0].upstreams.len(), 2);
        assert_eq!(config.models[0].upstream_model_name(), "d");
    }

    #[test]
    fn bad_upstream_keys_are_named() {
        let cases: &[(&str, &str)] = &[
            ("upstream = \"tcp://a:1\"", "must start with http://"),
            ("upstream = \"http://a\"", "explicit port"),
            (
                "upstreams = [\"http://a:1\", \"http://a:1/\"]",
                "listed twice",
            ),
            (
                "upstreams = [\"http://a:1\", \"nope\"]",
                "`nope` must start with",
            ),
            (
                "upstream = \"http://a:1\"\nupstreams = [\"http://b:1\"]",
                "not both",
            ),
            (
                "upstream = \"http://a:1\"\nupstream_model = \"\"",
                "upstream_model",
            ),
            (
                "upstream = \"http://a:1\"\nupstream_version = \"\"",
                "upstream_version",
            ),
            (
                "upstream = \"http://a:1\"\nupstream_timeout_ms = 0",
                "upstream_timeout_ms",
            ),
            (
                "upstream = \"http://a:1\"\nupstream_retries = 50",
                "upstream_retries",
            ),
            (
                "upstream = \"http://a:1\"\nupstream_breaker_failures = 0",
                "upstream_breaker_failures",
            ),
            (
                "upstream = \"http://a:1\"\nupstream_health_interval_ms = 1",
                "upstream_health_interval_ms",
            ),
            (
                "upstream = \"http://a:1\"\nupstream_bogus = 1",
                "upstream_bogus",
            ),
            ("path = \"x.onnx\"\nupstream = \"http://a:1\"", "not both"),
        ];
        for (body, fragment) in cases {
            let message = parse(body).expect_err(body);
            assert!(
                message.contains(fragment),
                "{body}: `{message}` lacks `{fragment}`"
            );
        }
    }
}
