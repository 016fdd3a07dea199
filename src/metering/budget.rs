//! Budgets per tenant over a day or a calendar month (UTC). Crossing 50, 80 and 100% raises an
//! alert once per period; at 100% the tenant's action applies: alert only, demote to the lowest
//! priority lane (idle capacity only), or reject with 402.

use super::clock;
use super::money::usd;
use crate::config::{BudgetAction as Action, BudgetPeriod as Period, TenantConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const THRESHOLDS: [u8; 3] = [50, 80, 100];

impl Period {
    pub(super) fn start(self, ms: i64) -> i64 {
        match self {
            Period::Day => clock::day_start(ms),
            Period::Month => clock::month_start(ms),
        }
    }

    pub(super) fn end(self, ms: i64) -> i64 {
        match self {
            Period::Day => clock::next_day_start(ms),
            Period::Month => clock::next_month_start(ms),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Month => "monthly",
        }
    }
}

/// What admission does with a tenant's next request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Allow,
    Demote,
    /// Served by the model's cheapest variant.
    Downgrade,
    /// Refused until `resets_at_ms`, when the next period starts.
    Reject {
        message: String,
        resets_at_ms: i64,
    },
}

/// Where a tenant's budget stands, for `GET /v1/budgets` and the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    pub tenant: String,
    pub limit: f64,
    pub spent: f64,
    pub period: Period,
    pub action: Action,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
}

impl Standing {
    pub(super) fn of(
        tenant: &str,
        limit: f64,
        spent: f64,
        terms: (Period, Action),
        now_ms: i64,
    ) -> Standing {
        let (period, action) = terms;
        Standing {
            tenant: tenant.to_string(),
            limit,
            spent,
            period,
            action,
            period_start_ms: period.start(now_ms),
            period_end_ms: period.end(now_ms),
        }
    }

    /// The spend at the end of the period if it goes on at this period's average rate.
    pub fn projected(&self, now_ms: i64) -> f64 {
        let elapsed = (now_ms - self.period_start_ms).max(1) as f64;
        let length = (self.period_end_ms - self.period_start_ms) as f64;
        self.spent * (length / elapsed).max(1.0)
    }

    /// When the limit is reached at that rate, if before the period ends (already spent: now).
    pub fn runs_out_ms(&self, now_ms: i64) -> Option<i64> {
        if self.spent >= self.limit {
            return Some(now_ms);
        }
        if self.spent <= 0.0 {
            return None;
        }
        let rate = self.spent / (now_ms - self.period_start_ms).max(1) as f64;
        let at = now_ms as f64 + (self.limit - self.spent) / rate;
        (at < self.period_end_ms as f64).then_some(at as i64)
    }

    pub fn period_name(&self) -> &'static str {
        self.period.name()
    }

    pub fn action_name(&self) -> &'static str {
        match self.action {
            Action::Alert => "alert",
            Action::Demote => "demote",
            Action::Downgrade => "downgrade",
            Action::Reject => "reject",
        }
    }
}

/// A threshold crossed by a charge.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    pub tenant: String,
    pub percent: u8,
    pub spent: f64,
    pub limit: f64,
    pub message: String,
}

struct State {
    limit: f64,
    period: Period,
    action: Action,
    period_start: i64,
    spent: f64,
    /// Thresholds already alerted in this period.
    fired: Vec<u8>,
}

impl State {
    fn roll(&mut self, now_ms: i64) {
        let start = self.period.start(now_ms);
        if start != self.period_start {
            self.period_start = start;
            self.spent = 0.0;
            self.fired.clear();
        }
    }
}

#[derive(Default)]
pub struct Budgets {
    /// Shared with the next `Budgets` of a reload for tenants whose budget did not change, so
    /// charges made meanwhile land in the one state that goes on.
    states: HashMap<String, Arc<Mutex<State>>>,
}

impl Budgets {
    pub fn new(tenants: &[TenantConfig], now_ms: i64) -> Budgets {
        let states = tenants
            .iter()
            .filter_map(|t| {
                let limit = t.budget_usd?;
                let (period, action) = (t.budget_period, t.budget_action);
                let state = State {
                    limit,
                    period,
                    action,
                    period_start: period.start(now_ms),
                    spent: 0.0,
                    fired: Vec::new(),
                };
                Some((t.name.clone(), Arc::new(Mutex::new(state))))
            })
            .collect();
        Budgets { states }
    }

    /// The budgets of `tenants` after a reload: a tenant whose budget is unchanged keeps its
    /// state (spend and alerts so far) as is. Returns them and the tenants whose spend must
    /// be rebuilt from the ledger (new or changed budgets).
    pub fn carried(&self, tenants: &[TenantConfig], now_ms: i64) -> (Budgets, Vec<String>) {
        let mut next = Budgets::new(tenants, now_ms);
        let mut rebuild = Vec::new();
        for (tenant, state) in next.states.iter_mut() {
            let kept = self.states.get(tenant).filter(|old| {
                let (Ok(old), Ok(new)) = (old.lock(), state.lock()) else {
                    return false;
                };
                old.limit == new.limit && old.period == new.period && old.action == new.action
            });
            match kept {
                Some(old) => *state = old.clone(),
                None => rebuild.push(tenant.clone()),
            }
        }
        (next, rebuild)
    }

    /// Tenants with a budget and the start of their current period, to rebuild spend from the
    /// ledger after a restart.
    pub fn periods(&self, now_ms: i64) -> Vec<(String, i64)> {
        self.states
            .iter()
            .filter_map(|(tenant, state)| {
                let state = state.lock().ok()?;
                Some((tenant.clone(), state.period.start(now_ms)))
            })
            .collect()
    }

    /// Sets what was already spent this period (from the ledger); thresholds already passed
    /// do not alert again.
    pub fn restore(&self, tenant: &str, spent: f64, now_ms: i64) {
        if let Some(Ok(mut state)) = self.states.get(tenant).map(|s| s.lock()) {
            state.roll(now_ms);
            state.spent = spent;
            let ratio = if state.limit > 0.0 {
                spent / state.limit * 100.0
            } else {
                f64::INFINITY
            };
            state.fired = THRESHOLDS
                .iter()
                .copied()
                .filter(|&t| ratio >= t as f64)
                .collect();
        }
    }

    pub fn check(&self, tenant: &str, now_ms: i64) -> Verdict {
        let Some(Ok(mut state)) = self.states.get(tenant).map(|s| s.lock()) else {
            return Verdict::Allow;
        };
        state.roll(now_ms);
        if state.spent < state.limit {
            return Verdict::Allow;
        }
        match state.action {
            Action::Alert => Verdict::Allow,
            Action::Demote => Verdict::Demote,
            Action::Downgrade => Verdict::Downgrade,
            Action::Reject => {
                let resets_at_ms = state.period.end(now_ms);
                Verdict::Reject {
                    message: format!(
                        "tenant `{tenant}` has spent {} of its {} budget of {}; it resets at {}",
                        usd(state.spent),
                        state.period.name(),
                        usd(state.limit),
                        clock::iso8601(resets_at_ms)
                    ),
                    resets_at_ms,
                }
            }
        }
    }

    /// Adds a request's cost and returns the thresholds it crossed.
    pub fn charge(&self, tenant: &str, cost: f64, now_ms: i64) -> Vec<Crossing> {
        let Some(Ok(mut state)) = self.states.get(tenant).map(|s| s.lock()) else {
            return Vec::new();
        };
        state.roll(now_ms);
        state.spent += cost;
        let ratio = if state.limit > 0.0 {
            state.spent / state.limit * 100.0
        } else {
            f64::INFINITY
        };
        let mut crossed = Vec::new();
        for threshold in THRESHOLDS {
            if ratio >= threshold as f64 && !state.fired.contains(&threshold) {
                state.fired.push(threshold);
                crossed.push(Crossing {
                    tenant: tenant.to_string(),
                    percent: threshold,
                    spent: state.spent,
                    limit: state.limit,
                    message: format!(
                        "tenant `{tenant}` reached {threshold}% of its {} budget ({} of {}; resets at {})",
                        state.period.name(),
                        usd(state.spent),
                        usd(state.limit),
                        clock::iso8601(state.period.end(now_ms))
                    ),
                });
            }
        }
        crossed
    }

    /// Every budget as it stands now, by tenant name.
    pub fn standings(&self, now_ms: i64) -> Vec<Standing> {
        let mut all: Vec<Standing> = self
            .states
            .iter()
            .filter_map(|(tenant, state)| {
                let mut state = state.lock().ok()?;
                state.roll(now_ms);
                let terms = (state.period, state.action);
                Some(Standing::of(
                    tenant,
                    state.limit,
                    state.spent,
                    terms,
                    now_ms,
                ))
            })
            .collect();
        all.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        all
    }

    /// Spent ÷ limit per tenant, for the budget gauge.
    pub fn used_ratio(&self, tenant: &str) -> Option<f64> {
        let state = self.states.get(tenant)?.lock().ok()?;
        Some(if state.limit > 0.0 {
            state.spent / state.limit
        } else {
            1.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str, budget: f64, period: Period, action: Action) -> TenantConfig {
        TenantConfig {
            name: name.into(),
            api_key_blake3: String::new(),
            team: String::new(),
            project: String::new(),
            budget_usd: Some(budget),
            budget_period: period,
            budget_action: action,
        }
    }

    const NOW: i64 = 1_795_000_000_000;

    /// A day's budget of 10 at a quarter, half and all of the day: what it projects to at the
    /// day's end, and when it runs out at that rate.
    #[test]
    fn standings_project_the_period_at_its_rate_so_far() {
        const HOUR: i64 = 3_600_000;
        let start = clock::day_start(NOW);
        let cases: &[(i64, f64, f64, Option<i64>)] = &[
            (6 * HOUR, 0.0, 0.0, None),
            (6 * HOUR, 2.0, 8.0, None),
            (6 * HOUR, 5.0, 20.0, Some(start + 12 * HOUR)),
            (12 * HOUR, 10.0, 20.0, Some(start + 12 * HOUR)),
            (24 * HOUR - 1, 1.0, 1.0, None),
        ];
        for &(elapsed, spent, projected, runs_out) in cases {
            let now = start + elapsed;
            let budgets = Budgets::new(&[tenant("t", 10.0, Period::Day, Action::Reject)], now);
            budgets.charge("t", spent, now);
            let standing = &budgets.standings(now)[0];
            assert_eq!((standing.spent, standing.limit), (spent, 10.0));
            assert!(
                (standing.projected(now) - projected).abs() < 1e-6,
                "{elapsed}: {standing:?}"
            );
            assert_eq!(standing.runs_out_ms(now), runs_out, "{elapsed} {spent}");
            assert_eq!(standing.period_end_ms - standing.period_start_ms, 24 * HOUR);
            assert_eq!(standing.action_name(), "reject");
        }
    }

    #[test]
    fn thresholds_fire_once_and_the_action_applies_at_100_percent() {
        let budgets = Budgets::new(
            &[
                tenant("a", 1.0, Period::Month, Action::Reject),
                tenant("d", 1.0, Period::Day, Action::Demote),
                tenant("q", 1.0, Period::Day, Action::Alert),
            ],
            NOW,
        );
        let crossed: Vec<u8> = budgets
            .charge("a", 0.6, NOW)
            .iter()
            .map(|c| c.percent)
            .collect();
        assert_eq!(crossed, vec![50]);
        assert_eq!(budgets.charge("a", 0.1, NOW).len(), 0);
        let crossed: Vec<u8> = budgets
            .charge("a", 0.4, NOW)
            .iter()
            .map(|c| c.percent)
            .collect();
        assert_eq!(crossed, vec![80, 100]);
        match budgets.check("a", NOW) {
            Verdict::Reject { message, .. } => {
                assert!(
                    message.contains("tenant `a`") && message.contains("resets at"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        budgets.charge("d", 2.0, NOW);
        assert_eq!(budgets.check("d", NOW), Verdict::Demote);
        budgets.charge("q", 2.0, NOW);
        assert_eq!(budgets.check("q", NOW), Verdict::Allow);
        assert_eq!(budgets.check("nobody", NOW), Verdict::Allow);
    }

    #[test]
    fn a_new_period_starts_from_zero() {
        let budgets = Budgets::new(&[tenant("d", 1.0, Period::Day, Action::Reject)], NOW);
        budgets.charge("d", 5.0, NOW);
        assert!(matches!(budgets.check("d", NOW), Verdict::Reject { .. }));
        let tomorrow = clock::next_day_start(NOW) + 1;
        assert_eq!(budgets.check("d", tomorrow), Verdict::Allow);
        assert_eq!(
            budgets.charge("d", 0.6, tomorrow).len(),
            1,
            "the 50% alert fires again"
        );
    }

    #[test]
    fn restored_spend_counts_and_does_not_realert() {
        let budgets = Budgets::new(&[tenant("a", 1.0, Period::Month, Action::Reject)], NOW);
        budgets.restore("a", 0.9, NOW);
        let crossed: Vec<u8> = budgets
            .charge("a", 0.2, NOW)
            .iter()
            .map(|c| c.percent)
            .collect();
        assert_eq!(crossed, vec![100]);
    }
}
