//! Cost over time: the rollups summed per step (whole minutes, aligned to the epoch) and per
//! group, for dashboards and `GET /v1/costs/timeseries`.

use super::query::{check_keys_and_range, group_sql, int_sum, GroupKey, HITS};
use super::sql::{Cell, Read};
use super::{rollup, LedgerError, QueryError};
use crate::metering::record::IDLE_TENANT;

/// Most steps one query may span.
pub const MAX_POINTS: i64 = 20_000;
const MINUTE_MS: i64 = 60_000;

/// Cost of [from_ms, to_ms) per `step_ms` and group. A minute belongs to the range when it
/// starts inside it: the rollups know minutes, not the seconds within them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeseriesQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_ms: i64,
    pub group_by: Vec<GroupKey>,
}

impl TimeseriesQuery {
    pub fn validate(&self) -> Result<(), QueryError> {
        check_keys_and_range(&self.group_by, self.from_ms, self.to_ms)?;
        if self.step_ms < MINUTE_MS || self.step_ms % MINUTE_MS != 0 {
            return Err(QueryError::BadStep(self.step_ms / 1000));
        }
        let points = (self.to_ms - self.from_ms) / self.step_ms + 1;
        if points > MAX_POINTS {
            return Err(QueryError::TooManyPoints { points });
        }
        Ok(())
    }
}

/// One step of one series; steps without usage are left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The step's start, a multiple of the step since the epoch.
    pub t_ms: i64,
    pub requests: u64,
    pub cost_usd: f64,
    pub saved_usd: f64,
    /// Requests answered from the cache or a coalesced computation.
    pub cache_hits: u64,
}

/// The points of one group, in time order. Idle time forms series of its own, labelled
/// `("tenant", "__idle__")`, as in the cost breakdown.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub group: Vec<(String, String)>,
    pub points: Vec<Point>,
}

pub(super) fn timeseries(
    db: &dyn Read,
    query: &TimeseriesQuery,
) -> Result<Vec<Series>, LedgerError> {
    // The hour tier serves only steps of whole hours, which then never split an hour.
    let span = rollup::Span::new(query.from_ms, query.to_ms, query.step_ms % 3_600_000 == 0);
    let g = group_sql(
        db.dialect(),
        (query.from_ms, query.to_ms),
        span,
        &query.group_by,
    );
    let n = g.columns.len();
    let lead: String = g.columns.iter().map(|c| format!("{c}, ")).collect();
    // The step is a validated integer, written into the statement rather than bound.
    let sql = format!(
        "WITH base AS (SELECT {sel}tenant = ?3 AS idle, minute_ms / {step} AS slot, requests, \
             cost_usd, saved_usd, cache FROM {source}) \
         SELECT {lead}idle, slot, {requests}, SUM(cost_usd), SUM(saved_usd), {hits} \
         FROM base GROUP BY {lead}idle, slot ORDER BY {lead}idle, slot",
        sel = g.select,
        step = query.step_ms,
        source = rollup::Span::SOURCE,
        requests = int_sum("requests"),
        hits = int_sum(HITS),
    );
    let mut out: Vec<Series> = Vec::new();
    let mut current: Option<(Vec<String>, bool)> = None;
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
        let point = Point {
            t_ms: cell(1).int()?.saturating_mul(query.step_ms),
            requests: cell(2).count()?,
            cost_usd: cell(3).real()?,
            saved_usd: cell(4).real()?,
            cache_hits: cell(5).count()?,
        };
        let key = (values, idle);
        if current.as_ref() != Some(&key) {
            let mut group: Vec<(String, String)> = query
                .group_by
                .iter()
                .map(|k| k.to_string())
                .zip(key.0.iter().cloned())
                .collect();
            if idle && !query.group_by.contains(&GroupKey::Tenant) {
                group.push(("tenant".into(), IDLE_TENANT.into()));
            }
            out.push(Series {
                group,
                points: Vec::new(),
            });
            current = Some(key);
        }
        if let Some(series) = out.last_mut() {
            series.points.push(point);
        }
    }
    Ok(out)
}
