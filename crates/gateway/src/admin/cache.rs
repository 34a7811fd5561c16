//! `POST /tenants/{name}/cache/purge`: drops a tenant's cached answers by URL, path
//! prefix or tag, or all of them; never another tenant's.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::error::{json_error_detail, ApiError};
use super::json_response;
use crate::cache::Purge;
use crate::snapshot::SharedState;

/// Purges what `body` (a [`Purge`] object; `{}` for everything) names from tenant
/// `name`'s cache: `{"tenant", "cached", "purged"}`, `purged` counting URLs.
pub(super) fn purge(
    state: &SharedState,
    name: &str,
    body: &[u8],
) -> Result<Response<Full<Bytes>>, ApiError> {
    if !state.load().config.tenants.contains_key(name) {
        return Err(ApiError::UnknownTenant(name.to_owned()));
    }
    let purge: Purge = serde_json::from_slice(body).map_err(|err| {
        ApiError::InvalidJson(format!(
            "the body is not a purge object: {}",
            json_error_detail(&err)
        ))
    })?;
    let purged = state.cache.purge(name, &purge);
    tracing::info!(
        target: "admin",
        tenant = name,
        urls = purge.urls.len(),
        prefix = purge.prefix.as_deref(),
        tags = purge.tags.len(),
        purged = purged.unwrap_or(0),
        "cache purged through the admin API"
    );
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "tenant": name,
            "cached": purged.is_some(),
            "purged": purged.unwrap_or(0),
        }),
    ))
}
