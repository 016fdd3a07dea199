//! `[[tenants]]`: who pays, with their key's hash (never printed) and their budget.

use serde::Deserialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    #[default]
    Month,
}

/// What happens to a tenant's requests once its budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetAction {
    /// Alerts only; requests are still served.
    #[default]
    Alert,
    /// Served in the lowest priority lane.
    Demote,
    /// Refused with 402 until the period ends.
    Reject,
    /// Served by the model's cheapest variant (by measured cost per row) instead.
    Downgrade,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    pub api_key_blake3: String,
    #[serde(default)]
    pub team: String,
    #[serde(default)]
    pub project: String,
    pub budget_usd: Option<f64>,
    #[serde(default)]
    pub budget_period: BudgetPeriod,
    #[serde(default)]
    pub budget_action: BudgetAction,
}

impl fmt::Debug for TenantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantConfig")
            .field("name", &self.name)
            .field("api_key_blake3", &"<redacted>")
            .field("team", &self.team)
            .field("project", &self.project)
            .field("budget_usd", &self.budget_usd)
            .field("budget_period", &self.budget_period)
            .field("budget_action", &self.budget_action)
            .finish()
    }
}
