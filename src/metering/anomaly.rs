//! Spend anomalies: per tenant × model, spend per UTC minute is tracked with an exponentially
//! weighted mean and variance; a minute above mean + k·σ counts, and `window` such minutes in a
//! row raise one alert (re-armed once spend falls back). Minutes are handed in closed, by the
//! caller: this replica's own spend, or the fleet's.

use super::minutes::Spends;
use super::money::usd;
use smol_str::SmolStr;
use std::collections::HashMap;

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
    pub tenant: SmolStr,
    pub model: SmolStr,
    /// The first anomalous minute of this run (minutes since the epoch): replicas that watch
    /// the same spend agree on it, which lets the fleet alert once.
    pub started_minute: i64,
    pub spend_per_minute: f64,
    pub mean: f64,
    pub sigma: f64,
    pub message: String,
}

#[derive(Debug)]
struct Series {
    /// The last minute closed.
    minute: i64,
    mean: f64,
    variance: f64,
    minutes_seen: u32,
    above: u32,
    alerted: bool,
}

pub struct Detector {
    settings: Settings,
    /// Tenant, then model.
    series: HashMap<SmolStr, HashMap<SmolStr, Series>>,
}

impl Detector {
    pub fn new(settings: Settings) -> Detector {
        Detector {
            settings,
            series: HashMap::new(),
        }
    }

    /// Closes `minute` with what each series spent in it; a known series that is absent
    /// spent nothing, so silence after a spike counts too. Minutes must come in order.
    pub fn close(&mut self, minute: i64, spends: &Spends) -> Vec<Anomaly> {
        for (tenant, models) in spends {
            let known = self.series.entry(tenant.clone()).or_default();
            for model in models.keys() {
                known.entry(model.clone()).or_insert_with(|| Series {
                    // A new series' history starts with this minute.
                    minute: minute - 1,
                    mean: 0.0,
                    variance: 0.0,
                    minutes_seen: 0,
                    above: 0,
                    alerted: false,
                });
            }
        }
        let mut found = Vec::new();
        for (tenant, models) in &mut self.series {
            for (model, series) in models {
                let spend = spends
                    .get(tenant)
                    .and_then(|m| m.get(model))
                    .copied()
                    .unwrap_or(0.0);
                let first = (series.minute + 1).max(minute - MAX_CATCH_UP);
                for closing in first..minute {
                    if let Some(anomaly) = close_one(series, closing, 0.0, &self.settings) {
                        found.push(describe(tenant, model, anomaly));
                    }
                }
                if minute > series.minute {
                    if let Some(anomaly) = close_one(series, minute, spend, &self.settings) {
                        found.push(describe(tenant, model, anomaly));
                    }
                }
            }
        }
        found
    }
}

/// What a closed minute found, before it is named.
struct Found {
    started_minute: i64,
    spend: f64,
    mean: f64,
    sigma: f64,
    minutes: u32,
}

fn close_one(series: &mut Series, minute: i64, spend: f64, settings: &Settings) -> Option<Found> {
    series.minute = minute;
    // A floor on σ keeps a perfectly flat history from flagging tiny wobbles.
    let sigma = series
        .variance
        .sqrt()
        .max(series.mean.abs() * 0.05)
        .max(1e-12);
    let threshold = series.mean + settings.k * sigma;
    if series.minutes_seen >= WARM_UP_MINUTES && spend > threshold {
        series.above += 1;
        // Anomalous minutes do not teach the baseline, or a sustained spike would hide itself.
        if series.above >= settings.window && !series.alerted {
            series.alerted = true;
            return Some(Found {
                started_minute: minute - i64::from(series.above) + 1,
                spend,
                mean: series.mean,
                sigma,
                minutes: series.above,
            });
        }
        return None;
    }
    series.above = 0;
    series.alerted = false;
    let difference = spend - series.mean;
    let increment = settings.alpha * difference;
    series.mean += increment;
    series.variance = (1.0 - settings.alpha) * (series.variance + difference * increment);
    series.minutes_seen += 1;
    None
}

fn describe(tenant: &SmolStr, model: &SmolStr, found: Found) -> Anomaly {
    Anomaly {
        tenant: tenant.clone(),
        model: model.clone(),
        started_minute: found.started_minute,
        spend_per_minute: found.spend,
        mean: found.mean,
        sigma: found.sigma,
        message: format!(
            "tenant `{tenant}` on model `{model}` spent {}/min for {} minutes, above the usual {} ± {}",
            usd(found.spend),
            found.minutes,
            usd(found.mean),
            usd(found.sigma)
        ),
    }
}

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

    fn spends(entries: &[(&str, &str, f64)]) -> Spends {
        let mut spends = Spends::new();
        for (tenant, model, spend) in entries {
            *spends
                .entry(SmolStr::new(tenant))
                .or_default()
                .entry(SmolStr::new(model))
                .or_default() += spend;
        }
        spends
    }

    /// Closes minutes 1000.. with `spend(minute)` for series t/m; returns what alerted.
    fn run(minutes: u32, spend: impl Fn(u32) -> Option<f64>) -> Vec<Anomaly> {
        let mut detector = Detector::new(settings());
        let mut found = Vec::new();
        for offset in 0..minutes {
            let entries: Vec<_> = spend(offset).map(|s| ("t", "m", s)).into_iter().collect();
            found.extend(detector.close(1000 + i64::from(offset), &spends(&entries)));
        }
        found
    }

    fn noise(minute: u32) -> f64 {
        1.0 + f64::from(minute % 3) * 0.05
    }

    struct Case {
        name: &'static str,
        spend: fn(u32) -> Option<f64>,
        alerts: usize,
        first_started: Option<i64>,
    }

    #[test]
    fn minutes_alert_as_expected() {
        let cases = [
            Case {
                name: "a three-minute spike alerts once, from its first minute",
                spend: |m| {
                    Some(if (30..=32).contains(&m) {
                        10.0
                    } else {
                        noise(m)
                    })
                },
                alerts: 1,
                first_started: Some(1030),
            },
            Case {
                name: "one spike minute is not sustained",
                spend: |m| Some(if m == 12 { 50.0 } else { 1.0 }),
                alerts: 0,
                first_started: None,
            },
            Case {
                name: "a blip within noise is nothing",
                spend: |m| Some(if m == 20 { 1.3 } else { noise(m) }),
                alerts: 0,
                first_started: None,
            },
            Case {
                name: "two separate spikes alert twice (re-armed between)",
                spend: |m| {
                    Some(if matches!(m, 20 | 21 | 40 | 41) {
                        10.0
                    } else {
                        1.0
                    })
                },
                alerts: 2,
                first_started: Some(1020),
            },
            Case {
                name: "spend during warm-up cannot alert",
                spend: |m| Some(if m < 3 { 10.0 } else { 1.0 }),
                alerts: 0,
                first_started: None,
            },
            Case {
                name: "minutes without spend count as zero; spend well above them alerts",
                spend: |m| match m {
                    0..=9 => Some(0.01),
                    10..=19 => None,
                    _ => Some(5.0),
                },
                alerts: 1,
                first_started: Some(1020),
            },
        ];
        for case in cases {
            let found = run(45, case.spend);
            assert_eq!(found.len(), case.alerts, "{}: {found:?}", case.name);
            let started = found.first().map(|a| a.started_minute);
            assert_eq!(started, case.first_started, "{}", case.name);
        }
    }

    #[test]
    fn an_alert_names_the_series_and_its_spend() {
        let found = run(40, |m| {
            Some(if (30..=32).contains(&m) { 10.0 } else { 1.0 })
        });
        assert_eq!(found.len(), 1);
        assert!((found[0].spend_per_minute - 10.0).abs() < 1e-9);
        assert!(
            found[0].message.contains("tenant `t` on model `m`"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn a_long_silence_is_closed_in_bounded_work() {
        let mut detector = Detector::new(settings());
        detector.close(0, &spends(&[("t", "m", 1.0)]));
        // A year later: only the last MAX_CATCH_UP minutes are replayed.
        let found = detector.close(525_600, &spends(&[]));
        assert!(found.is_empty());
        let series = &detector.series["t"]["m"];
        assert_eq!(series.minute, 525_600);
        // Minute 0, the replayed silence, and the minute closed now.
        assert_eq!(series.minutes_seen, 1 + MAX_CATCH_UP as u32 + 1);
    }
}
