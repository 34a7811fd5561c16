//! The admin API's operational endpoints: `POST /reload`, `GET /usage` (and `/usage/recent`,
//! `/usage/hourly`), `GET /metrics`, `GET /upstreams` and `GET /healthz`.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::error::ApiError;
use super::json_response;
use super::recent::RecentUsage;
use super::route::query_param;
use crate::config::tenant::is_valid_tenant_name;
use crate::metrics;
use crate::reload::{ReloadOutcome, Reloader};
use crate::snapshot::SharedState;
use crate::usage_store::{UsageRow, UsageStore};

/// `POST /reload`: re-reads the config file now. A file that fails keeps the old config
/// serving and answers 422 with the reason (file:line: what).
pub(super) async fn reload(reloader: &Reloader) -> Result<Response<Full<Bytes>>, ApiError> {
    let outcome = match reloader.reload().await {
        Ok(ReloadOutcome::Applied) => "applied",
        Ok(ReloadOutcome::Unchanged) => "unchanged",
        Err(err) => return Err(ApiError::ReloadRejected(err.to_string())),
    };
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "outcome": outcome }),
    ))
}

/// The `GET /usage` answer.
#[derive(Serialize)]
struct UsageReport {
    /// Counted in memory since this process started, flushed or not.
    since_start: Vec<UsageRow>,
    /// Everything flushed to the usage database, over all time and restarts (up to one
    /// flush interval behind `since_start`); `None` when metering is off. Not to be added
    /// to `since_start`: the two overlap.
    database: Option<Vec<UsageRow>>,
    /// In a fleet: totals over every gateway from the ledger in PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<Vec<UsageRow>>,
}

/// `GET /usage[?tenant=NAME]`: per-tenant totals, from memory and from the database.
pub(super) async fn usage(
    state: &SharedState,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    usage_with(state, query, None).await
}

/// [`usage`], with the fleet ledger's totals over every gateway when there is one.
pub(super) async fn usage_with(
    state: &SharedState,
    query: Option<&str>,
    fleet: Option<&crate::fleet::Fleet>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let tenant =
        query_param(query, "tenant").map_err(|err| ApiError::BadRequest(err.to_string()))?;
    if tenant.as_deref().is_some_and(|t| !is_valid_tenant_name(t)) {
        return Err(ApiError::BadRequest(
            "query parameter `tenant` is not a valid tenant name".to_owned(),
        ));
    }
    let mut since_start: Vec<UsageRow> = state
        .telemetry
        .usage
        .totals()
        .into_iter()
        .filter(|(name, _)| tenant.as_deref().is_none_or(|t| t == &**name))
        .map(|(name, usage)| UsageRow {
            tenant: name.to_string(),
            hour: None,
            usage,
        })
        .collect();
    since_start.sort_unstable_by(|a, b| a.tenant.cmp(&b.tenant));

    let for_database = tenant.clone();
    let database = match state.load().config.usage.database.clone() {
        None => None,
        // The flusher creates it on its first flush; until then there is nothing to report.
        Some(path) if !path.exists() => Some(Vec::new()),
        Some(path) => Some(
            tokio::task::spawn_blocking(move || {
                UsageStore::open_read_only(&path)?.report(for_database.as_deref(), None)
            })
            .await
            .map_err(|err| ApiError::Internal(format!("the usage query did not finish: {err}")))?
            .map_err(|err| ApiError::Internal(err.to_string()))?,
        ),
    };
    let fleet = match fleet {
        None => None,
        Some(fleet) => {
            let unavailable = |err: crate::fleet::FleetError| {
                ApiError::RegistryUnavailable(format!(
                    "the usage ledger (PostgreSQL) cannot be read now: {err}"
                ))
            };
            let client = fleet.store().reader().await.map_err(unavailable)?;
            Some(
                crate::fleet::ship::report(&client, tenant.as_deref(), None)
                    .await
                    .map_err(unavailable)?,
            )
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &UsageReport {
            since_start,
            database,
            fleet,
        },
    ))
}

/// `GET /metrics`: the Prometheus text exposition.
pub(super) fn metrics(state: &SharedState, reloader: &Reloader) -> Response<Full<Bytes>> {
    metrics_with(state, reloader, None)
}

/// [`metrics`], with the fleet registry's state when there is one.
pub(super) fn metrics_with(
    state: &SharedState,
    reloader: &Reloader,
    fleet: Option<&crate::fleet::Fleet>,
) -> Response<Full<Bytes>> {
    let snapshot = state.load();
    let tenants = snapshot.registry.tenants();
    let enabled = tenants.iter().filter(|t| t.enabled).count();
    let mut text = metrics::render(
        &state.telemetry.usage,
        snapshot.pool_totals(),
        &snapshot.upstream_stats(),
        &reloader.stats,
        enabled,
        tenants.len() - enabled,
    );
    state.tls.render_metrics(&mut text);
    metrics::render_cache(&mut text, &state.telemetry.usage, &state.cache.stats());
    if let Some(fleet) = fleet {
        fleet.status.render_metrics(fleet.version(), &mut text);
    }
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

/// `GET /upstreams`: each upstream's queue and each of its servers' state.
pub(super) fn upstreams(state: &SharedState) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &state.load().upstream_stats())
}

/// `GET /healthz`: up, how many tenants, and whether the last reload took.
pub(super) fn health(state: &SharedState, reloader: &Reloader) -> Response<Full<Bytes>> {
    health_with(state, reloader, None)
}

/// [`health`], with the fleet registry's state when there is one (`registry`: its
/// connection, the version served and how long since PostgreSQL confirmed it). A
/// gateway whose registry is unreachable still answers 200: it serves the last good one.
pub(super) fn health_with(
    state: &SharedState,
    reloader: &Reloader,
    fleet: Option<&crate::fleet::Fleet>,
) -> Response<Full<Bytes>> {
    let last_error = reloader.last_error();
    let mut body = serde_json::json!({
        "status": "ok",
        "tenants": state.load().registry.len(),
        "last_reload_ok": last_error.is_none(),
        "last_reload_error": last_error,
    });
    if let (Some(fleet), Some(map)) = (fleet, body.as_object_mut()) {
        map.insert(
            "registry".to_owned(),
            serde_json::to_value(fleet.status.health(fleet.version())).unwrap_or_default(),
        );
    }
    json_response(StatusCode::OK, &body)
}

/// `GET /usage/recent[?tenant=NAME]`: the last hour per tenant, minute by minute, from
/// the admin listener's samples of the meter (see [`RecentUsage`]).
pub(super) fn usage_recent(
    state: &SharedState,
    recent: &RecentUsage,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let tenant = tenant_param(query)?;
    let report = recent.report(&state.telemetry.usage, tenant.as_deref());
    Ok(json_response(StatusCode::OK, &report))
}

/// The `GET /usage/hourly` answer.
#[derive(Serialize)]
struct HourlyReport {
    /// One row per tenant and hour from the usage database, by tenant then hour; `None`
    /// when metering is off.
    hours: Option<Vec<UsageRow>>,
}

/// `GET /usage/hourly[?tenant=NAME][&since=UNIX][&until=UNIX]`: the usage database's
/// hourly rows, for the hours starting in `[since, until)` (`since` is floored to its
/// hour, so the hour containing it is included; an `until` not after it: no rows).
pub(super) async fn usage_hourly(
    state: &SharedState,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let tenant = tenant_param(query)?;
    let since = unix_param(query, "since")?;
    let until = unix_param(query, "until")?;
    let hours = match state.load().config.usage.database.clone() {
        None => None,
        Some(path) if !path.exists() => Some(Vec::new()),
        Some(path) => {
            let rows = tokio::task::spawn_blocking(move || {
                UsageStore::open_read_only(&path)?.report_hourly(tenant.as_deref(), since)
            })
            .await
            .map_err(|err| ApiError::Internal(format!("the usage query did not finish: {err}")))?
            .map_err(|err| ApiError::Internal(err.to_string()))?;
            Some(
                rows.into_iter()
                    .filter(|row| until.is_none_or(|until| row.hour.is_some_and(|h| h < until)))
                    .collect(),
            )
        }
    };
    Ok(json_response(StatusCode::OK, &HourlyReport { hours }))
}

/// The optional `tenant` query parameter, checked to be a tenant name.
fn tenant_param(query: Option<&str>) -> Result<Option<String>, ApiError> {
    let tenant =
        query_param(query, "tenant").map_err(|err| ApiError::BadRequest(err.to_string()))?;
    if tenant.as_deref().is_some_and(|t| !is_valid_tenant_name(t)) {
        return Err(ApiError::BadRequest(
            "query parameter `tenant` is not a valid tenant name".to_owned(),
        ));
    }
    Ok(tenant)
}

/// An optional query parameter holding a time as unix seconds (0 or more, at most
/// year 9999, so adding an hour to it cannot overflow).
fn unix_param(query: Option<&str>, name: &'static str) -> Result<Option<i64>, ApiError> {
    const MAX: i64 = 253_402_300_799;
    let Some(value) =
        query_param(query, name).map_err(|err| ApiError::BadRequest(err.to_string()))?
    else {
        return Ok(None);
    };
    match value.parse::<i64>() {
        Ok(seconds) if (0..=MAX).contains(&seconds) && !value.starts_with('+') => Ok(Some(seconds)),
        _ => Err(ApiError::BadRequest(format!(
            "query parameter `{name}` must be a time in unix seconds (0 to {MAX})"
        ))),
    }
}
