//! The tenant writes in a fleet (`[registry] postgres`): `PUT`, `DELETE`, `suspend` and
//! `resume` write to PostgreSQL instead of the config file, with the tenant's registry
//! version as its `ETag` (`If-Match` → 412 when someone else changed it first; a host
//! another tenant has → 409), and answer once this gateway serves the committed version,
//! so the answer shows what is served.
//!
//! A tenant is validated here as a file reload would (alone, then with the whole
//! registry and the file's other settings) before anything is written, so a write cannot
//! leave the fleet with a registry it refuses.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::error::{json_error_detail, ApiError};
use super::AdminApi;
use crate::config::tenant::is_valid_tenant_name;
use crate::config::{is_secret_param, Config, ConfigErrorKind, TenantSettings};
use crate::fleet::{Fleet, FleetError, WriteError};
use crate::tenant_ops::MASK;

/// How long a write waits for this gateway to serve what it committed.
const SERVED_WITHIN: Duration = Duration::from_secs(10);

impl From<WriteError> for ApiError {
    fn from(err: WriteError) -> Self {
        match err {
            WriteError::Precondition { .. } => ApiError::PreconditionFailed(err.to_string()),
            WriteError::HostTaken { .. } | WriteError::Exists(_) => {
                ApiError::HostConflict(err.to_string())
            }
            WriteError::UnknownTenant(name) => ApiError::UnknownTenant(name),
            WriteError::Unavailable(err) => unavailable(err),
        }
    }
}

fn unavailable(err: FleetError) -> ApiError {
    ApiError::RegistryUnavailable(format!(
        "the tenant registry (PostgreSQL) cannot be written now; nothing changed: {err}"
    ))
}

/// The version an `If-Match` header names (`"7"`, `W/"7"` or `7`); `None` without one
/// or for `*`.
pub(super) fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("If-Match is not ASCII".to_owned()))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    tag.parse::<i64>().map(Some).map_err(|_| {
        ApiError::BadRequest(
            "If-Match must be the tenant's ETag as sent (a quoted version number)".to_owned(),
        )
    })
}

/// The `ETag` of a tenant at `version`.
pub(super) fn etag(version: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{version}\"")).ok()
}

/// `PUT /tenants/{name}` in a fleet.
pub(super) async fn put(
    api: &AdminApi,
    fleet: &Fleet,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    if !is_valid_tenant_name(name) {
        return Err(ApiError::InvalidTenant(
            ConfigErrorKind::InvalidTenantName(name.to_owned()).to_string(),
        ));
    }
    let expected = if_match(headers)?;
    let mut spec: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::InvalidJson(format!(
            "the body is not a JSON object: {}",
            json_error_detail(&err)
        ))
    })?;
    keep_masked_secrets(fleet, name, &mut spec)?;
    let settings = TenantSettings::deserialize(&spec)
        .map_err(|err| ApiError::InvalidTenant(err.to_string()))?;
    let tenant = settings
        .clone()
        .validate(name)
        .map_err(|err| ApiError::InvalidTenant(err.to_string()))?;
    validate_with_registry(api, fleet, name, settings).await?;
    let written = fleet
        .store()
        .put(name, &spec, &tenant.hosts, expected, false)
        .await?;
    wait_served(fleet, written.version).await?;
    tracing::info!(
        target: "admin",
        tenant = name,
        version = written.version,
        action = if written.created { "created" } else { "replaced" },
        "tenant changed in the fleet registry through the admin API"
    );
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = super::tenants::respond_with_tenant(&api.state, name, status)?;
    if let Some(tag) = etag(written.version) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    if written.created {
        if let Ok(location) = HeaderValue::from_str(&format!("/tenants/{name}")) {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    Ok(response)
}

/// `DELETE /tenants/{name}` in a fleet.
pub(super) async fn delete(
    fleet: &Fleet,
    name: &str,
    headers: &HeaderMap,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let expected = if_match(headers)?;
    let version = fleet.store().delete(name, expected).await?;
    wait_served(fleet, version).await?;
    tracing::info!(target: "admin", tenant = name, version, action = "removed", "tenant changed in the fleet registry through the admin API");
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// `POST /tenants/{name}/suspend|resume` in a fleet.
pub(super) async fn set_enabled(
    api: &AdminApi,
    fleet: &Fleet,
    name: &str,
    enabled: bool,
    headers: &HeaderMap,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let expected = if_match(headers)?;
    if let Some(version) = fleet.store().set_enabled(name, enabled, expected).await? {
        wait_served(fleet, version).await?;
        let action = if enabled { "resumed" } else { "suspended" };
        tracing::info!(target: "admin", tenant = name, version, action, "tenant changed in the fleet registry through the admin API");
    }
    let mut response = super::tenants::respond_with_tenant(&api.state, name, StatusCode::OK)?;
    if let Some(tag) = fleet.view().tenants.get(name).and_then(|t| etag(t.version)) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    Ok(response)
}

/// Replaces each secret param sent as [`MASK`] with its value in the registry in
/// service (what its reader was shown masked); refuses a mask with no value behind it.
fn keep_masked_secrets(
    fleet: &Fleet,
    name: &str,
    spec: &mut serde_json::Value,
) -> Result<(), ApiError> {
    let view = fleet.view();
    let current = view.tenants.get(name);
    let Some(params) = spec.get_mut("params").and_then(|p| p.as_object_mut()) else {
        return Ok(());
    };
    for (param, value) in params.iter_mut() {
        if value.as_str() != Some(MASK) || !is_secret_param(param) {
            continue;
        }
        match current.and_then(|tenant| tenant.settings.params.get(param)) {
            Some(kept) => *value = serde_json::Value::String(kept.clone()),
            None => {
                return Err(ApiError::InvalidTenant(format!(
                    "param {param:?}: \"***\" keeps a secret's current value, but this tenant \
                     has none; send the real value"
                )))
            }
        }
    }
    Ok(())
}

/// Validates the registry in service with `name` set to `settings`, with the config
/// file's other settings: what every gateway will build once the write commits.
async fn validate_with_registry(
    api: &AdminApi,
    fleet: &Fleet,
    name: &str,
    settings: TenantSettings,
) -> Result<(), ApiError> {
    let mut tenants = fleet.view().tenant_settings();
    tenants.insert(name.to_owned(), settings);
    let path = api.reloader.path().to_path_buf();
    let checked = tokio::task::spawn_blocking(move || Config::load_with_tenants(&path, &tenants))
        .await
        .map_err(|err| ApiError::Internal(format!("the validation did not finish: {err}")))?;
    match checked {
        Ok(_) => Ok(()),
        Err(err) if err.is_duplicate_host() => Err(ApiError::HostConflict(err.to_string())),
        Err(err) if err.tenant() == Some(name) => Err(ApiError::InvalidTenant(err.to_string())),
        Err(err) => Err(ApiError::ConfigBroken(err.to_string())),
    }
}

/// Waits until this gateway serves `version`.
async fn wait_served(fleet: &Fleet, version: i64) -> Result<(), ApiError> {
    if fleet.wait_served(version, SERVED_WITHIN).await {
        Ok(())
    } else {
        Err(ApiError::NotApplied(format!(
            "committed to the registry as version {version}, but this gateway does not serve \
             it yet (it serves {}); other gateways may",
            fleet.version()
        )))
    }
}
