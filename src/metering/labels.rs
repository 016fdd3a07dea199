//! The per-tenant money series (`tollgate_cost_usd_total`, `tollgate_saved_usd_total`) with a
//! bounded number of tenant labels: past `metering.metric_tenants` distinct tenants, the rest
//! are summed under `tenant="other"` (and no team), so a large tenant list cannot swamp
//! Prometheus. The ledger keeps every tenant's own detail either way.

use crate::telemetry;
use smol_str::SmolStr;
use std::collections::HashMap;
use std::sync::RwLock;

/// The cost and saved series of one tenant × model.
pub(super) type MoneyGauges = (metrics::Gauge, metrics::Gauge);

/// The label that tenants beyond the cap share.
pub const OTHER_TENANT: &str = "other";

pub(super) struct MoneySeries {
    cap: usize,
    /// By tenant: whether it has a label of its own, and its series by model, registered once
    /// so the request path builds no label strings.
    tenants: RwLock<HashMap<SmolStr, Tenant>>,
}

struct Tenant {
    own_label: bool,
    models: HashMap<SmolStr, MoneyGauges>,
}

impl MoneySeries {
    pub(super) fn new(cap: usize) -> MoneySeries {
        MoneySeries {
            cap,
            tenants: RwLock::new(HashMap::new()),
        }
    }

    pub(super) fn gauges(&self, tenant: &SmolStr, team: &str, model: &SmolStr) -> MoneyGauges {
        if let Ok(tenants) = self.tenants.read() {
            if let Some(pair) = tenants.get(tenant).and_then(|t| t.models.get(model)) {
                return pair.clone();
            }
        }
        let Ok(mut tenants) = self.tenants.write() else {
            return register(OTHER_TENANT, "", model);
        };
        let labelled = tenants.values().filter(|t| t.own_label).count();
        let cap = self.cap;
        let entry = tenants.entry(tenant.clone()).or_insert_with(|| Tenant {
            own_label: labelled < cap,
            models: HashMap::new(),
        });
        let pair = if entry.own_label {
            register(tenant, team, model)
        } else {
            register(OTHER_TENANT, "", model)
        };
        entry.models.insert(model.clone(), pair.clone());
        pair
    }
}

fn register(tenant: &str, team: &str, model: &str) -> MoneyGauges {
    let labels = [
        ("tenant", tenant.to_string()),
        ("team", team.to_string()),
        ("model", model.to_string()),
    ];
    (
        metrics::gauge!(telemetry::COST, &labels),
        metrics::gauge!(telemetry::SAVED, &labels),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (tenant, value) of every cost series of `model` in the process's exposition.
    fn costs_of(model: &str) -> Vec<(String, String)> {
        let text = telemetry::render();
        let mut found: Vec<(String, String)> = text
            .lines()
            .filter(|l| l.starts_with(telemetry::COST) && l.contains(&format!("model=\"{model}\"")))
            .map(|line| {
                let tenant = line
                    .split("tenant=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next());
                let value = line.rsplit(' ').next().unwrap_or("");
                (tenant.unwrap_or("").to_string(), value.to_string())
            })
            .collect();
        found.sort();
        found
    }

    #[test]
    fn tenants_past_the_cap_share_one_label() {
        telemetry::metrics_handle();
        let series = MoneySeries::new(2);
        let (m, n) = (SmolStr::new("labels-test-m"), SmolStr::new("labels-test-n"));
        for tenant in ["a", "b", "c", "d", "a"] {
            series
                .gauges(&SmolStr::new(tenant), "t", &m)
                .0
                .increment(1.0);
        }
        // A tenant with a label of its own keeps it for every model; one without never gets one.
        series.gauges(&SmolStr::new("b"), "t", &n).0.increment(1.0);
        series.gauges(&SmolStr::new("c"), "t", &n).0.increment(1.0);
        let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
            items
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            costs_of(&m),
            pairs(&[("a", "2"), ("b", "1"), ("other", "2")])
        );
        assert_eq!(costs_of(&n), pairs(&[("b", "1"), ("other", "1")]));
    }
}
