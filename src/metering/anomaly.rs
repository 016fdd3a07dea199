//! Spend anomalies: per tenant × model, spend per minute is tracked with an exponentially
//! weighted mean and variance; a minute above mean + k·σ counts, and `window` such minutes in a
//! row raise one alert (re-armed once spend falls back).

use super::money::usd;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub k: f64,
    pub window: u32,
    pub alpha: f64,
}

/// Minutes of history before a series can alert: the mean needs something to stand on.
const WARM_UP_MINUTES: u32 = 5;
/// Closing more empty minutes than this at once changes nothing worth the work.
const MAX_CATCH_UP: i64 = 120;

#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub tenant: String,
    pub model: String,
    pub spend_per_minute: f64,
    pub mean: f64,
    pub sigma: f64,
    pub message: String,
}

#[derive(Debug, Default)]
struct Series {
    minute: i64,
    current: f64,
    mean: f64,
    variance: f64,
    minutes_seen: u32,
    above: u32,
    alerted: bool,
}

pub struct Detector {
    settings: Settings,
    origin: Instant,
    /// Tenant, then model: nested so a lookup borrows the names instead of allocating a key.
    series: HashMap<String, HashMap<String, Series>>,
}

impl Detector {
    pub fn new(settings: Settings, origin: Instant) -> Detector {
        Detector {
            settings,
            origin,
            series: HashMap::new(),
        }
    }

    fn minute(&self, now: Instant) -> i64 {
        (now.saturating_duration_since(self.origin).as_secs() / 60) as i64
    }

    /// Adds spend at `now`; closes any minutes that ended before it.
    pub fn observe(&mut self, tenant: &str, model: &str, cost: f64, now: Instant) -> Vec<Anomaly> {
        let minute = self.minute(now);
        let models = match self.series.get_mut(tenant) {
            Some(models) => models,
            None => self.series.entry(tenant.to_string()).or_default(),
        };
        let series = match models.get_mut(model) {
            Some(series) => series,
            None => models.entry(model.to_string()).or_insert_with(|| Series {
                minute,
                ..Series::default()
            }),
        };
        let mut found = Vec::new();
        close_minutes(series, minute, &self.settings, tenant, model, &mut found);
        series.current += cost;
        found
    }

    /// Closes finished minutes of every series, so silence after a spike is noticed too.
    pub fn tick(&mut self, now: Instant) -> Vec<Anomaly> {
        let minute = self.minute(now);
        let mut found = Vec::new();
        for (tenant, models) in &mut self.series {
            for (model, series) in models {
                close_minutes(series, minute, &self.settings, tenant, model, &mut found);
            }
        }
        found
    }
}

fn close_minutes(
    series: &mut Series,
    until: i64,
    settings: &Settings,
    tenant: &str,
    model: &str,
    found: &mut Vec<Anomaly>,
) {
    if until <= series.minute {
        return;
    }
    let first = series.minute.max(until - MAX_CATCH_UP);
    for closing in first..until {
        let spend = if closing == series.minute {
            series.current
        } else {
            0.0
        };
        // A floor on σ keeps a perfectly flat history from flagging tiny wobbles.
        let sigma = series
            .variance
            .sqrt()
            .max(series.mean.abs() * 0.05)
            .max(1e-12);
        let threshold = series.mean + settings.k * sigma;
        if series.minutes_seen >= WARM_UP_MINUTES && spend > threshold {
            series.above += 1;
            if series.above >= settings.window && !series.alerted {
                series.alerted = true;
                found.push(Anomaly {
                    tenant: tenant.to_string(),
                    model: model.to_string(),
                    spend_per_minute: spend,
                    mean: series.mean,
                    sigma,
                    message: format!(
                        "tenant `{tenant}` on model `{model}` spent {}/min for {} minutes, above the usual {} ± {}",
                        usd(spend),
                        series.above,
                        usd(series.mean),
                        usd(sigma)
                    ),
                });
            }
            // Anomalous minutes do not teach the baseline, or a sustained spike would hide itself.
            continue;
        }
        series.above = 0;
        series.alerted = false;
        let difference = spend - series.mean;
        let increment = settings.alpha * difference;
        series.mean += increment;
        series.variance = (1.0 - settings.alpha) * (series.variance + difference * increment);
        series.minutes_seen += 1;
    }
    series.minute = until;
    series.current = 0.0;
}

/// How often the background task closes minutes.
pub const TICK: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            k: 3.0,
            window: 2,
            alpha: 0.2,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sustained_spike_alerts_once_and_noise_does_not() {
        let mut detector = Detector::new(settings(), Instant::now());
        let mut alerts = Vec::new();
        // Thirty quiet minutes with a little noise, one noisy blip, then a three-minute spike.
        for minute in 0..40u32 {
            let spend = match minute {
                30..=32 => 10.0,
                20 => 1.3,
                _ => 1.0 + (minute % 3) as f64 * 0.05,
            };
            for _ in 0..4 {
                alerts.extend(detector.observe("t", "m", spend / 4.0, Instant::now()));
                tokio::time::advance(Duration::from_secs(15)).await;
            }
            alerts.extend(detector.tick(Instant::now()));
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!((alerts[0].spend_per_minute - 10.0).abs() < 1e-9);
        assert!(alerts[0].message.contains("tenant `t` on model `m`"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_spike_minute_is_not_sustained() {
        let mut detector = Detector::new(settings(), Instant::now());
        let mut alerts = Vec::new();
        for minute in 0..20u32 {
            let spend = if minute == 12 { 50.0 } else { 1.0 };
            alerts.extend(detector.observe("t", "m", spend, Instant::now()));
            tokio::time::advance(Duration::from_secs(60)).await;
        }
        alerts.extend(detector.tick(Instant::now()));
        assert!(alerts.is_empty(), "{alerts:?}");
    }
}
