//! Tenants as the request path sees them: validated settings with their FastCGI params
//! encoded once, so each request appends them with a single copy.
//!
//! A [`Registry`] is an immutable snapshot built from a [`Config`](crate::config::Config);
//! a reload builds a new one whole and swaps it in, so a request never sees half an
//! update.

pub(crate) mod registry;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use fcgi_core::Params;

use crate::config::{ConfigError, TenantConfig};

pub use registry::Registry;

/// One tenant, ready to serve. `Debug` shows param names, never values.
pub struct Tenant {
    /// The tenant's name (the key of `[tenants.NAME]`); shared with metrics and logs.
    pub name: Arc<str>,
    /// Normalised hosts (`a.example`, `*.a.example`), as in the config.
    pub hosts: Vec<String>,
    /// `[defaults.params]` the tenant does not override, then the tenant's own params,
    /// already encoded. Sent after every request-derived param, so they win in PHP-FPM
    /// (which keeps the last value of a repeated name).
    pub params: Params,
    /// The names in `params` that a request header could map onto (`HTTP_*`), so such
    /// headers can be dropped. Validation forbids those names, so this is normally empty
    /// and allocates nothing: with 10,000 tenants, a set of every param name cost
    /// 2.4 MiB of idle memory for a filter that never looks at it.
    pub param_names: HashSet<Box<[u8]>>,
    /// Disabled tenants answer 503 with the suspended page and never reach PHP-FPM.
    pub enabled: bool,
    /// Optional cap on this tenant's share of the PHP-FPM pool.
    pub max_concurrency: Option<usize>,
    /// Read request bodies whole before asking PHP-FPM (`Some(true)`) or stream them
    /// (`Some(false)`); `None` follows `[defaults] request_buffering`.
    pub request_buffering: Option<bool>,
    /// The `[upstreams.NAME]` it names; `None` follows `[defaults] upstream`, else the
    /// `[fastcgi]` upstream (resolved per request against the snapshot's pools).
    pub upstream: Option<String>,
    /// Whether any name in `params` starts with `HTTP_`. Validation forbids it, so this
    /// is normally false and the per-request header filter skips hashing each header
    /// name against `param_names`; it exists so that filter stays correct if the rule
    /// is ever relaxed.
    pub(crate) shadows_headers: bool,
}

impl Tenant {
    /// Encodes an already validated tenant's params after the `defaults` it does not
    /// override. Nothing is checked again: [`TenantSettings::validate`] made `config`
    /// (see [`crate::config::TenantSettings`]). The defaults are assumed valid too (the
    /// registry checks them once for all tenants).
    ///
    /// [`TenantSettings::validate`]: crate::config::TenantSettings::validate
    pub fn build(
        name: &str,
        config: &TenantConfig,
        defaults: &BTreeMap<String, String>,
    ) -> Result<Tenant, ConfigError> {
        let inherited = defaults
            .iter()
            .filter(|(param, _)| !config.params.contains_key(*param));
        let all = || inherited.clone().chain(&config.params);
        let capacity = all()
            .map(|(n, v)| fcgi_core::proto::params::encoded_pair_len(n.len(), v.len()))
            .sum();
        let mut params = Params::with_capacity(capacity);
        let mut param_names: HashSet<Box<[u8]>> = HashSet::new();
        for (param, value) in all() {
            params.insert(param, value).map_err(|err| {
                // Only reachable for params validated by someone else: validation
                // size-checks every one.
                ConfigError::new(crate::config::ConfigErrorKind::InvalidParamValue {
                    name: param.clone(),
                    reason: err.to_string(),
                })
                .for_tenant(name)
            })?;
            if param.starts_with("HTTP_") {
                param_names.insert(param.as_bytes().into());
            }
        }
        let shadows_headers = !param_names.is_empty();

        Ok(Tenant {
            name: name.into(),
            hosts: config.hosts.clone(),
            params,
            param_names,
            enabled: config.enabled,
            max_concurrency: config.max_concurrency,
            request_buffering: config.request_buffering,
            upstream: config.upstream.clone(),
            shadows_headers,
        })
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            // `Params`' own Debug prints names only.
            .field("params", &self.params)
            .field("enabled", &self.enabled)
            .field("max_concurrency", &self.max_concurrency)
            .field("request_buffering", &self.request_buffering)
            .field("upstream", &self.upstream)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantSettings;

    fn settings(hosts: &[&str], params: &[(&str, &str)]) -> TenantSettings {
        TenantSettings {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..TenantSettings::default()
        }
    }

    /// A tenant as a config load leaves it: validated.
    fn config(hosts: &[&str], params: &[(&str, &str)]) -> TenantConfig {
        settings(hosts, params).validate("a").unwrap()
    }

    #[test]
    fn tenant_params_win_over_defaults_and_defaults_fill_the_rest() {
        let defaults = [("APP_ENV", "production"), ("DBHOST", "shared-db")]
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let tenant = Tenant::build(
            "a",
            &config(&["A.example"], &[("DBHOST", "own-db"), ("DBPASS", "pw")]),
            &defaults,
        )
        .unwrap();
        assert_eq!(tenant.params.get("DBHOST"), Some(&b"own-db"[..]));
        assert_eq!(tenant.params.get("APP_ENV"), Some(&b"production"[..]));
        // An overridden default is not sent at all.
        assert_eq!(tenant.params.len(), 3);
        // No param can shadow a request header, so no name is kept for the filter.
        assert!(tenant.param_names.is_empty());
        assert!(!tenant.shadows_headers);
        assert_eq!(tenant.hosts, ["a.example"]);
    }

    #[test]
    fn invalid_tenants_are_rejected_with_their_name() {
        let err = settings(&["a.example"], &[("HTTPS", "on")])
            .validate("a")
            .unwrap_err();
        assert_eq!(err.tenant(), Some("a"));
    }

    #[test]
    fn debug_does_not_print_param_values() {
        let tenant = Tenant::build(
            "a",
            &config(&["a.example"], &[("DBPASS", "hunter2")]),
            &BTreeMap::new(),
        )
        .unwrap();
        let shown = format!("{tenant:?}");
        assert!(shown.contains("DBPASS"));
        assert!(!shown.contains("hunter2"));
    }
}
