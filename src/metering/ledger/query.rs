//! Reads: the cost API's grouped sums and latency percentiles, single records, and the spend
//! totals budgets are rebuilt from. Sums and percentiles come from the per-minute rollups, so
//! a month is a few hundred thousand rows whatever the traffic; single records from the
//! per-request table.

use std::fmt;
use std::str::FromStr;

use super::sql::{Cell, Param, Read};
use super::{rollup, store, LedgerError, QueryError};
use crate::metering::record::{self, UsageRecord, IDLE_TENANT};

/// Longest range a cost or export query may span.
pub const MAX_RANGE_DAYS: i64 = 366;
/// Most keys one `group_by` may name.
pub const MAX_GROUP_KEYS: usize = 8;
const MAX_TAG_KEY_LEN: usize = 64;

/// One dimension of a cost breakdown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupKey {
    Tenant,
    Team,
    Project,
    Model,
    Version,
    Device,
    Outcome,
    Cache,
    /// "realtime", or "demoted" for requests of a tenant over a `demote` budget.
    Lane,
    /// The value of one request tag; requests without it group under "".
    Tag(String),
}

impl GroupKey {
    /// Parses `tenant,team,tag:env`; an empty string means no grouping (one total row).
    pub fn parse_list(text: &str) -> Result<Vec<GroupKey>, QueryError> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let keys = text
            .split(',')
            .map(|k| k.trim().parse())
            .collect::<Result<Vec<GroupKey>, _>>()?;
        check_keys(&keys)?;
        Ok(keys)
    }

    /// The table column, or `None` for a tag.
    fn column(&self) -> Option<&'static str> {
        Some(match self {
            GroupKey::Tenant => "tenant",
            GroupKey::Team => "team",
            GroupKey::Project => "project",
            GroupKey::Model => "model",
            GroupKey::Version => "version",
            GroupKey::Device => "device",
            GroupKey::Outcome => "outcome",
            GroupKey::Cache => "cache",
            GroupKey::Lane => "lane",
            GroupKey::Tag(_) => return None,
        })
    }
}

impl FromStr for GroupKey {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<GroupKey, QueryError> {
        let key = match s {
            "tenant" => GroupKey::Tenant,
            "team" => GroupKey::Team,
            "project" => GroupKey::Project,
            "model" => GroupKey::Model,
            "version" => GroupKey::Version,
            "device" => GroupKey::Device,
            "outcome" => GroupKey::Outcome,
            "cache" => GroupKey::Cache,
            "lane" => GroupKey::Lane,
            _ => match s.strip_prefix("tag:") {
                Some(tag) => GroupKey::Tag(tag.to_string()),
                None => return Err(QueryError::UnknownGroupKey(s.to_string())),
            },
        };
        check_tag_key(&key)?;
        Ok(key)
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.column(), self) {
            (Some(column), _) => f.write_str(column),
            (None, GroupKey::Tag(tag)) => write!(f, "tag:{tag}"),
            (None, _) => Ok(()),
        }
    }
}

/// Tag keys end up inside a JSON path (`$."key"`), which has no escape for `"`; a narrow
/// alphabet keeps every allowed key expressible.
fn check_tag_key(key: &GroupKey) -> Result<(), QueryError> {
    if let GroupKey::Tag(tag) = key {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/');
        if tag.is_empty() || tag.len() > MAX_TAG_KEY_LEN || !tag.chars().all(ok) {
            return Err(QueryError::BadTagKey(tag.clone()));
        }
    }
    Ok(())
}

fn check_keys(keys: &[GroupKey]) -> Result<(), QueryError> {
    if keys.len() > MAX_GROUP_KEYS {
        return Err(QueryError::TooManyGroupKeys(keys.len()));
    }
    for (i, key) in keys.iter().enumerate() {
        check_tag_key(key)?;
        if keys[..i].contains(key) {
            return Err(QueryError::DuplicateGroupKey(key.to_string()));
        }
    }
    Ok(())
}

/// `from_ms <= to_ms`, at most `MAX_RANGE_DAYS` apart. Ranges are half-open: [from, to).
pub(super) fn check_keys_and_range(
    keys: &[GroupKey],
    from_ms: i64,
    to_ms: i64,
) -> Result<(), QueryError> {
    check_range(from_ms, to_ms)?;
    check_keys(keys)
}

pub(super) fn check_range(from_ms: i64, to_ms: i64) -> Result<(), QueryError> {
    if from_ms > to_ms {
        return Err(QueryError::FromAfterTo { from_ms, to_ms });
    }
    let span = i128::from(to_ms) - i128::from(from_ms);
    let day = 86_400_000i128;
    if span > i128::from(MAX_RANGE_DAYS) * day {
        let days = i64::try_from((span + day - 1) / day).unwrap_or(i64::MAX);
        return Err(QueryError::RangeTooLong { days });
    }
    Ok(())
}

/// Cost of the records that arrived in [from_ms, to_ms), per group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub group_by: Vec<GroupKey>,
}

impl CostQuery {
    pub fn validate(&self) -> Result<(), QueryError> {
        check_range(self.from_ms, self.to_ms)?;
        check_keys(&self.group_by)
    }
}

/// One group of a cost breakdown. Idle time (tenant `__idle__`) always forms rows of its own,
/// labelled `("tenant", "__idle__")` even when tenant is not a grouping key; it counts in cost
/// and rows but not in requests, hits or latency.
#[derive(Debug, Clone, PartialEq)]
pub struct CostRow {
    /// (key, value) in `group_by` order, e.g. `[("tenant", "acme"), ("tag:env", "prod")]`.
    pub group: Vec<(String, String)>,
    pub requests: u64,
    pub rows: u64,
    pub cost_usd: f64,
    pub saved_usd: f64,
    /// Requests answered from the cache or a coalesced computation ("hit", "coalesced").
    pub cache_hits: u64,
    /// `cache_hits` over requests that consulted the cache (hit, coalesced, miss); 0 if none.
    pub hit_ratio: f64,
    /// Nearest-rank percentiles of request latency, read from the rollups' histograms: the
    /// upper bound of the bucket holding the rank (at most 35 % above the true value); `None`
    /// for rows without requests.
    pub p50_latency_ms: Option<f64>,
    pub p99_latency_ms: Option<f64>,
}

/// The SQL pieces shared by the cost queries: `g0 .. gN` expressions and their parameters.
/// The columns they name exist alike in `usage` and `usage_rollup`.
pub(super) struct Groups {
    pub(super) select: String,
    pub(super) columns: Vec<String>,
    pub(super) params: Vec<Param>,
}

/// An integer sum: PostgreSQL sums BIGINTs as NUMERIC, read back as BIGINT like SQLite's.
pub(super) fn int_sum(expr: &str) -> String {
    format!("CAST(SUM({expr}) AS BIGINT)")
}

/// Requests answered from the cache or a coalesced computation.
pub(super) const HITS: &str = "CASE WHEN cache IN ('hit', 'coalesced') THEN requests ELSE 0 END";
/// Requests that consulted the cache.
const LOOKUPS: &str = "CASE WHEN cache IN ('hit', 'coalesced', 'miss') THEN requests ELSE 0 END";

/// `span` picks the rollup rows of [from_ms, to_ms) (`rollup::Span::SOURCE`).
pub(super) fn group_sql(
    dialect: super::sql::Dialect,
    (from_ms, to_ms): (i64, i64),
    span: rollup::Span,
    group_by: &[GroupKey],
) -> Groups {
    // ?1 from, ?2 to, ?3 the idle tenant, ?4 and ?5 the whole hours, then one per tag key.
    let mut params = vec![
        Param::Int(from_ms),
        Param::Int(to_ms),
        Param::Text(IDLE_TENANT.into()),
        Param::Int(span.hours_from_ms),
        Param::Int(span.hours_to_ms),
    ];
    let mut select = String::new();
    let mut columns = Vec::new();
    for (i, key) in group_by.iter().enumerate() {
        let expr = match (key.column(), key) {
            (Some(column), _) => column.to_string(),
            (None, GroupKey::Tag(tag)) => {
                params.push(dialect.tag_param(tag));
                dialect.tag_expr(params.len())
            }
            (None, _) => "''".to_string(),
        };
        select.push_str(&format!("{expr} AS g{i}, "));
        columns.push(format!("g{i}"));
    }
    Groups {
        select,
        columns,
        params,
    }
}

/// The sums read from the rollups: a range covers the whole minutes it touches (the minute
/// holding `from_ms` up to the last one starting before `to_ms`).
pub(super) fn costs(db: &dyn Read, query: &CostQuery) -> Result<Vec<CostRow>, LedgerError> {
    let from = minute_floor(query.from_ms);
    let span = rollup::Span::new(from, query.to_ms, true);
    let g = group_sql(db.dialect(), (from, query.to_ms), span, &query.group_by);
    let n = g.columns.len();
    let lead = g
        .columns
        .iter()
        .map(|c| format!("{c}, "))
        .collect::<String>();
    let buckets: String = (0..rollup::BUCKETS).map(|i| format!(", h{i}")).collect();
    let bucket_sums: String = (0..rollup::BUCKETS)
        .map(|i| format!(", {}", int_sum(&format!("h{i}"))))
        .collect();
    let sql = format!(
        "WITH base AS (SELECT {sel}tenant = ?3 AS idle, requests, row_count, cost_usd, \
             saved_usd, cache{buckets} FROM {source}) \
         SELECT {lead}idle, {requests}, {rows}, SUM(cost_usd), SUM(saved_usd), {hits}, \
             {lookups}{bucket_sums} \
         FROM base GROUP BY {lead}idle ORDER BY {lead}idle",
        sel = g.select,
        source = rollup::Span::SOURCE,
        requests = int_sum("requests"),
        rows = int_sum("row_count"),
        hits = int_sum(HITS),
        lookups = int_sum(LOOKUPS),
    );
    let mut out = Vec::new();
    for row in db.rows(&sql, &g.params)? {
        let mut cells = row.into_iter();
        let values = cells
            .by_ref()
            .take(n)
            .map(Cell::into_text)
            .collect::<Result<Vec<String>, _>>()?;
        let rest: Vec<Cell> = cells.collect();
        let cell = |i: usize| rest.get(i).unwrap_or(&Cell::Null);
        let idle = cell(0).int()? != 0;
        let (requests, cache_hits, lookups) =
            (cell(1).count()?, cell(5).count()?, cell(6).count()?);
        let mut histogram = [0u64; rollup::BUCKETS];
        for (i, slot) in histogram.iter_mut().enumerate() {
            *slot = cell(7 + i).count()?;
        }
        let mut group: Vec<(String, String)> = query
            .group_by
            .iter()
            .map(|k| k.to_string())
            .zip(values)
            .collect();
        if idle && !query.group_by.contains(&GroupKey::Tenant) {
            group.push(("tenant".into(), IDLE_TENANT.into()));
        }
        out.push(CostRow {
            group,
            requests,
            rows: cell(2).count()?,
            cost_usd: cell(3).real()?,
            saved_usd: cell(4).real()?,
            cache_hits,
            hit_ratio: if lookups == 0 {
                0.0
            } else {
                cache_hits as f64 / lookups as f64
            },
            p50_latency_ms: rollup::percentile_ms(&histogram, 50),
            p99_latency_ms: rollup::percentile_ms(&histogram, 99),
        });
    }
    Ok(out)
}

/// A record by id and the time it carries: one probe of the time index.
pub(super) const BY_TIME: &str = "time_ms = ?1 AND request_id = ?2";
/// A record by id among the rows of a schema 1 ledger: a scan of that range of row ids only.
pub(super) const BY_LEGACY_ID: &str = "id <= ?1 AND request_id = ?2";

/// A record by request id without a scan of the table: the id's time narrows the search to
/// one entry of the time index. Rows copied from a schema 1 ledger (ids up to
/// `legacy_max_id`) may have ids without a time, or not their own; only they are scanned, and
/// only when the time did not find the record.
pub(super) fn usage(
    db: &dyn Read,
    request_id: &str,
    legacy_max_id: i64,
) -> Result<Option<UsageRecord>, LedgerError> {
    let id = Param::Text(request_id.to_string());
    if let Some(time_ms) = record::id_time(request_id) {
        let sql = format!(
            "SELECT {} FROM usage WHERE {BY_TIME}",
            store::RECORD_COLUMNS
        );
        let found = one_record(db, &sql, &[Param::Int(time_ms), id.clone()])?;
        if found.is_some() {
            return Ok(found);
        }
    }
    if legacy_max_id == 0 {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {} FROM usage WHERE {BY_LEGACY_ID}",
        store::RECORD_COLUMNS
    );
    one_record(db, &sql, &[Param::Int(legacy_max_id), id])
}

fn one_record(
    db: &dyn Read,
    sql: &str,
    params: &[Param],
) -> Result<Option<UsageRecord>, LedgerError> {
    match db.rows(sql, params)?.into_iter().next() {
        Some(row) => Ok(Some(store::record_from_cells(row)?)),
        None => Ok(None),
    }
}

pub(super) fn spend_of_tenant(
    db: &dyn Read,
    tenant: &str,
    since_ms: i64,
) -> Result<f64, LedgerError> {
    spend_since(db, ("tenant = ?3", tenant), &[], since_ms)
}

/// Cost since `since_ms` of the rows `filter` keeps: ?1 the minute it falls in, ?2 the end of
/// time, ?3 the filter's value, ?4 and ?5 the whole hours since then, ?6 and on `more`.
fn spend_since(
    db: &dyn Read,
    (filter, value): (&str, &str),
    more: &[Param],
    since_ms: i64,
) -> Result<f64, LedgerError> {
    let sql = format!(
        "SELECT COALESCE(SUM(cost_usd), 0.0) FROM {} WHERE {filter}",
        rollup::Span::SOURCE
    );
    let since = minute_floor(since_ms);
    let span = rollup::Span::new(since, i64::MAX, true);
    let mut params = vec![
        Param::Int(since),
        Param::Int(i64::MAX),
        Param::Text(value.to_string()),
        Param::Int(span.hours_from_ms),
        Param::Int(span.hours_to_ms),
    ];
    params.extend_from_slice(more);
    let rows = db.rows(&sql, &params)?;
    rows.first()
        .and_then(|row| row.first())
        .map_or(Ok(0.0), Cell::real)
}

/// Spend totals read rollups, whose rows start on whole minutes; budget periods do too.
pub(super) fn minute_floor(ms: i64) -> i64 {
    ms.div_euclid(60_000) * 60_000
}

/// Idle records carry no real team; they never count towards one.
pub(super) fn spend_of_team(db: &dyn Read, team: &str, since_ms: i64) -> Result<f64, LedgerError> {
    spend_since(
        db,
        ("team = ?3 AND tenant <> ?6", team),
        &[Param::Text(IDLE_TENANT.into())],
        since_ms,
    )
}
