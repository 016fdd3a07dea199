//! The FOCUS 1.x export: one CSV row per tenant × model × hour (and tag set), with the 21
//! mandatory columns, the conditional ones that fit an inference gateway, and `x_` columns
//! for what FOCUS has no name for.
//!
//! Decisions:
//! - Rows are split further by team, project and tags, so allocation by tag stays possible;
//!   a tenant whose requests carry one tag set still gets exactly one row per model and hour.
//! - Pricing is per device hour (`[pricing.device_per_hour]`), so `PricingUnit` is "Hours" and
//!   `PricingQuantity` the device hours the row's requests were charged for: a request's share
//!   of its batch (compute time × rows / batch rows), nothing for cache hits and coalesced
//!   answers, the whole stretch for idle records. `ConsumedQuantity` is the same time in
//!   seconds. Costs are list prices without discounts, so List, Contracted, Effective and
//!   Billed cost are equal.
//! - Charge periods are whole UTC hours by arrival time, billing periods calendar months;
//!   both end exclusively, as FOCUS defines. The export reads the per-minute rollups, so a
//!   range covers the whole minutes it touches.
//! - Costs are the ledger's figures, not converted: `currency` only names them.
//! - Rows are split by lane too (`x_Lane`: realtime, demoted, deferred); a deferred job's rows
//!   say so in `ChargeDescription`. Their cost is already discounted by
//!   `deferred.price_factor`, and List, Contracted and Effective cost carry that same figure.
//! - `Tags` holds the request tags plus `tollgate/team` and `tollgate/project` (provider tags
//!   carry a prefix so they cannot collide with the user's keys).

use crate::metering::clock::{iso8601, month_start, next_month_start};

use super::query::{check_range, int_sum, HITS};
use super::sql::{Cell, Param, Read};
use super::{store, LedgerError, QueryError};
use crate::metering::record::{IDLE_TENANT, LANE_DEFERRED};

const HOUR_MS: i64 = 3_600_000;
const SERVICE_CATEGORY: &str = "AI and Machine Learning";
const SERVICE_NAME: &str = "Model Inference";

/// Every column, in output order: the mandatory ones first, then conditional, then custom.
pub(super) const COLUMNS: [&str; 35] = [
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
    "ChargeFrequency",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    "x_Requests",
    "x_Rows",
    "x_CacheHits",
    "x_SavedCost",
    "x_Lane",
];

/// An export of the records that arrived in [from_ms, to_ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FocusQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    /// ISO 4217 code the costs are stated in (BillingCurrency).
    pub currency: String,
    /// BillingAccountId and BillingAccountName.
    pub billing_account: String,
    /// ProviderName, PublisherName and InvoiceIssuerName.
    pub provider: String,
}

impl FocusQuery {
    pub fn validate(&self) -> Result<(), QueryError> {
        check_range(self.from_ms, self.to_ms)?;
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(QueryError::BadCurrency(self.currency.clone()));
        }
        if self.billing_account.is_empty() {
            return Err(QueryError::Empty("billing_account"));
        }
        if self.provider.is_empty() {
            return Err(QueryError::Empty("provider"));
        }
        Ok(())
    }
}

pub(super) fn csv(db: &dyn Read, q: &FocusQuery) -> Result<String, LedgerError> {
    // Floor to the hour even for (theoretical) times before 1970, where % is negative.
    let sql = format!(
        "WITH base AS (SELECT \
             minute_ms - ((minute_ms % {HOUR_MS}) + {HOUR_MS}) % {HOUR_MS} AS hour, \
             tenant, model, team, project, tags, requests, row_count, cost_usd, saved_usd, cache, \
             device_us, lane FROM {source}) \
         SELECT hour, tenant, model, team, project, tags, {requests}, {rows}, \
             SUM(cost_usd), SUM(saved_usd), {hits}, SUM(device_us) / 1000000.0, lane \
         FROM base GROUP BY hour, tenant, model, team, project, tags, lane \
         ORDER BY hour, tenant, model, team, project, tags, lane",
        source = super::rollup::Span::SOURCE,
        requests = int_sum("requests"),
        rows = int_sum("row_count"),
        hits = int_sum(HITS),
    );
    let mut out = String::new();
    push_line(&mut out, COLUMNS.iter().map(|c| c.to_string()));
    let from = super::query::minute_floor(q.from_ms);
    let span = super::rollup::Span::new(from, q.to_ms, true);
    let params = [
        Param::Int(from),
        Param::Int(q.to_ms),
        Param::Text(IDLE_TENANT.into()),
        Param::Int(span.hours_from_ms),
        Param::Int(span.hours_to_ms),
    ];
    for row in db.rows(&sql, &params)? {
        let cell = |i: usize| row.get(i).unwrap_or(&Cell::Null);
        let hour = cell(0).int()?;
        let (tenant, model) = (cell(1).text()?.to_string(), cell(2).text()?.to_string());
        let (team, project, tags) = (cell(3).text()?, cell(4).text()?, cell(5).text()?);
        let (requests, rows_sum) = (cell(6).int()?, cell(7).int()?);
        let (cost, saved) = (cell(8).real()?, cell(9).real()?);
        let (hits, device_s) = (cell(10).int()?, cell(11).real()?);
        let lane = cell(12).text()?.to_string();
        let cost = decimal(cost);
        let description = if tenant == IDLE_TENANT {
            format!("Idle device time of model {model}")
        } else if lane == LANE_DEFERRED {
            format!(
                "Deferred inference (batch job, discounted) on model {model} for tenant {tenant}"
            )
        } else {
            format!("Inference on model {model} for tenant {tenant}")
        };
        let fields = [
            cost.clone(),
            q.billing_account.clone(),
            q.billing_account.clone(),
            q.currency.clone(),
            iso8601(month_start(hour)),
            iso8601(next_month_start(hour)),
            "Usage".into(),
            String::new(),
            description,
            iso8601(hour),
            iso8601(hour + HOUR_MS),
            cost.clone(),
            cost.clone(),
            q.provider.clone(),
            cost,
            decimal(device_s / 3600.0),
            "Hours".into(),
            q.provider.clone(),
            q.provider.clone(),
            SERVICE_CATEGORY.into(),
            SERVICE_NAME.into(),
            "Usage-Based".into(),
            decimal(device_s),
            "Seconds".into(),
            model.clone(),
            model,
            "Model".into(),
            tenant.clone(),
            tenant,
            focus_tags(tags, team, project)?,
            requests.to_string(),
            rows_sum.to_string(),
            hits.to_string(),
            decimal(saved),
            lane,
        ];
        push_line(&mut out, fields.into_iter());
    }
    Ok(out)
}

fn focus_tags(tags: &str, team: &str, project: &str) -> Result<String, LedgerError> {
    let mut all = store::tags_from_json(tags)?;
    for (key, value) in [("tollgate/team", team), ("tollgate/project", project)] {
        if !value.is_empty() {
            all.push((key.into(), value.into()));
        }
    }
    Ok(store::tags_json(&all))
}

/// Plain decimal notation (Rust's `Display` for f64 never uses an exponent); no "-0".
fn decimal(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        "0".into()
    } else {
        v.to_string()
    }
}

/// One CSV record, RFC 4180: fields with a comma, quote or line break are quoted, quotes
/// doubled; lines end in CRLF.
fn push_line(out: &mut String, fields: impl Iterator<Item = String>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if field.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&field);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = String::new();
        let fields = ["plain", "a,b", "say \"hi\"", "two\nlines", ""];
        push_line(&mut out, fields.iter().map(|f| f.to_string()));
        assert_eq!(out, "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n");
    }

    #[test]
    fn decimals_never_use_exponents() {
        assert_eq!(decimal(1e-7), "0.0000001");
        assert_eq!(decimal(-0.0), "0");
        assert_eq!(decimal(2.5), "2.5");
    }
}
