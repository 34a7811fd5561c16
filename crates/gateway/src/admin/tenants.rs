//! The tenant resources: `GET /tenants`, and `GET`, `PUT`, `DELETE`, `POST …/suspend`
//! and `POST …/resume` on `/tenants/{name}`.
//!
//! Reads come from the config in service. Writes edit the config file through
//! [`ConfigDocument`] (validated before anything is written, comments kept, replaced
//! atomically) and then reload it, so the answer shows the tenant as it is now served.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::error::{json_error_detail, ApiError};
use super::{json_response, AdminApi};
use crate::config::tenant::is_valid_tenant_name;
use crate::config::{
    displayed_param_value, is_secret_param, Config, ConfigDocument, ConfigErrorKind, EditError,
    TenantConfig,
};
use crate::snapshot::SharedState;

/// What secret param values are shown as; sent back in a `PUT`, it keeps the value in
/// service, so a read-modify-write round trip does not overwrite a password with it.
const MASK: &str = "***";

/// A tenant as the API shows it: the `[tenants.NAME]` table plus its name, hosts
/// normalised, secret param values masked.
#[derive(Serialize)]
struct TenantView<'a> {
    name: &'a str,
    hosts: &'a [String],
    enabled: bool,
    max_concurrency: Option<usize>,
    params: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a crate::tls::TlsSetting>,
    /// Automatic certificates by host (`GET /tenants/{name}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    certificates: Option<BTreeMap<String, crate::tls::HostCertStatus>>,
}

impl<'a> TenantView<'a> {
    fn new(name: &'a str, tenant: &'a TenantConfig) -> Self {
        Self {
            name,
            hosts: &tenant.hosts,
            enabled: tenant.enabled,
            max_concurrency: tenant.max_concurrency,
            params: tenant
                .params
                .iter()
                .map(|(key, value)| (key.as_str(), displayed_param_value(key, value)))
                .collect(),
            tls: tenant.tls.as_ref(),
            certificates: None,
        }
    }
}

/// `GET /tenants`: every tenant in service, by name.
pub(super) fn list(state: &SharedState) -> Response<Full<Bytes>> {
    let snapshot = state.load();
    let tenants: Vec<TenantView<'_>> = snapshot
        .config
        .tenants
        .iter()
        .map(|(name, tenant)| TenantView::new(name, tenant))
        .collect();
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
    let mut tenant: TenantConfig = serde_json::from_slice(body).map_err(|err| {
        if err.is_data() {
            ApiError::InvalidTenant(json_error_detail(&err))
        } else {
            ApiError::InvalidJson(format!(
                "the body is not a JSON object: {}",
                json_error_detail(&err)
            ))
        }
    })?;
    let state = api.state.clone();
    let owned = name.to_owned();
    let created = api
        .edit(move |doc| {
            // Under the edit lock: the config in service is the one the last edit saved.
            keep_masked_secrets(&owned, &mut tenant, &state.load().config)?;
            let created = !doc.contains_tenant(&owned);
            doc.set_tenant(&owned, &tenant).map_err(EditOrApi::Edit)?;
            Ok(created)
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
    api.edit(move |doc| {
        if doc.remove_tenant(&owned) {
            Ok(())
        } else {
            Err(EditOrApi::Api(ApiError::UnknownTenant(owned)))
        }
    })
    .await?;
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
        .edit(move |doc| doc.set_enabled(&owned, enabled).map_err(EditOrApi::Edit))
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

fn respond_with_tenant(
    state: &SharedState,
    name: &str,
    status: StatusCode,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let snapshot = state.load();
    let tenant = snapshot
        .config
        .tenants
        .get(name)
        .ok_or_else(|| ApiError::UnknownTenant(name.to_owned()))?;
    let mut view = TenantView::new(name, tenant);
    view.certificates = Some(
        state
            .tls
            .statuses()
            .into_iter()
            .filter(|(_, cert)| cert.tenant == name)
            .collect(),
    );
    Ok(json_response(status, &view))
}

/// Replaces each secret param sent as [`MASK`] with the value in service. A mask for a
/// param the tenant does not have is refused: stored, it would become the password.
fn keep_masked_secrets(
    name: &str,
    tenant: &mut TenantConfig,
    current: &Config,
) -> Result<(), EditOrApi> {
    let current = current.tenants.get(name);
    for (key, value) in tenant.params.iter_mut() {
        if value != MASK || !is_secret_param(key) {
            continue;
        }
        match current.and_then(|t| t.params.get(key)) {
            Some(kept) => value.clone_from(kept),
            None => {
                return Err(EditOrApi::Api(ApiError::InvalidTenant(format!(
                    "param {key:?}: \"{MASK}\" keeps a secret's current value, \
                     but this tenant has none; send the real value"
                ))))
            }
        }
    }
    Ok(())
}

/// How an edit's change step fails: the document refused it, or the request is wrong
/// in a way only visible with the document at hand.
pub(super) enum EditOrApi {
    /// Mapped by [`ApiError::from_edit`].
    Edit(EditError),
    /// Already an answer.
    Api(ApiError),
}

impl AdminApi {
    /// Loads the config file, applies `change`, saves it (validated, atomically) and
    /// reloads, all under the edit lock, in a task of its own: a client that hangs up
    /// mid-edit does not leave a change saved but not in service. File work runs on a
    /// blocking thread.
    async fn edit<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut ConfigDocument) -> Result<T, EditOrApi> + Send + 'static,
    ) -> Result<T, ApiError> {
        let lock = self.edits.clone().lock_owned().await;
        let reloader = self.reloader.clone();
        let edit = tokio::spawn(async move {
            let _lock = lock;
            let path = reloader.path().to_path_buf();
            let outcome = tokio::task::spawn_blocking(move || {
                let was_valid = || Config::load(&path).is_ok();
                let mut doc = ConfigDocument::load(&path)
                    .map_err(|err| ApiError::from_edit(err, || false))?;
                let value = change(&mut doc).map_err(|err| match err {
                    EditOrApi::Edit(err) => ApiError::from_edit(err, was_valid),
                    EditOrApi::Api(err) => err,
                })?;
                doc.save()
                    .map_err(|err| ApiError::from_edit(err, was_valid))?;
                Ok::<T, ApiError>(value)
            })
            .await
            .map_err(|err| ApiError::Internal(format!("the edit did not finish: {err}")))??;
            reloader.reload().await.map_err(|err| {
                ApiError::NotApplied(format!(
                    "the change was saved to the config file but is not in service: {err}"
                ))
            })?;
            Ok(outcome)
        });
        edit.await
            .map_err(|err| ApiError::Internal(format!("the edit did not finish: {err}")))?
    }
}
