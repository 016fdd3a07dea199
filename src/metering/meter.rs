//! The metering service the request path talks to: who pays (identity), may they (budgets),
//! what happened (one usage record per accepted request, with alerts and metrics), plus the
//! background work: idle time, anomaly minutes, retention and ledger health.

use super::alerts::{Alerts, Kind};
use super::anomaly::{self, Anomaly, Detector};
use super::budget::{Budgets, Crossing, Standing, Verdict};
use super::clock;
use super::fleet_budget::{FleetBudgets, FleetEvent};
use super::fleet_spend::FleetSpend;
use super::identity::{Caller, Identities};
use super::idle::{IdleMeter, MeteredInstance};
use super::ledger::{Ledger, LedgerSettings};
use super::minutes::{self, MinuteBook};
use super::record::UsageRecord;
use super::{MeteringError, OpenError};
use crate::config::{Config, Durability, OnRedisDown};
use crate::fleet::{Redis, Role};
use crate::shutdown::Shutdown;
use crate::telemetry;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How often retention is applied to the ledger.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often the ledger's health is looked at for alerts.
const LEDGER_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often spend is reported to the fleet's Redis (sooner when a charge asks for it).
const FLEET_SYNC_EVERY: Duration = Duration::from_millis(500);
/// Redis calls of the fleet; a request waits on one only when its tenant's slice runs out.
const FLEET_TIMEOUT: Duration = Duration::from_millis(250);
/// How long after a minute ends it is closed: every replica's last report of it has landed.
const MINUTE_GRACE_MS: i64 = 3_000;
/// How often finished minutes are looked for.
const MINUTES_EVERY: Duration = Duration::from_secs(10);
/// How long a start under `fleet.on_redis_down = "fail_closed"` waits for Redis.
const FLEET_START_WAIT: Duration = Duration::from_secs(5);

pub struct Metering {
    /// Tenants, keys and the admin token; swapped whole by a reload.
    identities: ArcSwap<Identities>,
    pub alerts: Alerts,
    pub ledger: Ledger,
    /// Deferred jobs, in the ledger's store; `None` when a PostgreSQL ledger was unreachable
    /// at start.
    pub jobs: Option<Arc<super::ledger::jobs::JobStore>>,
    pub currency: String,
    budgets: ArcSwap<Budgets>,
    /// Present with `fleet.redis_url`: budgets then live in Redis and `budgets` is unused.
    fleet: Option<Arc<FleetBudgets>>,
    /// Present with `fleet.redis_url`: anomalies are then judged on the fleet's spend.
    fleet_spend: Option<FleetSpend>,
    /// This replica's spend per minute, written on the request path.
    spend: Mutex<MinuteBook>,
    /// Judges closed minutes; used by the background only.
    anomalies: Mutex<Detector>,
    idle: Mutex<Option<IdleMeter>>,
    money: super::labels::MoneySeries,
    sync: bool,
    on_redis_down: OnRedisDown,
    idle_interval: Duration,
    ledger_alarm: AtomicBool,
}

/// What admission decided for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    /// Over a `demote` budget: the request goes to the lowest priority lane.
    Demoted,
    /// Over a `downgrade` budget: the model's cheapest variant answers.
    Downgraded,
}

impl Metering {
    /// Opens the ledger and rebuilds this period's budget spend from it.
    pub fn open(config: &Config) -> Result<Metering, OpenError> {
        let ledger = Ledger::open(LedgerSettings::from_config(&config.ledger))?;
        // A PostgreSQL ledger that is down at start leaves this replica without jobs (it
        // still serves, and holds its usage records until the ledger is back).
        let jobs = match ledger.open_jobs() {
            Ok(jobs) => Some(Arc::new(jobs)),
            Err(error) if ledger.settings().url.is_some() => {
                tracing::warn!(%error, "deferred jobs are off on this replica: the PostgreSQL ledger is unreachable");
                None
            }
            Err(error) => return Err(error.into()),
        };
        let now_ms = clock::now_ms();
        let budgets = Budgets::new(&config.tenants, now_ms);
        let mut seeds = HashMap::new();
        let remote = ledger.settings().url.is_some();
        for (tenant, since) in budgets.periods(now_ms) {
            let spent = match ledger.spend(&tenant, since) {
                Ok(spent) => spent,
                // A fleet's ledger may be down while a replica starts; refusing to start would
                // turn an outage of the ledger into one of the gateway.
                Err(e) if remote => {
                    tracing::warn!(tenant = %tenant, error = %e, "budget spend not rebuilt: the PostgreSQL ledger is unreachable; this period's spend starts from 0 on this replica");
                    0.0
                }
                Err(e) => return Err(e.into()),
            };
            budgets.restore(&tenant, spent, now_ms);
            seeds.insert(tenant, spent);
        }
        let (fleet, fleet_spend) = match &config.fleet.redis_url {
            Some(url) => {
                let redis = Redis::new(url, Role::Fleet, FLEET_TIMEOUT)
                    .map_err(|e| OpenError::Fleet(format!("fleet.redis_url: {e}")))?;
                let redis = Arc::new(redis);
                let budgets = FleetBudgets::new(
                    redis.clone(),
                    config.fleet.on_redis_down,
                    &config.tenants,
                    &seeds,
                    now_ms,
                );
                let spend = FleetSpend::new(redis, budgets.replica().to_string());
                (Some(Arc::new(budgets)), Some(spend))
            }
            None => (None, None),
        };
        let alerts = &config.alerts;
        Ok(Metering {
            identities: ArcSwap::from_pointee(Identities::new(config)),
            alerts: Alerts::new(alerts.webhook_url.as_deref()),
            ledger,
            jobs,
            currency: config.pricing.currency.clone(),
            budgets: ArcSwap::from_pointee(budgets),
            fleet,
            fleet_spend,
            spend: Mutex::new(MinuteBook::new(now_ms)),
            anomalies: Mutex::new(Detector::new(anomaly::Settings {
                k: alerts.anomaly_k,
                window: alerts.anomaly_window_minutes,
                alpha: alerts.anomaly_alpha,
            })),
            idle: Mutex::new(None),
            money: super::labels::MoneySeries::new(config.metering.metric_tenants),
            sync: config.ledger.durability == Durability::Sync,
            on_redis_down: config.fleet.on_redis_down,
            idle_interval: Duration::from_secs(config.metering.idle_interval_seconds),
            ledger_alarm: AtomicBool::new(false),
        })
    }

    /// Joins the fleet's Redis, if one is configured: the first report of every budgeted
    /// tenant takes the fleet's spend (or seeds it from the ledger when Redis has none).
    /// Under `fail_closed` a Redis that does not answer stops the start; under `fail_open` it
    /// is a warning, and the gateway keeps trying in the background.
    pub async fn join_fleet(&self) -> Result<(), MeteringError> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        let closed = self.fleet_mode() == Some(OnRedisDown::FailClosed);
        let deadline = Instant::now()
            + if closed {
                FLEET_START_WAIT
            } else {
                FLEET_TIMEOUT
            };
        loop {
            // A ping first: with no budgeted tenant, the sync would not reach Redis at all.
            let reachable = fleet.ping().await;
            let events = fleet.sync(clock::now_ms()).await;
            if reachable && !fleet.is_down() {
                self.raise_fleet(events);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let reason = format!("the fleet's Redis ({}) does not answer", fleet.target());
                if closed {
                    return Err(MeteringError::FleetUnavailable(format!(
                        "{reason}, and fleet.on_redis_down = \"fail_closed\""
                    )));
                }
                tracing::warn!("{reason}; budgets run on this replica's accounting until it does (fleet.on_redis_down = \"fail_open\")");
                self.raise_fleet(events);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn fleet_mode(&self) -> Option<OnRedisDown> {
        self.fleet.as_ref().map(|_| self.on_redis_down)
    }

    /// Budget admission for a caller's next request.
    pub async fn admit(&self, caller: &Caller) -> Result<Admission, MeteringError> {
        let now_ms = clock::now_ms();
        let verdict = match &self.fleet {
            Some(fleet) => fleet
                .check(&caller.tenant.name, now_ms)
                .await
                .map_err(MeteringError::FleetUnavailable)?,
            None => self.budgets.load().check(&caller.tenant.name, now_ms),
        };
        match verdict {
            Verdict::Allow => Ok(Admission::Normal),
            Verdict::Demote => Ok(Admission::Demoted),
            Verdict::Downgrade => Ok(Admission::Downgraded),
            Verdict::Reject {
                message,
                resets_at_ms,
            } => Err(MeteringError::BudgetExhausted {
                message,
                // Whole seconds, rounded up, so a client that waits this long finds the new period.
                retry_after_s: u64::try_from(resets_at_ms - now_ms)
                    .unwrap_or(0)
                    .div_ceil(1000),
            }),
        }
    }

    /// Accounts one finished request: budgets, anomalies, metrics, and its ledger record. With
    /// `ledger.durability = "sync"` this returns only once the record is committed.
    pub async fn settle(&self, record: UsageRecord) -> Result<(), MeteringError> {
        self.account(&record);
        if self.sync {
            self.ledger
                .record_committed(record)
                .await
                .map_err(|e| MeteringError::LedgerUnavailable(e.to_string()))
        } else {
            self.enqueue(record);
            Ok(())
        }
    }

    /// Hands a record to the ledger without waiting. One it cannot hold is counted there and
    /// logged here with its id, so no record disappears without a trace.
    pub fn enqueue(&self, record: UsageRecord) {
        use super::ledger::Submitted;
        if let Submitted::Dropped(record) = self.ledger.record(record) {
            tracing::error!(request_id = %record.request_id, tenant = %record.tenant, cost_usd = record.cost_usd, "usage record dropped: the ledger's queue and backlog are full");
        }
    }

    /// Every tenant budget as it stands now (the fleet's, with `fleet.redis_url`).
    pub fn budgets(&self, now_ms: i64) -> Vec<Standing> {
        match &self.fleet {
            Some(fleet) => fleet.standings(now_ms),
            None => self.budgets.load().standings(now_ms),
        }
    }

    /// Who may call, as configured now.
    pub fn identities(&self) -> arc_swap::Guard<Arc<Identities>> {
        self.identities.load()
    }

    /// Applies a reloaded config's tenants, keys, admin token and budgets. A tenant whose
    /// budget is unchanged keeps its spend as counted; a new or changed budget is rebuilt from
    /// the ledger as at start. Budgets held in Redis (`fleet.redis_url`) are not reloaded:
    /// returns false then, and they wait for a restart. Blocks on the ledger.
    pub fn reload_tenants(&self, config: &Config) -> Result<bool, MeteringError> {
        self.identities.store(Arc::new(Identities::new(config)));
        if self.fleet.is_some() {
            return Ok(false);
        }
        let now_ms = clock::now_ms();
        let (budgets, rebuild) = self.budgets.load().carried(&config.tenants, now_ms);
        for (tenant, since) in budgets.periods(now_ms) {
            if rebuild.contains(&tenant) {
                let spent = self
                    .ledger
                    .spend(&tenant, since)
                    .map_err(|e| MeteringError::LedgerUnavailable(e.to_string()))?;
                budgets.restore(&tenant, spent, now_ms);
            }
        }
        self.budgets.store(Arc::new(budgets));
        Ok(true)
    }

    /// The in-memory part of settling, kept separate so its cost can be measured alone.
    pub fn account(&self, record: &UsageRecord) {
        if record.cost_usd > 0.0 {
            let now_ms = clock::now_ms();
            let (crossings, ratio) = match &self.fleet {
                Some(fleet) => (
                    fleet.charge(&record.tenant, record.cost_usd, now_ms),
                    fleet.used_ratio(&record.tenant),
                ),
                None => {
                    let budgets = self.budgets.load();
                    (
                        budgets.charge(&record.tenant, record.cost_usd, now_ms),
                        budgets.used_ratio(&record.tenant),
                    )
                }
            };
            for crossing in crossings {
                self.raise_crossing(crossing);
            }
            if let Some(ratio) = ratio {
                metrics::gauge!(telemetry::BUDGET_USED, "tenant" => record.tenant.to_string())
                    .set(ratio);
            }
            if let Ok(mut book) = self.spend.lock() {
                book.add(
                    &record.tenant,
                    &record.model,
                    record.cost_usd,
                    record.time_ms,
                );
            }
        }
        if record.cost_usd > 0.0 || record.saved_usd > 0.0 {
            let (cost, saved) = self
                .money
                .gauges(&record.tenant, &record.team, &record.model);
            cost.increment(record.cost_usd);
            saved.increment(record.saved_usd);
        }
    }

    fn raise_crossing(&self, crossing: Crossing) {
        self.alerts.raise(
            Kind::Budget,
            Some(&crossing.tenant),
            None,
            Some(crossing.percent),
            crossing.message,
        );
    }

    fn raise_fleet(&self, events: Vec<FleetEvent>) {
        let mode = match self.on_redis_down {
            OnRedisDown::FailOpen => {
                "budgets run on each replica's own accounting until it is back"
            }
            OnRedisDown::FailClosed => "requests of budgeted tenants are refused until it is back",
        };
        for event in events {
            match event {
                FleetEvent::Crossed(crossing) => self.raise_crossing(crossing),
                FleetEvent::RedisDown(reason) => self.alerts.raise(
                    Kind::Fleet,
                    None,
                    None,
                    None,
                    format!("the fleet's Redis is unavailable ({reason}); {mode}"),
                ),
                FleetEvent::RedisBack => self.alerts.raise(
                    Kind::Fleet,
                    None,
                    None,
                    None,
                    "the fleet's Redis is back; this replica's spend is folded in".into(),
                ),
            }
        }
    }

    /// Reports spend to the fleet's Redis until shutdown.
    async fn sync_fleet(self: Arc<Self>, fleet: Arc<FleetBudgets>, shutdown: Shutdown) {
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut shared = Instant::now();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = fleet.wait(FLEET_SYNC_EVERY) => {}
            }
            let mut events = fleet.take_events();
            events.extend(fleet.sync(clock::now_ms()).await);
            self.raise_fleet(events);
            // Charges wake this loop early for budgets; spend per minute can wait its turn.
            if shared.elapsed() >= FLEET_SYNC_EVERY {
                self.share_spend().await;
                shared = Instant::now();
            }
        }
        // What this replica spent since its last report reaches the fleet before it goes.
        let events = fleet.sync(clock::now_ms()).await;
        self.raise_fleet(events);
        self.share_spend().await;
    }

    /// Tells the fleet this replica's spend per minute, for the fleet's anomaly detection.
    /// What cannot be told now is told on a later call.
    pub async fn share_spend(&self) {
        let Some(fleet_spend) = &self.fleet_spend else {
            return;
        };
        let totals = match self.spend.lock() {
            Ok(book) => book.unpublished(),
            Err(_) => return,
        };
        if totals.is_empty() {
            return;
        }
        if fleet_spend.publish(&totals).await.is_ok() {
            if let Ok(mut book) = self.spend.lock() {
                book.published(&totals);
            }
        }
    }

    /// Writes the idle time accrued so far (also called on shutdown and by tests).
    pub fn record_idle(&self) {
        let now = Instant::now();
        let records = match self.idle.lock() {
            Ok(mut idle) => match idle.as_mut() {
                Some(meter) => meter.tick(now, clock::now_ms()),
                None => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        for record in records {
            self.enqueue(record);
        }
    }

    /// The instances to bill idle time for after a reload: the idle time so far is billed
    /// first, then a new instance counts from now and a removed one no more.
    pub fn meter_instances(&self, instances: Vec<MeteredInstance>) {
        self.record_idle();
        if let Ok(mut idle) = self.idle.lock() {
            if let Some(meter) = idle.as_mut() {
                meter.replace(instances, Instant::now());
            }
        }
    }

    /// Starts the background duties over the loaded models; they end with `shutdown`.
    pub fn start_background(self: &Arc<Self>, instances: Vec<MeteredInstance>, shutdown: Shutdown) {
        if let Ok(mut idle) = self.idle.lock() {
            *idle = Some(IdleMeter::new(instances, Instant::now()));
        }
        if let Some(fleet) = &self.fleet {
            tokio::spawn(self.clone().sync_fleet(fleet.clone(), shutdown.clone()));
        }
        let metering = self.clone();
        tokio::spawn(async move {
            let stop = shutdown.wait();
            tokio::pin!(stop);
            let mut idle = tokio::time::interval(metering.idle_interval);
            let mut minutes = tokio::time::interval(MINUTES_EVERY);
            let mut retention = tokio::time::interval(RETENTION_EVERY);
            let mut health = tokio::time::interval(LEDGER_CHECK_EVERY);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = idle.tick() => metering.record_idle(),
                    _ = minutes.tick() => metering.close_minutes(clock::now_ms()).await,
                    _ = retention.tick() => metering.apply_retention().await,
                    _ = health.tick() => metering.check_ledger(),
                }
            }
        });
    }

    /// Judges every minute that ended before `now_ms` (less a grace for the fleet's last
    /// reports): on the fleet's spend when a fleet Redis is configured and answers, else on
    /// this replica's own.
    pub async fn close_minutes(&self, now_ms: i64) {
        let due = match self.spend.lock() {
            Ok(mut book) => book.due(now_ms, MINUTE_GRACE_MS),
            Err(_) => return,
        };
        for minute in due {
            let own = match self.spend.lock() {
                Ok(book) => book.spends(minute),
                Err(_) => return,
            };
            let (spends, fleet_wide) = match &self.fleet_spend {
                Some(fleet_spend) => match fleet_spend.others(minute).await {
                    Ok(mut others) => {
                        minutes::merge(&mut others, own);
                        (others, true)
                    }
                    Err(_) => (own, false),
                },
                None => (own, false),
            };
            let anomalies = match self.anomalies.lock() {
                Ok(mut detector) => detector.close(minute, &spends),
                Err(_) => Vec::new(),
            };
            self.raise_anomalies(anomalies, fleet_wide).await;
        }
    }

    /// Raises what the detector found; on the fleet's spend, only the first replica to claim
    /// an anomaly alerts it (on its own spend, with Redis out of reach, each replica does).
    async fn raise_anomalies(&self, anomalies: Vec<Anomaly>, fleet_wide: bool) {
        for found in anomalies {
            if let (true, Some(fleet_spend)) = (fleet_wide, &self.fleet_spend) {
                if let Ok(false) = fleet_spend.claim(&found).await {
                    continue;
                }
            }
            self.alerts.raise(
                Kind::Anomaly,
                Some(&found.tenant),
                Some(&found.model),
                None,
                found.message,
            );
        }
    }

    async fn apply_retention(&self) {
        let ledger = self.ledger.clone();
        let now = clock::now_ms();
        let purged = tokio::task::spawn_blocking(move || ledger.purge_expired(now)).await;
        if let Ok(Err(error)) = purged {
            tracing::warn!(%error, "ledger retention failed");
        }
    }

    /// Raises an alert when the ledger starts failing or overflowing, and once more when it
    /// recovers, instead of once per record.
    fn check_ledger(&self) {
        let stats = self.ledger.stats();
        let troubled = stats.failing || stats.dropped > 0 || stats.overflowed > 0;
        let was = self.ledger_alarm.swap(troubled, Ordering::AcqRel);
        if troubled && !was {
            self.alerts.raise(
                Kind::Ledger,
                None,
                None,
                None,
                format!(
                    "the usage ledger is not keeping up: {} records waiting in memory, {} dropped, last error: {}",
                    stats.pending,
                    stats.dropped,
                    stats.last_error.as_deref().unwrap_or("none")
                ),
            );
        } else if !troubled && was {
            self.alerts.raise(
                Kind::Ledger,
                None,
                None,
                None,
                "the usage ledger has caught up".into(),
            );
        }
    }

    /// Final idle records and a flush of everything queued, on graceful shutdown.
    pub async fn finish(&self) {
        self.record_idle();
        if let Err(error) = self.ledger.flush().await {
            tracing::error!(%error, "could not flush the usage ledger at shutdown");
        }
    }
}
