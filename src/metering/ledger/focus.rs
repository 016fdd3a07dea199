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
//!   both end exclusively, as FOCUS defines.
//! - Costs are the ledger's figures, not converted: `currency` only names them.
//! - `Tags` holds the request tags plus `tollgate/team` and `tollgate/project` (provider tags
//!   carry a prefix so they cannot collide with the user's keys).

use rusqlite::Connection;

use super::query::check_range;
use super::{store, LedgerError, QueryError};
use crate::metering::record::IDLE_TENANT;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
const SERVICE_CATEGORY: &str = "AI and Machine Learning";
const SERVICE_NAME: &str = "Model Inference";

/// Every column, in output order: the mandatory ones first, then conditional, then custom.
pub(super) const COLUMNS: [&str; 34] = [
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

pub(super) fn csv(conn: &Connection, q: &FocusQuery) -> Result<String, LedgerError> {
    // Floor to the hour even for (theoretical) times before 1970, where % is negative.
    let sql = format!(
        "WITH base AS (SELECT time_ms - ((time_ms % {HOUR_MS}) + {HOUR_MS}) % {HOUR_MS} AS hour, \
             tenant, model, team, project, tags, row_count, cost_usd, saved_usd, cache, \
             CASE WHEN tenant = ?3 THEN compute_us \
                  WHEN cache IN ('hit', 'coalesced') OR batch_size <= 0 THEN 0 \
                  ELSE CAST(compute_us AS REAL) * row_count / batch_size END / 1e6 AS device_s \
             FROM usage WHERE time_ms >= ?1 AND time_ms < ?2) \
         SELECT hour, tenant, model, team, project, tags, SUM(tenant <> ?3), SUM(row_count), \
             SUM(cost_usd), SUM(saved_usd), SUM(tenant <> ?3 AND cache IN ('hit', 'coalesced')), \
             SUM(device_s) \
         FROM base GROUP BY hour, tenant, model, team, project, tags \
         ORDER BY hour, tenant, model, team, project, tags"
    );
    let mut out = String::new();
    push_line(&mut out, COLUMNS.iter().map(|c| c.to_string()));
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params![q.from_ms, q.to_ms, IDLE_TENANT])?;
    while let Some(row) = rows.next()? {
        let hour: i64 = row.get(0)?;
        let (tenant, model): (String, String) = (row.get(1)?, row.get(2)?);
        let (team, project, tags): (String, String, String) =
            (row.get(3)?, row.get(4)?, row.get(5)?);
        let (requests, rows_sum): (i64, i64) = (row.get(6)?, row.get(7)?);
        let (cost, saved): (f64, f64) = (row.get(8)?, row.get(9)?);
        let (hits, device_s): (i64, f64) = (row.get(10)?, row.get(11)?);
        let cost = decimal(cost);
        let description = if tenant == IDLE_TENANT {
            format!("Idle device time of model {model}")
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
            focus_tags(&tags, &team, &project)?,
            requests.to_string(),
            rows_sum.to_string(),
            hits.to_string(),
            decimal(saved),
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

/// (year, month, day) of a day counted from 1970-01-01, in the proleptic Gregorian calendar.
/// Counting from March 1 puts the leap day last in the year; eras of 400 years repeat exactly.
pub(super) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468; // days from 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of `civil_from_days`.
pub(super) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `2026-11-28T23:00:00Z` (whole seconds; FOCUS timestamps need no more).
pub(super) fn iso8601(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
    let (year, month, day) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

pub(super) fn month_start(ms: i64) -> i64 {
    let (year, month, _) = civil_from_days(ms.div_euclid(DAY_MS));
    days_from_civil(year, month, 1) * DAY_MS
}

pub(super) fn next_month_start(ms: i64) -> i64 {
    let (year, month, _) = civil_from_days(ms.div_euclid(DAY_MS));
    let (year, month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    days_from_civil(year, month, 1) * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_known_instants() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (1_709_164_800_000, "2024-02-29T00:00:00Z"),
            (1_798_758_000_000, "2026-12-31T23:00:00Z"),
            (1_795_906_800_000, "2026-11-28T23:00:00Z"),
            (1_795_906_859_999, "2026-11-28T23:00:59Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00Z"),
        ];
        for &(ms, want) in cases {
            assert_eq!(iso8601(ms), want, "{ms}");
        }
    }

    #[test]
    fn civil_dates_round_trip_over_centuries() {
        // Every day from 1600 to 2400 (leap rules for 4, 100 and 400 years all occur).
        let (first, last) = (days_from_civil(1600, 1, 1), days_from_civil(2400, 12, 31));
        let mut previous = civil_from_days(first - 1);
        for days in first..=last {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            if d != 1 {
                assert_eq!((y, m, d - 1), previous, "day {days}");
            }
            previous = (y, m, d);
        }
        assert_eq!(
            civil_from_days(days_from_civil(1900, 3, 1) - 1),
            (1900, 2, 28)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2000, 3, 1) - 1),
            (2000, 2, 29)
        );
    }

    #[test]
    fn billing_periods_are_calendar_months() {
        let ms = 1_795_906_800_000; // 2026-11-28T23:00:00Z
        assert_eq!(iso8601(month_start(ms)), "2026-11-01T00:00:00Z");
        assert_eq!(iso8601(next_month_start(ms)), "2026-12-01T00:00:00Z");
        let december = 1_798_758_000_000; // 2026-12-31T23:00:00Z
        assert_eq!(iso8601(next_month_start(december)), "2027-01-01T00:00:00Z");
        assert_eq!(month_start(month_start(ms)), month_start(ms));
    }

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
