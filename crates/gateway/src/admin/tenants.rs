//! The tenant resources: `GET /tenants`, and `GET`, `PUT`, `DELETE`, `POST …/suspend`
//! and `POST …/resume` on `/tenants/{name}`.
//!
//! The operations themselves are [`crate::tenant_ops`], shared with the CLI; this file
//! is their HTTP side: the JSON body in, the status code and JSON answer out. Reads come
//! from the config in service. Writes edit the config file (validated before anything is
//! written, comments kept, replaced atomically) and put the config they saved in service,
//! so the answer shows the tenant as it is now served.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::error::{json_error_detail, ApiError};
use super::{json_response, AdminApi};
use crate::config::tenant::is_valid_tenant_name;
use crate::config::{Config, ConfigDocument, ConfigErrorKind, TenantSettings};
use crate::snapshot::SharedState;
use crate::tenant_ops::{self, PutMode, PutTenant, TenantOpError};

/// `GET /tenants`: every tenant in service, by name, with its automatic certificates'
/// state (the dashboard's overview shows it per host).
pub(super) fn list(state: &SharedState) -> Response<Full<Bytes>> {
    let snapshot = state.load();
    let mut tenants = tenant_ops::list(&snapshot.config);
    let mut by_tenant: HashMap<String, BTreeMap<String, _>> = HashMap::new();
    for (host, cert) in state.tls.statuses() {
        by_tenant
            .entry(cert.tenant.clone())
            .or_default()
            .insert(host, cert);
    }
    for tenant in &mut tenants {
        tenant.certificates = by_tenant.remove(tenant.name);
    }
    json_response(StatusCode::OK, &serde_json::json!({ "tenants": tenants }))
}

/// `GET /tenants/{name}`.
pub(super) fn show(state: &SharedState, name: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    respond_with_tenant(state, name, StatusCode::OK)
}

/// `PUT /tenants/{name}`: creates the tenant (201) or replaces its settings (200).
pub(super) async fn put(
    api: &AdminApi,
    name: &str,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    if !is_valid_tenant_name(name) {
        return Err(ApiError::InvalidTenant(
            ConfigErrorKind::InvalidTenantName(name.to_owned()).to_string(),
        ));
    }
    let settings: TenantSettings = serde_json::from_slice(body).map_err(|err| {
        if err.is_data() {
            ApiError::InvalidTenant(json_error_detail(&err))
        } else {
            ApiError::InvalidJson(format!(
                "the body is not a JSON object: {}",
                json_error_detail(&err)
            ))
        }
    })?;
    let mut put = PutTenant {
        name: name.to_owned(),
        settings,
    };
    let state = api.state.clone();
    let created = api
        .edit(move |doc| {
            // Under the edit lock: the config in service is the one the last edit saved.
            put.keep_masked_secrets(&state.load().config)?;
            put.apply(doc, PutMode::CreateOrReplace)
        })
        .await?;
    tracing::info!(
        target: "admin",
        tenant = name,
        action = if created { "created" } else { "replaced" },
        "tenant changed through the admin API"
    );
    if !created {
        return respond_with_tenant(&api.state, name, StatusCode::OK);
    }
    let mut response = respond_with_tenant(&api.state, name, StatusCode::CREATED)?;
    // The name is `[a-z0-9_-]`, so it is a valid header value and needs no escaping.
    if let Ok(location) = HeaderValue::from_str(&format!("/tenants/{name}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `DELETE /tenants/{name}`: 204, or 404 if there is no such tenant.
pub(super) async fn delete(api: &AdminApi, name: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    let owned = name.to_owned();
    api.edit(move |doc| tenant_ops::remove(doc, &owned)).await?;
    tracing::info!(
        target: "admin",
        tenant = name,
        action = "removed",
        "tenant changed through the admin API"
    );
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// `POST /tenants/{name}/suspend` (`enabled = false`) and `…/resume` (`true`). Doing it
/// twice is not an error: the answer shows the state either way.
pub(super) async fn set_enabled(
    api: &AdminApi,
    name: &str,
    enabled: bool,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let owned = name.to_owned();
    let changed = api
        .edit(move |doc| tenant_ops::set_enabled(doc, &owned, enabled))
        .await?;
    if changed {
        let action = if enabled { "resumed" } else { "suspended" };
        tracing::info!(
            target: "admin",
            tenant = name,
            action,
            "tenant changed through the admin API"
        );
    }
    respond_with_tenant(&api.state, name, StatusCode::OK)
}

pub(super) fn respond_with_tenant(
    state: &SharedState,
    name: &str,
    status: StatusCode,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let snapshot = state.load();
    let mut detail = tenant_ops::show(&snapshot.config, name)
        .map_err(|_| ApiError::UnknownTenant(name.to_owned()))?;
    detail.tenant.certificates = Some(
        state
            .tls
            .statuses()
            .into_iter()
            .filter(|(_, cert)| cert.tenant == name)
            .collect(),
    );
    Ok(json_response(status, &detail.tenant))
}

impl AdminApi {
    /// Runs `change` through [`tenant_ops::edit`] (load, change, save, validated and
    /// atomically) and puts the config it saved in service, all under the edit lock, in
    /// a task of its own: a client that hangs up mid-edit does not leave a change saved
    /// but not in service. File work runs on a blocking thread.
    async fn edit<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut ConfigDocument) -> Result<T, TenantOpError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let lock = self.edits.clone().lock_owned().await;
        let reloader = self.reloader.clone();
        let edit = tokio::spawn(async move {
            let _lock = lock;
            let path = reloader.path().to_path_buf();
            let (value, config) = tokio::task::spawn_blocking(move || {
                tenant_ops::edit(&path, change).map_err(|err| match err {
                    TenantOpError::Edit(err) => {
                        ApiError::from_edit(err, || Config::load(&path).is_ok())
                    }
                    TenantOpError::UnknownTenant { tenant, .. } => ApiError::UnknownTenant(tenant),
                    err => ApiError::InvalidTenant(err.to_string()),
                })
            })
            .await
            .map_err(|err| ApiError::Internal(format!("the edit did not finish: {err}")))??;
            reloader.apply(config).await.map_err(|err| {
                ApiError::NotApplied(format!(
                    "the change was saved to the config file but is not in service: {err}"
                ))
            })?;
            Ok(value)
        });
        edit.await
            .map_err(|err| ApiError::Internal(format!("the edit did not finish: {err}")))?
    }
}
