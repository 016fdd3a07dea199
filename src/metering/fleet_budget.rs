//! Budgets shared by every replica on one Redis. Redis holds each tenant's spend per period;
//! a replica spends from slices of the budget it was granted (a Lua script grants them
//! atomically against spend plus the slices outstanding), so admission asks Redis only when
//! its slice runs out, and a cache hit, which costs nothing, never waits for Redis. Spend is
//! reported in the background, idempotently by report id; the report that crosses a threshold
//! is the one that alerts, so each threshold alerts once per fleet.
//!
//! The fleet's spend can pass a `reject` budget only by requests admitted on a slice that cost
//! more than what was left of it: at most the requests in flight at that moment.

use super::budget::{Crossing, Standing, Verdict, THRESHOLDS};
use super::clock;
use super::money::usd;
use crate::config::{BudgetAction as Action, BudgetPeriod as Period, OnRedisDown, TenantConfig};
use crate::fleet::{FleetError, Redis};
use crate::telemetry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A grant asks for this share of the limit.
const SLICE_SHARE: f64 = 0.05;
/// A slice unused this long goes back to the fleet, for replicas that still have traffic.
const RETURN_IDLE: Duration = Duration::from_secs(2);
/// Even without spend, the fleet's figure is read this often (for the gauge and admission).
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// Budget keys outlive their period by this much, for late reports and inspection.
const KEEP_AFTER_PERIOD_MS: i64 = 2 * 86_400_000;
const MARKER_TTL_MS: u64 = 86_400_000;
/// Calls made for a request waiting on a slice, and those of the background reports.
const GRANT_TIMEOUT: Duration = Duration::from_millis(250);
const REPORT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a replica sent and Redis has not yet acknowledged; sent again as it is (same id).
#[derive(Debug, Clone)]
struct Report {
    id: String,
    period_start: i64,
    used: f64,
    over: f64,
    returned: f64,
    fired_local: u8,
    seed: Option<f64>,
}

#[derive(Debug)]
struct Local {
    period_start: i64,
    /// The fleet's spend as Redis last reported it.
    fleet_spent: f64,
    /// What is left of the slices granted to this replica.
    held: f64,
    /// Spend since the last report was built, and the part of it no slice covered.
    used: f64,
    over: f64,
    queue: VecDeque<Report>,
    /// The ledger's spend, sent with the first report: Redis takes it only if it has none.
    seed: Option<f64>,
    /// The highest threshold alerted in this period (by any replica, as far as known).
    fired: u8,
    last_charge: Option<Instant>,
    last_sync: Option<Instant>,
}

impl Local {
    /// This replica's view of the fleet's spend: Redis's figure plus what it has not reported.
    fn spent(&self) -> f64 {
        self.fleet_spent + self.used + self.queue.iter().map(|r| r.used).sum::<f64>()
    }
}

struct Tenant {
    limit: f64,
    period: Period,
    action: Action,
    state: Mutex<Local>,
    /// One report in flight per tenant: a request waiting on a slice and the background
    /// take turns, and the second finds the first one's grant.
    turn: tokio::sync::Mutex<()>,
}

impl Tenant {
    /// A `reject` tenant in use whose slice is half gone: time to ask for the next one.
    fn runs_low(&self, state: &Local) -> bool {
        self.action == Action::Reject
            && state.held < self.limit * SLICE_SHARE / 2.0
            && recently(state.last_charge)
    }
}

/// A threshold alert, or the news that the fleet's Redis is down or back.
pub enum FleetEvent {
    Crossed(Crossing),
    RedisDown(String),
    RedisBack,
}

pub struct FleetBudgets {
    redis: Arc<Redis>,
    on_down: OnRedisDown,
    replica: String,
    next_report: AtomicU64,
    tenants: HashMap<String, Tenant>,
    script: redis::Script,
    down: AtomicBool,
    wake: tokio::sync::Notify,
    /// Alerts found by reports made on the request path, raised by the background.
    events: Mutex<Vec<FleetEvent>>,
}

impl FleetBudgets {
    /// `seeds` are the ledger's spend per tenant for the current period.
    pub fn new(
        redis: Arc<Redis>,
        on_down: OnRedisDown,
        tenants: &[TenantConfig],
        seeds: &HashMap<String, f64>,
        now_ms: i64,
    ) -> FleetBudgets {
        let tenants = tenants
            .iter()
            .filter_map(|t| {
                let limit = t.budget_usd?;
                let seed = seeds.get(&t.name).copied();
                let local = Local {
                    period_start: t.budget_period.start(now_ms),
                    fleet_spent: seed.unwrap_or(0.0),
                    held: 0.0,
                    used: 0.0,
                    over: 0.0,
                    queue: VecDeque::new(),
                    seed: Some(seed.unwrap_or(0.0)),
                    fired: level(seed.unwrap_or(0.0), limit),
                    last_charge: None,
                    last_sync: None,
                };
                let tenant = Tenant {
                    limit,
                    period: t.budget_period,
                    action: t.budget_action,
                    state: Mutex::new(local),
                    turn: tokio::sync::Mutex::new(()),
                };
                Some((t.name.clone(), tenant))
            })
            .collect();
        let replica = format!("{:016x}", rand_id());
        FleetBudgets {
            redis,
            on_down,
            replica,
            next_report: AtomicU64::new(1),
            tenants,
            script: redis::Script::new(include_str!("fleet_budget.lua")),
            down: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            events: Mutex::new(Vec::new()),
        }
    }

    pub fn target(&self) -> &str {
        self.redis.target()
    }

    /// This replica's name in the fleet's keys.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// True when Redis answers.
    pub async fn ping(&self) -> bool {
        self.redis.ping(GRANT_TIMEOUT).await.is_ok()
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire) || !self.redis.is_up()
    }

    /// Admission for a tenant's next request. `Err` under `fail_closed` while Redis is down.
    pub async fn check(&self, name: &str, now_ms: i64) -> Result<Verdict, String> {
        let Some(tenant) = self.tenants.get(name) else {
            return Ok(Verdict::Allow);
        };
        if self.on_down == OnRedisDown::FailClosed && self.is_down() {
            return Err(format!(
                "tenant `{name}` has a fleet budget and the fleet's Redis ({}) does not answer; try again shortly",
                self.redis.target()
            ));
        }
        let (held, spent) = match tenant.state.lock() {
            Ok(mut state) => {
                roll(&mut state, tenant.period, now_ms);
                (state.held, state.spent())
            }
            Err(_) => return Ok(Verdict::Allow),
        };
        match tenant.action {
            Action::Alert => return Ok(Verdict::Allow),
            Action::Demote if spent >= tenant.limit => return Ok(Verdict::Demote),
            Action::Downgrade if spent >= tenant.limit => return Ok(Verdict::Downgrade),
            Action::Demote | Action::Downgrade => return Ok(Verdict::Allow),
            Action::Reject if held > 0.0 => return Ok(Verdict::Allow),
            Action::Reject => {}
        }
        // Out of slice: ask for one (or find the one another request just got).
        let _turn = tenant.turn.lock().await;
        if tenant.state.lock().map(|s| s.held > 0.0).unwrap_or(true) {
            return Ok(Verdict::Allow);
        }
        let granted = match self.report(name, tenant, true, now_ms).await {
            Ok(events) => {
                self.raise_later(events);
                tenant.state.lock().map(|s| s.held > 0.0).unwrap_or(true)
            }
            // On local accounting: this replica's view of the fleet's spend decides.
            Err(_) if self.on_down == OnRedisDown::FailOpen => tenant
                .state
                .lock()
                .map(|s| s.spent() < tenant.limit)
                .unwrap_or(true),
            Err(error) => return Err(error.to_string()),
        };
        if granted {
            return Ok(Verdict::Allow);
        }
        let spent = tenant.state.lock().map(|s| s.spent()).unwrap_or(0.0);
        let resets_at_ms = tenant.period.end(now_ms);
        Ok(Verdict::Reject {
            message: format!(
                "tenant `{name}` has spent {} of its {} budget of {} across the fleet; it resets at {}",
                usd(spent),
                tenant.period.name(),
                usd(tenant.limit),
                clock::iso8601(resets_at_ms)
            ),
            resets_at_ms,
        })
    }

    /// Adds a request's cost. Thresholds are alerted by the report that crosses them; while
    /// Redis is down, this replica alerts on its own view (returned here).
    pub fn charge(&self, name: &str, cost: f64, now_ms: i64) -> Vec<Crossing> {
        let Some(tenant) = self.tenants.get(name) else {
            return Vec::new();
        };
        let Ok(mut state) = tenant.state.lock() else {
            return Vec::new();
        };
        roll(&mut state, tenant.period, now_ms);
        let covered = cost.min(state.held);
        state.held -= covered;
        state.used += cost;
        state.over += cost - covered;
        state.last_charge = Some(Instant::now());
        let reached = level(state.spent(), tenant.limit);
        if reached > state.fired || tenant.runs_low(&state) {
            // The report that alerts, or the next slice before this one runs out.
            self.wake.notify_one();
        }
        if !self.is_down() || reached <= state.fired {
            return Vec::new();
        }
        let crossed = crossings(name, tenant, state.fired, reached, state.spent(), now_ms);
        state.fired = reached;
        crossed
    }

    /// Every budget as this replica sees the fleet's spend now, by tenant name.
    pub fn standings(&self, now_ms: i64) -> Vec<Standing> {
        let mut all: Vec<Standing> = self
            .tenants
            .iter()
            .filter_map(|(name, tenant)| {
                let mut state = tenant.state.lock().ok()?;
                roll(&mut state, tenant.period, now_ms);
                let terms = (tenant.period, tenant.action);
                Some(Standing::of(
                    name,
                    tenant.limit,
                    state.spent(),
                    terms,
                    now_ms,
                ))
            })
            .collect();
        all.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        all
    }

    pub fn used_ratio(&self, name: &str) -> Option<f64> {
        let tenant = self.tenants.get(name)?;
        let spent = tenant.state.lock().ok()?.spent();
        Some(if tenant.limit > 0.0 {
            spent / tenant.limit
        } else {
            1.0
        })
    }

    /// Reports every tenant that has something to say; returns the alerts to raise.
    pub async fn sync(&self, now_ms: i64) -> Vec<FleetEvent> {
        let mut events = Vec::new();
        for (name, tenant) in &self.tenants {
            let Ok(_turn) = tenant.turn.try_lock() else {
                continue;
            };
            if !self.due(tenant, now_ms) {
                continue;
            }
            let want = tenant
                .state
                .lock()
                .map(|s| tenant.runs_low(&s))
                .unwrap_or(false);
            match self.report(name, tenant, want, now_ms).await {
                Ok(found) => events.extend(found),
                Err(error) => {
                    if !self.down.swap(true, Ordering::AcqRel) {
                        events.push(FleetEvent::RedisDown(error.to_string()));
                    }
                    break;
                }
            }
            if let Some(ratio) = self.used_ratio(name) {
                metrics::gauge!(telemetry::BUDGET_USED, "tenant" => name.clone()).set(ratio);
            }
        }
        events
    }

    /// Waits until a charge asks for a report early, or `every` passes.
    pub async fn wait(&self, every: Duration) {
        let _ = tokio::time::timeout(every, self.wake.notified()).await;
    }

    fn due(&self, tenant: &Tenant, now_ms: i64) -> bool {
        let Ok(mut state) = tenant.state.lock() else {
            return false;
        };
        roll(&mut state, tenant.period, now_ms);
        let stale = state
            .last_sync
            .is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
        let idle_slice = state.held > 0.0 && !recently(state.last_charge);
        let low = tenant.runs_low(&state);
        state.used > 0.0
            || !state.queue.is_empty()
            || stale
            || idle_slice
            || low
            || level(state.spent(), tenant.limit) > state.fired
    }

    /// Sends what is queued for a tenant, then a new report (asking for a slice when `want`);
    /// the caller holds the tenant's turn.
    async fn report(
        &self,
        name: &str,
        tenant: &Tenant,
        want: bool,
        now_ms: i64,
    ) -> Result<Vec<FleetEvent>, FleetError> {
        let mut events = Vec::new();
        if let Ok(mut state) = tenant.state.lock() {
            roll(&mut state, tenant.period, now_ms);
            let returned = if !want && state.held > 0.0 && !recently(state.last_charge) {
                std::mem::take(&mut state.held)
            } else {
                0.0
            };
            let report = Report {
                id: format!(
                    "{}:{}",
                    self.replica,
                    self.next_report.fetch_add(1, Ordering::Relaxed)
                ),
                period_start: state.period_start,
                used: std::mem::take(&mut state.used),
                over: std::mem::take(&mut state.over),
                returned,
                fired_local: state.fired,
                seed: state.seed.take(),
            };
            state.queue.push_back(report);
        }
        while let Some(report) = tenant
            .state
            .lock()
            .ok()
            .and_then(|s| s.queue.front().cloned())
        {
            let is_last = tenant
                .state
                .lock()
                .map(|s| s.queue.len() == 1)
                .unwrap_or(true);
            let ask = if want && is_last {
                tenant.limit * SLICE_SHARE
            } else {
                0.0
            };
            let answer = self.send(name, tenant, &report, ask, want).await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    let outcome = if want { "grant_failed" } else { "failed" };
                    metrics::counter!(telemetry::FLEET_REPORTS, "outcome" => outcome).increment(1);
                    return Err(error);
                }
            };
            metrics::counter!(telemetry::FLEET_REPORTS, "outcome" => "ok").increment(1);
            if ask > 0.0 {
                let outcome = if answer.grant > 0.0 {
                    "granted"
                } else {
                    "exhausted"
                };
                metrics::counter!(telemetry::FLEET_GRANTS, "outcome" => outcome).increment(1);
            }
            if self.down.swap(false, Ordering::AcqRel) {
                events.push(FleetEvent::RedisBack);
            }
            let Ok(mut state) = tenant.state.lock() else {
                break;
            };
            state.queue.pop_front();
            if report.period_start == state.period_start {
                state.fleet_spent = answer.spent;
                state.held += answer.grant;
                state.fired = state.fired.max(answer.fired_after);
                state.last_sync = Some(Instant::now());
                if answer.fired_after > answer.fired_before {
                    events.extend(
                        crossings(
                            name,
                            tenant,
                            answer.fired_before,
                            answer.fired_after,
                            answer.spent,
                            now_ms,
                        )
                        .into_iter()
                        .map(FleetEvent::Crossed),
                    );
                }
            }
        }
        Ok(events)
    }

    async fn send(
        &self,
        name: &str,
        tenant: &Tenant,
        report: &Report,
        ask: f64,
        waiting: bool,
    ) -> Result<Answer, FleetError> {
        // The hash tag keeps a tenant's keys in one slot of a cluster.
        let budget_key = format!("tollgate:fleet:{{{name}}}:budget:{}", report.period_start);
        let marker_key = format!("tollgate:fleet:{{{name}}}:report:{}", report.id);
        let expire_at = tenant.period.end(report.period_start) + KEEP_AFTER_PERIOD_MS;
        let mut invocation = self.script.key(&budget_key);
        invocation
            .key(&marker_key)
            .arg(tenant.limit)
            .arg(report.used)
            .arg(report.over)
            .arg(report.returned)
            .arg(ask)
            .arg(report.fired_local)
            .arg(report.seed.map(|s| s.to_string()).unwrap_or_default())
            .arg(expire_at)
            .arg(MARKER_TTL_MS);
        let (op, limit) = if waiting {
            ("grant", GRANT_TIMEOUT)
        } else {
            ("report", REPORT_TIMEOUT)
        };
        let (spent, _claimed, answer): (String, String, String) =
            self.redis.script(op, limit, &invocation).await?;
        Answer::parse(&spent, &answer)
            .ok_or_else(|| FleetError::Refused(format!("unreadable answer `{spent} {answer}`")))
    }

    fn raise_later(&self, events: Vec<FleetEvent>) {
        if !events.is_empty() {
            if let Ok(mut pending) = self.events.lock() {
                pending.extend(events);
            }
            self.wake.notify_one();
        }
    }

    /// Alerts found on the request path, handed to the background to raise.
    pub fn take_events(&self) -> Vec<FleetEvent> {
        self.events
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

struct Answer {
    spent: f64,
    grant: f64,
    fired_before: u8,
    fired_after: u8,
}

impl Answer {
    fn parse(spent: &str, answer: &str) -> Option<Answer> {
        let mut parts = answer.split(' ');
        Some(Answer {
            spent: spent.parse().ok()?,
            grant: parts.next()?.parse().ok()?,
            fired_before: parts.next()?.parse().ok()?,
            fired_after: parts.next()?.parse().ok()?,
        })
    }
}

/// A new period: what was not reported of the old one is queued under the old period's key.
fn roll(state: &mut Local, period: Period, now_ms: i64) {
    let start = period.start(now_ms);
    if start == state.period_start {
        return;
    }
    if state.used > 0.0 {
        state.queue.push_back(Report {
            id: format!("{:016x}", rand_id()),
            period_start: state.period_start,
            used: std::mem::take(&mut state.used),
            over: std::mem::take(&mut state.over),
            returned: 0.0,
            fired_local: state.fired,
            seed: None,
        });
    }
    state.period_start = start;
    state.fleet_spent = 0.0;
    state.held = 0.0;
    state.fired = 0;
    state.last_sync = None;
}

fn recently(at: Option<Instant>) -> bool {
    at.is_some_and(|at| at.elapsed() < RETURN_IDLE)
}

fn level(spent: f64, limit: f64) -> u8 {
    THRESHOLDS
        .iter()
        .copied()
        .filter(|&t| {
            if limit > 0.0 {
                spent * 100.0 >= f64::from(t) * limit
            } else {
                spent > 0.0
            }
        })
        .max()
        .unwrap_or(0)
}

fn crossings(
    name: &str,
    tenant: &Tenant,
    from: u8,
    to: u8,
    spent: f64,
    now_ms: i64,
) -> Vec<Crossing> {
    THRESHOLDS
        .iter()
        .copied()
        .filter(|&t| t > from && t <= to)
        .map(|percent| Crossing {
            tenant: name.to_string(),
            percent,
            spent,
            limit: tenant.limit,
            message: format!(
                "tenant `{name}` reached {percent}% of its {} budget across the fleet ({} of {}; resets at {})",
                tenant.period.name(),
                usd(spent),
                usd(tenant.limit),
                clock::iso8601(tenant.period.end(now_ms))
            ),
        })
        .collect()
}

/// Names this replica's reports apart from every other's.
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}
