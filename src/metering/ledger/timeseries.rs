//! Cost over time: the rollups summed per step (whole minutes, aligned to the epoch) and per
//! group, for dashboards and `GET /v1/costs/timeseries`.

use rusqlite::Connection;

use super::query::{check_keys_and_range, group_sql, GroupKey};
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
    conn: &Connection,
    query: &TimeseriesQuery,
) -> Result<Vec<Series>, LedgerError> {
    // The hour tier serves only steps of whole hours, which then never split an hour.
    let span = rollup::Span::new(query.from_ms, query.to_ms, query.step_ms % 3_600_000 == 0);
    let g = group_sql(query.from_ms, query.to_ms, span, &query.group_by);
    let n = g.columns.len();
    let lead: String = g.columns.iter().map(|c| format!("{c}, ")).collect();
    // The step is a validated integer, written into the statement rather than bound.
    let sql = format!(
        "WITH base AS (SELECT {sel}tenant = ?3 AS idle, minute_ms / {step} AS slot, requests, \
             cost_usd, saved_usd, cache FROM {source}) \
         SELECT {lead}idle, slot, SUM(requests), SUM(cost_usd), SUM(saved_usd), \
             SUM(CASE WHEN cache IN ('hit', 'coalesced') THEN requests ELSE 0 END) \
         FROM base GROUP BY {lead}idle, slot ORDER BY {lead}idle, slot",
        sel = g.select,
        step = query.step_ms,
        source = rollup::Span::SOURCE,
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(g.params.iter()))?;
    let mut out: Vec<Series> = Vec::new();
    let mut current: Option<(Vec<String>, bool)> = None;
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            values.push(row.get::<_, String>(i)?);
        }
        let idle: bool = row.get(n)?;
        let unsigned = |i: usize| -> rusqlite::Result<u64> {
            Ok(u64::try_from(row.get::<_, i64>(i)?).unwrap_or(0))
        };
        let point = Point {
            t_ms: row.get::<_, i64>(n + 1)? * query.step_ms,
            requests: unsigned(n + 2)?,
            cost_usd: row.get(n + 3)?,
            saved_usd: row.get(n + 4)?,
            cache_hits: unsigned(n + 5)?,
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
