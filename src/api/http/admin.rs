//! The `/v1` endpoints for operators and FinOps: costs (JSON and FOCUS CSV), single usage
//! records, budgets, alerts, and cache purges. All need the admin token, except that a tenant
//! may read its own costs, usage records and budget.

use super::{error_response, json_response, Body};
use crate::gateway::Error;
use crate::gateway::{Credentials, Gateway};
use crate::metering::clock;
use crate::metering::identity::Caller;
use crate::metering::ledger::{CostQuery, FocusQuery, GroupKey, TimeseriesQuery};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde_json::json;

/// The `/v1` endpoints, each with the one method it answers.
#[derive(Clone, Copy)]
enum Endpoint<'a> {
    Costs,
    Timeseries,
    Focus,
    Usage(&'a str),
    Alerts,
    Budgets,
    Rightsizing,
    Cache,
    Reload,
}

impl<'a> Endpoint<'a> {
    fn find(segments: &[&'a str]) -> Option<Endpoint<'a>> {
        Some(match segments {
            ["costs"] => Endpoint::Costs,
            ["costs", "focus"] => Endpoint::Focus,
            ["costs", "timeseries"] => Endpoint::Timeseries,
            ["usage", request_id] => Endpoint::Usage(request_id),
            ["alerts"] => Endpoint::Alerts,
            ["budgets"] => Endpoint::Budgets,
            ["rightsizing"] => Endpoint::Rightsizing,
            ["cache"] => Endpoint::Cache,
            ["admin", "reload"] => Endpoint::Reload,
            _ => return None,
        })
    }

    fn method(self) -> Method {
        match self {
            Endpoint::Cache => Method::DELETE,
            Endpoint::Reload => Method::POST,
            _ => Method::GET,
        }
    }
}

/// Serves `/v1/...`; `None` when no endpoint matches the path. A known path asked with another
/// method is a 405 before any credential is looked at.
pub async fn route(
    gateway: &Gateway,
    method: &Method,
    segments: &[&str],
    query: Option<&str>,
    credentials: &Credentials,
) -> Option<Response<Body>> {
    let endpoint = Endpoint::find(segments)?;
    if *method != endpoint.method() {
        return Some(super::method_not_allowed(method, &endpoint.method()));
    }
    let identities = &gateway.metering.identities();
    let caller = match identities.admin_caller(credentials.bearer.as_deref()) {
        Ok(caller) => caller,
        Err(error) => return Some(error_response(&Error::from(error))),
    };
    let admin = identities.require_admin(&caller).map_err(Error::from);
    let result = match endpoint {
        Endpoint::Costs => costs(gateway, &caller, admin.is_ok(), query).await,
        Endpoint::Timeseries => timeseries(gateway, &caller, admin.is_ok(), query).await,
        Endpoint::Focus => match admin {
            Ok(()) => focus(gateway, query).await,
            Err(error) => Err(error),
        },
        Endpoint::Usage(request_id) => usage(gateway, &caller, admin.is_ok(), request_id).await,
        Endpoint::Alerts => admin.map(|()| {
            json_response(
                StatusCode::OK,
                &json!({"alerts": gateway.metering.alerts.list()}),
            )
        }),
        Endpoint::Budgets => Ok(budgets(gateway, &caller, admin.is_ok())),
        Endpoint::Rightsizing => match admin {
            Ok(()) => super::rightsizing::report(gateway).await,
            Err(error) => Err(error),
        },
        Endpoint::Cache => match admin {
            Ok(()) => Ok(purge_cache(gateway, query).await),
            Err(error) => Err(error),
        },
        Endpoint::Reload => match admin {
            Ok(()) => gateway
                .reload()
                .await
                .map(|report| json_response(StatusCode::OK, &report.to_json())),
            Err(error) => Err(error),
        },
    };
    Some(result.unwrap_or_else(|error| error_response(&error)))
}

/// The first value of `name` in the query string, decoded as a form would be (`%3A` is `:`,
/// `+` a space): clients such as Python's `requests` encode every reserved character.
fn parameter(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// `from` and `to` (Unix seconds, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ`); by default the
/// current month up to now.
fn range(query: Option<&str>) -> Result<(i64, i64), Error> {
    let now = clock::now_ms();
    let read = |name: &str, default: i64| {
        match parameter(query, name) {
        None => Ok(default),
        Some(text) => clock::parse_time(&text).ok_or_else(|| {
            Error::BadQuery(format!(
                "{name}: `{text}` is not a time (use Unix seconds, a date such as 2026-12-01, or an RFC 3339 time with its offset such as 2026-12-01T00:00:00Z)"
            ))
        }),
    }
    };
    Ok((read("from", clock::month_start(now))?, read("to", now + 1)?))
}

/// `group_by` (by tenant when absent) and, for a tenant reading its own costs, the tenant it
/// is limited to: tenant is then always a grouping key, so its rows can be kept alone.
fn grouping(
    caller: &Caller,
    admin: bool,
    query: Option<&str>,
) -> Result<(Vec<GroupKey>, Option<String>), Error> {
    let mut group_by = match parameter(query, "group_by") {
        Some(text) => {
            GroupKey::parse_list(&text).map_err(|e| Error::BadQuery(format!("group_by: {e}")))?
        }
        None => vec![GroupKey::Tenant],
    };
    let own_tenant = (!admin).then(|| caller.tenant.name.to_string());
    if own_tenant.is_some() && !group_by.contains(&GroupKey::Tenant) {
        group_by.insert(0, GroupKey::Tenant);
    }
    Ok((group_by, own_tenant))
}

/// True when `group` may be shown to a caller limited to `own_tenant`.
fn visible(group: &[(String, String)], own_tenant: &Option<String>) -> bool {
    match own_tenant {
        None => true,
        Some(name) => group.iter().any(|(k, v)| k == "tenant" && v == name),
    }
}

fn group_json(group: Vec<(String, String)>) -> serde_json::Map<String, serde_json::Value> {
    group.into_iter().map(|(k, v)| (k, v.into())).collect()
}

async fn costs(
    gateway: &Gateway,
    caller: &Caller,
    admin: bool,
    query: Option<&str>,
) -> Result<Response<Body>, Error> {
    let (from_ms, to_ms) = range(query)?;
    let (group_by, own_tenant) = grouping(caller, admin, query)?;
    let cost_query = CostQuery {
        from_ms,
        to_ms,
        group_by,
    };
    cost_query
        .validate()
        .map_err(|e| Error::BadQuery(e.to_string()))?;
    let ledger = gateway.metering.ledger.clone();
    let rows = tokio::task::spawn_blocking(move || ledger.costs(&cost_query))
        .await
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?;
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|row| visible(&row.group, &own_tenant))
        .map(|row| {
            json!({
                "group": group_json(row.group),
                "requests": row.requests,
                "rows": row.rows,
                "cost_usd": row.cost_usd,
                "saved_usd": row.saved_usd,
                "cache_hits": row.cache_hits,
                "hit_ratio": row.hit_ratio,
                "p50_latency_ms": row.p50_latency_ms,
                "p99_latency_ms": row.p99_latency_ms,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "from": clock::iso8601(from_ms),
            "to": clock::iso8601(to_ms),
            "currency": gateway.metering.currency,
            "rows": rows,
        }),
    ))
}

/// `GET /v1/costs/timeseries`: cost per step (`step_seconds`, whole minutes, 60 by default)
/// and group, read from the rollups.
async fn timeseries(
    gateway: &Gateway,
    caller: &Caller,
    admin: bool,
    query: Option<&str>,
) -> Result<Response<Body>, Error> {
    let (from_ms, to_ms) = range(query)?;
    let (group_by, own_tenant) = grouping(caller, admin, query)?;
    let step_s = match parameter(query, "step_seconds") {
        None => 60,
        Some(text) => text.parse::<i64>().map_err(|_| {
            Error::BadQuery(format!(
                "step_seconds: `{text}` is not a whole number of seconds"
            ))
        })?,
    };
    let series_query = TimeseriesQuery {
        from_ms,
        to_ms,
        step_ms: step_s.saturating_mul(1000),
        group_by,
    };
    series_query
        .validate()
        .map_err(|e| Error::BadQuery(e.to_string()))?;
    let ledger = gateway.metering.ledger.clone();
    let series = tokio::task::spawn_blocking(move || ledger.timeseries(&series_query))
        .await
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?;
    let series: Vec<_> = series
        .into_iter()
        .filter(|s| visible(&s.group, &own_tenant))
        .map(|s| {
            let points: Vec<_> = s
                .points
                .iter()
                .map(|p| {
                    json!({
                        "t": clock::iso8601(p.t_ms),
                        "requests": p.requests,
                        "cost_usd": p.cost_usd,
                        "saved_usd": p.saved_usd,
                        "cache_hits": p.cache_hits,
                    })
                })
                .collect();
            json!({"group": group_json(s.group), "points": points})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "from": clock::iso8601(from_ms),
            "to": clock::iso8601(to_ms),
            "currency": gateway.metering.currency,
            "step_seconds": step_s,
            "series": series,
        }),
    ))
}

/// `GET /v1/budgets`: every tenant budget (a tenant: its own), with the spend projected to
/// the end of the period at this period's rate so far.
fn budgets(gateway: &Gateway, caller: &Caller, admin: bool) -> Response<Body> {
    let now_ms = clock::now_ms();
    let budgets: Vec<_> = gateway
        .metering
        .budgets(now_ms)
        .into_iter()
        .filter(|b| admin || b.tenant == caller.tenant.name.as_str())
        .map(|b| {
            json!({
                "tenant": b.tenant,
                "limit_usd": b.limit,
                "spent_usd": b.spent,
                "used_ratio": if b.limit > 0.0 { b.spent / b.limit } else { 1.0 },
                "projected_usd": b.projected(now_ms),
                "runs_out": b.runs_out_ms(now_ms).map(clock::iso8601),
                "period": b.period_name(),
                "period_start": clock::iso8601(b.period_start_ms),
                "period_end": clock::iso8601(b.period_end_ms),
                "action": b.action_name(),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"currency": gateway.metering.currency, "budgets": budgets}),
    )
}

async fn focus(gateway: &Gateway, query: Option<&str>) -> Result<Response<Body>, Error> {
    let (from_ms, to_ms) = range(query)?;
    let focus_query = FocusQuery {
        from_ms,
        to_ms,
        currency: gateway.metering.currency.clone(),
        billing_account: "tollgate".into(),
        provider: "Tollgate".into(),
    };
    let ledger = gateway.metering.ledger.clone();
    let csv = tokio::task::spawn_blocking(move || ledger.focus_csv(&focus_query))
        .await
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?
        .map_err(|e| match e {
            crate::metering::ledger::LedgerError::Query(q) => Error::BadQuery(q.to_string()),
            other => Error::LedgerUnavailable(other.to_string()),
        })?;
    let mut response = Response::new(Body::from(csv));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    Ok(response)
}

async fn usage(
    gateway: &Gateway,
    caller: &Caller,
    admin: bool,
    request_id: &str,
) -> Result<Response<Body>, Error> {
    let ledger = gateway.metering.ledger.clone();
    let id = request_id.to_string();
    let record = tokio::task::spawn_blocking(move || ledger.usage(&id))
        .await
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?
        .map_err(|e| Error::LedgerUnavailable(e.to_string()))?;
    // Another tenant's record reads as absent rather than forbidden: ids are not secrets, but
    // their existence need not be confirmed.
    let record = record.filter(|r| admin || r.tenant == caller.tenant.name);
    let Some(r) = record else {
        let why = match gateway
            .metering
            .ledger
            .why_not_kept(request_id, clock::now_ms())
        {
            Some(reason) => format!(": {reason}"),
            None => String::new(),
        };
        return Err(Error::NotFound(format!(
            "no usage record `{request_id}`{why}"
        )));
    };
    let tags: serde_json::Map<String, serde_json::Value> = r
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "request_id": r.request_id, "time": clock::iso8601(r.time_ms), "tenant": r.tenant,
            "team": r.team, "project": r.project, "tags": tags, "model": r.model,
            "version": r.version, "protocol": r.protocol, "cache": r.cache, "rows": r.rows,
            "batch_size": r.batch_size, "queue_us": r.queue_us, "compute_us": r.compute_us,
            "latency_us": r.latency_us, "cost_usd": r.cost_usd, "saved_usd": r.saved_usd,
            "outcome": r.outcome, "device": r.device, "lane": r.lane,
        }),
    ))
}

async fn purge_cache(gateway: &Gateway, query: Option<&str>) -> Response<Body> {
    let model = parameter(query, "model");
    if let Some(name) = &model {
        if let Err(error) = gateway.model(name, None) {
            return error_response(&error);
        }
    }
    let Some(cache) = &gateway.cache else {
        return json_response(StatusCode::OK, &json!({"purged": 0, "cache": "disabled"}));
    };
    let purged = cache.purge(model.as_deref()).await;
    json_response(StatusCode::OK, &json!({"purged": purged, "model": model}))
}
