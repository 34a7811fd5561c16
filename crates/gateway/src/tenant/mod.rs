//! Tenants as the request path sees them: validated settings with their FastCGI params
//! encoded once, so each request appends them with a single copy.
//!
//! A [`Registry`] is an immutable snapshot built from a [`Config`](crate::config::Config);
//! a reload builds a new one whole and swaps it in, so a request never sees half an
//! update.

pub(crate) mod registry;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use fcgi_core::Params;

use crate::compression::Encoding;
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
    /// The tenant's own encoding list; `None`: the configuration's default
    /// ([`Config::compression_for`](crate::config::Config::compression_for)).
    pub compression: Option<Box<[Encoding]>>,
    /// The directory PHP may hand files from with `X-Accel-Redirect` / `X-Sendfile`
    /// (the tenant's `private_root`, else `[defaults] private_root`, `{tenant}`
    /// substituted); `None`: neither header is ever honoured.
    pub private_root: Option<PathBuf>,
    /// The `[upstreams.NAME]` it names; `None` follows `[defaults] upstream`, else the
    /// `[fastcgi]` upstream (resolved per request against the snapshot's pools).
    pub upstream: Option<String>,
    /// Whether any name in `params` starts with `HTTP_`. Validation forbids it, so this
    /// is normally false and the per-request header filter skips hashing each header
    /// name against `param_names`; it exists so that filter stays correct if the rule
    /// is ever relaxed.
    pub(crate) shadows_headers: bool,
}

/// The CGI param that tells PHP which header the front server honours
/// (`X-Sendfile-Type: X-Accel-Redirect`, as Symfony reads it).
pub const SENDFILE_TYPE_PARAM: &str = "HTTP_X_SENDFILE_TYPE";
/// The CGI param that maps the tenant's private root onto `X-Accel-Redirect` paths
/// (`X-Accel-Mapping: /srv/moodledata/x=/`).
pub const ACCEL_MAPPING_PARAM: &str = "HTTP_X_ACCEL_MAPPING";

impl Tenant {
    /// Encodes an already validated tenant's params after the `defaults` it does not
    /// override. Nothing is checked again: [`TenantSettings::validate`] made `config`
    /// (see [`crate::config::TenantSettings`]). The defaults are assumed valid too (the
    /// registry checks them once for all tenants). `default_private_root` is
    /// `[defaults] private_root`, used when the tenant names none.
    ///
    /// A tenant with a private root also gets `HTTP_X_SENDFILE_TYPE` and
    /// `HTTP_X_ACCEL_MAPPING`, as nginx configs add them with `fastcgi_param`, so PHP
    /// (Symfony's `BinaryFileResponse`) knows it may answer with `X-Accel-Redirect`.
    ///
    /// [`TenantSettings::validate`]: crate::config::TenantSettings::validate
    pub fn build(
        name: &str,
        config: &TenantConfig,
        defaults: &BTreeMap<String, String>,
        default_private_root: Option<&str>,
    ) -> Result<Tenant, ConfigError> {
        let private_root = config
            .private_root
            .as_deref()
            .or(default_private_root)
            .map(|root| crate::config::private_root_for(root, name));
        let accel_mapping = private_root
            .as_ref()
            .map(|root| format!("{}=/", root.display()));
        let inherited = defaults
            .iter()
            .filter(|(param, _)| !config.params.contains_key(*param));
        let all = || inherited.clone().chain(&config.params);
        let accel_params = accel_mapping.as_deref().map(|mapping| {
            [
                (SENDFILE_TYPE_PARAM, "X-Accel-Redirect"),
                (ACCEL_MAPPING_PARAM, mapping),
            ]
        });
        let capacity = all()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain(accel_params.into_iter().flatten())
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
        // Request headers of these names are always dropped (`cgi::headers`), so a
        // client cannot claim X-Accel support the gateway does not give this tenant.
        for (param, value) in accel_params.into_iter().flatten() {
            params.insert(param, value).map_err(|err| {
                ConfigError::new(crate::config::ConfigErrorKind::InvalidParamValue {
                    name: param.to_owned(),
                    reason: err.to_string(),
                })
                .for_tenant(name)
            })?;
        }

        Ok(Tenant {
            name: name.into(),
            hosts: config.hosts.clone(),
            params,
            param_names,
            enabled: config.enabled,
            max_concurrency: config.max_concurrency,
            request_buffering: config.request_buffering,
            compression: config.compression.as_deref().map(Box::from),
            private_root,
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
            .field("private_root", &self.private_root)
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
            None,
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
    fn a_private_root_adds_the_accel_params_with_the_tenant_substituted() {
        let plain =
            Tenant::build("a", &config(&["a.example"], &[]), &BTreeMap::new(), None).unwrap();
        assert_eq!(plain.private_root, None);
        assert_eq!(plain.params.get(SENDFILE_TYPE_PARAM), None);

        let inherited = Tenant::build(
            "a",
            &config(&["a.example"], &[]),
            &BTreeMap::new(),
            Some("/srv/moodledata/{tenant}"),
        )
        .unwrap();
        assert_eq!(
            inherited.private_root.as_deref(),
            Some(std::path::Path::new("/srv/moodledata/a"))
        );
        assert_eq!(
            inherited.params.get(SENDFILE_TYPE_PARAM),
            Some(&b"X-Accel-Redirect"[..])
        );
        assert_eq!(
            inherited.params.get(ACCEL_MAPPING_PARAM),
            Some(&b"/srv/moodledata/a=/"[..])
        );

        let mut own = config(&["a.example"], &[]);
        own.private_root = Some("/data/own".into());
        let own = Tenant::build("a", &own, &BTreeMap::new(), Some("/srv/{tenant}")).unwrap();
        assert_eq!(
            own.params.get(ACCEL_MAPPING_PARAM),
            Some(&b"/data/own=/"[..])
        );
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
            None,
        )
        .unwrap();
        let shown = format!("{tenant:?}");
        assert!(shown.contains("DBPASS"));
        assert!(!shown.contains("hunter2"));
    }
}
