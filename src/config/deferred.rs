//! `[deferred]`: jobs of many requests (`POST /v1/batches`) run on idle capacity, in off-peak
//! windows, at a discount.

use super::{invalid, ConfigError};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeferredConfig {
    /// A deferred row costs this share of the same row served in real time.
    pub price_factor: f64,
    /// Rows start only inside these windows of the UTC day (empty: any time).
    pub off_peak_utc: Vec<Window>,
    /// Rows of one model run together at most this many at a time, so a real-time request
    /// that arrives waits for at most one such batch.
    pub batch_rows: usize,
    /// Jobs not yet finished that one tenant may hold.
    pub max_jobs_per_tenant: usize,
    /// Rows not yet run that one tenant may hold, over all its jobs.
    pub max_rows_per_tenant: usize,
    /// Requests one job may hold.
    pub max_requests_per_job: usize,
    /// Finished jobs and their results are deleted this long after they finished.
    pub retention_hours: u64,
}

impl Default for DeferredConfig {
    fn default() -> Self {
        DeferredConfig {
            price_factor: 0.5,
            off_peak_utc: Vec::new(),
            batch_rows: 8,
            max_jobs_per_tenant: 16,
            max_rows_per_tenant: 200_000,
            max_requests_per_job: 50_000,
            retention_hours: 168,
        }
    }
}

impl DeferredConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.price_factor) {
            return Err(invalid(
                "deferred.price_factor",
                format!("{} is not a share between 0 and 1", self.price_factor),
            ));
        }
        for (key, value) in [
            ("deferred.batch_rows", self.batch_rows),
            ("deferred.max_jobs_per_tenant", self.max_jobs_per_tenant),
            ("deferred.max_rows_per_tenant", self.max_rows_per_tenant),
            ("deferred.max_requests_per_job", self.max_requests_per_job),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.retention_hours == 0 {
            return Err(invalid("deferred.retention_hours", "must be at least 1"));
        }
        Ok(())
    }

    /// Whether rows may start at `ms` (milliseconds since the epoch, UTC).
    pub fn open_at(&self, ms: i64) -> bool {
        let minute = ms.div_euclid(60_000).rem_euclid(24 * 60) as u32;
        self.off_peak_utc.is_empty() || self.off_peak_utc.iter().any(|w| w.contains(minute))
    }
}

/// `"HH:MM-HH:MM"` of the UTC day; a window whose end comes before its start runs past
/// midnight (`"22:00-06:00"`). Minutes from midnight, start included, end excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u32,
    pub end: u32,
}

impl Window {
    pub fn parse(text: &str) -> Result<Window, String> {
        let minute = |part: &str| -> Option<u32> {
            let (h, m) = part.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let bad = || format!("`{text}` is not a window such as \"22:00-06:00\" (UTC)");
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minute(start).ok_or_else(bad)?, minute(end).ok_or_else(bad)?);
        if start == end {
            return Err(format!("`{text}` is empty: its start and end are the same"));
        }
        Ok(Window { start, end })
    }

    fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Window::parse(&text).map_err(|e| serde::de::Error::custom(format!("off_peak_utc: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_and_wrap_past_midnight() {
        let cases: &[(&str, Option<(u32, u32)>)] = &[
            ("22:00-06:00", Some((1320, 360))),
            ("00:00-23:59", Some((0, 1439))),
            (" 9:30 - 17:00 ", Some((570, 1020))),
            ("24:00-01:00", None),
            ("10:60-11:00", None),
            ("10:00", None),
            ("10:00-10:00", None),
            ("ten-eleven", None),
        ];
        for (text, want) in cases {
            let got = Window::parse(text).ok().map(|w| (w.start, w.end));
            assert_eq!(got, *want, "{text}");
        }
    }

    #[test]
    fn rows_start_only_inside_a_window() {
        let minute = |h: i64, m: i64| (h * 60 + m) * 60_000 + 86_400_000 * 20_000;
        let config = DeferredConfig {
            off_peak_utc: vec![Window::parse("22:00-06:00").unwrap()],
            ..DeferredConfig::default()
        };
        let cases = [
            ((21, 59), false),
            ((22, 0), true),
            ((3, 0), true),
            ((5, 59), true),
            ((6, 0), false),
            ((12, 0), false),
        ];
        for ((h, m), open) in cases {
            assert_eq!(config.open_at(minute(h, m)), open, "{h}:{m}");
        }
        assert!(DeferredConfig::default().open_at(minute(12, 0)));
    }
}
