//! [`TenantView`]: one tenant as both front ends show it, secret param values masked.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::compression::Encoding;
use crate::config::{displayed_param_value, TenantConfig};

/// What secret param values are shown as. Sent back in an admin API `PUT`, it keeps the
/// value in service, so a read-modify-write round trip does not overwrite a password
/// with it.
pub const MASK: &str = "***";

/// A tenant as shown: the `[tenants.NAME]` table plus its name, hosts normalised, secret
/// param values masked. Serialized, it is the admin API's `Tenant` object.
#[derive(Debug, Serialize)]
pub struct TenantView<'a> {
    /// The tenant's name.
    pub name: &'a str,
    /// Normalised hosts.
    pub hosts: &'a [String],
    /// Whether it is served (`false`: suspended).
    pub enabled: bool,
    /// Its cap on PHP-FPM connections, if any.
    pub max_concurrency: Option<usize>,
    /// Whether it reads request bodies whole first; absent when it follows `[defaults]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_buffering: Option<bool>,
    /// Its private-files directory as written; absent when it follows `[defaults]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_root: Option<&'a str>,
    /// The `[upstreams.NAME]` it names; absent when it follows `[defaults]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    /// Its own params, secret values shown as [`MASK`].
    pub params: BTreeMap<&'a str, &'a str>,
    /// Its own `tls` setting, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'a crate::config::TlsSetting>,
    /// Its own `compression` list, when it has one (`[]`: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<&'a [Encoding]>,
    /// The encodings its clients are offered, its own list or the one it inherits
    /// (answers about one tenant: the admin API's `/tenants/{name}`, `tenants show`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_compression: Option<&'a [Encoding]>,
    /// Its own response cache table, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'a crate::config::TenantCacheSettings>,
    /// Automatic certificates by host (the admin API only: `GET /tenants/{name}`, and
    /// `GET /tenants` for tenants that have any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificates: Option<BTreeMap<String, crate::tls::HostCertStatus>>,
}

impl<'a> TenantView<'a> {
    /// The view of tenant `name`.
    pub fn new(name: &'a str, tenant: &'a TenantConfig) -> Self {
        Self {
            name,
            hosts: &tenant.hosts,
            enabled: tenant.enabled,
            max_concurrency: tenant.max_concurrency,
            request_buffering: tenant.request_buffering,
            private_root: tenant.private_root.as_deref(),
            upstream: tenant.upstream.as_deref(),
            params: masked(&tenant.params),
            tls: tenant.tls.as_ref(),
            compression: tenant.compression.as_deref(),
            effective_compression: None,
            cache: tenant.cache.as_ref(),
            certificates: None,
        }
    }

    /// `enabled` or `suspended`.
    pub fn state(&self) -> &'static str {
        if self.enabled {
            "enabled"
        } else {
            "suspended"
        }
    }
}

/// Params by name, with secret values replaced by [`MASK`].
pub(crate) fn masked<'a>(
    params: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> BTreeMap<&'a str, &'a str> {
    params
        .into_iter()
        .map(|(name, value)| (name.as_str(), displayed_param_value(name, value)))
        .collect()
}
