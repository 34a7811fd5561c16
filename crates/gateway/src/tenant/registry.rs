//! The host → tenant table: an immutable snapshot with O(1) exact lookups and one
//! lookup per label for wildcards.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

use crate::config::{validate_param, Config, ConfigError, ConfigErrorKind};

use super::Tenant;

/// Every tenant of one config, indexed by host. Built whole, never modified: a reload
/// builds a new registry and swaps it in.
#[derive(Debug, Default)]
pub struct Registry {
    /// Exact hosts. The fast hasher is safe against flooding here: only the
    /// configuration inserts keys; a client's Host is only looked up.
    exact: HashMap<String, Arc<Tenant>, RandomState>,
    /// Wildcard suffixes: `*.a.example` is stored as `a.example`.
    wildcard: HashMap<String, Arc<Tenant>, RandomState>,
    /// All tenants sorted by name, for listings and name lookups.
    by_name: Vec<Arc<Tenant>>,
}

impl Registry {
    /// Builds the registry for `config`: encodes each (already validated) tenant and
    /// rejects a host claimed twice, which a `Config` built by hand rather than by
    /// [`Config::parse`] may do.
    pub fn build(config: &Config) -> Result<Registry, ConfigError> {
        Self::build_reusing(config, None)
    }

    /// Like [`build`](Self::build), but a tenant whose settings (and the defaults it
    /// inherits) are the same as in `previous` — the config and registry being served —
    /// is shared with it instead of encoded again. A reload of 10,000
    /// tenants that changes one re-encodes one.
    pub fn build_reusing(
        config: &Config,
        previous: Option<(&Config, &Registry)>,
    ) -> Result<Registry, ConfigError> {
        // Every tenant inherits the defaults: when they changed, nothing is reusable.
        let previous = previous.filter(|(old_config, _)| {
            old_config.default_params == config.default_params
                && old_config.default_private_root == config.default_private_root
        });
        for (name, value) in &config.default_params {
            validate_param(name, value).map_err(ConfigError::new)?;
        }
        let host_count: usize = config.tenants.values().map(|t| t.hosts.len()).sum();
        let mut registry = Registry {
            exact: HashMap::with_capacity_and_hasher(host_count, RandomState::default()),
            wildcard: HashMap::default(),
            by_name: Vec::with_capacity(config.tenants.len()),
        };
        // The previous config's tenants beside the registry built from them: `by_name`
        // is in the config's (BTreeMap) order.
        let mut old_tenants = previous
            .map(|(old_config, old_registry)| {
                old_config.tenants.iter().zip(old_registry.by_name.iter())
            })
            .into_iter()
            .flatten()
            .peekable();
        // BTreeMap order: `by_name` comes out sorted, and duplicate errors name the
        // tenants in a stable order.
        for (name, tenant_config) in &config.tenants {
            // Both sides are sorted by name: walk them together rather than search.
            while old_tenants
                .next_if(|((old_name, _), _)| old_name.as_str() < name.as_str())
                .is_some()
            {}
            let unchanged = old_tenants
                .next_if(|((old_name, _), _)| *old_name == name)
                .filter(|((_, old_tenant_config), old_tenant)| {
                    *old_tenant_config == tenant_config && *old_tenant.name == **name
                })
                .map(|(_, old_tenant)| old_tenant);
            let tenant = match unchanged {
                Some(tenant) => Arc::clone(tenant),
                None => Arc::new(Tenant::build(
                    name,
                    tenant_config,
                    &config.default_params,
                    config.default_private_root.as_deref(),
                )?),
            };
            for host in &tenant.hosts {
                let (table, key) = match host.strip_prefix("*.") {
                    Some(suffix) => (&mut registry.wildcard, suffix),
                    None => (&mut registry.exact, host.as_str()),
                };
                if let Some(first) = table.insert(key.to_owned(), Arc::clone(&tenant)) {
                    return Err(ConfigError::new(ConfigErrorKind::DuplicateHost {
                        host: host.clone(),
                        first: first.name.to_string(),
                        second: name.clone(),
                    })
                    .for_tenant(name));
                }
            }
            registry.by_name.push(tenant);
        }
        Ok(registry)
    }

    /// The tenant serving `host`, which must already be normalised
    /// ([`normalize_host`](crate::routing::normalize_host)).
    ///
    /// An exact host wins; otherwise the most specific wildcard: for `a.b.example` it
    /// tries `*.b.example`, then `*.example`. A wildcard never matches its bare suffix
    /// (`*.example` does not serve `example`), and suffixes are only taken at label
    /// boundaries (`*.example.org` does not serve `evilexample.org`).
    pub fn lookup(&self, host: &str) -> Option<&Arc<Tenant>> {
        if let Some(tenant) = self.exact.get(host) {
            return Some(tenant);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(tenant) = self.wildcard.get(rest) {
                return Some(tenant);
            }
        }
        None
    }

    /// The tenant called `name`.
    pub fn tenant(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.by_name
            .binary_search_by(|t| (*t.name).cmp(name))
            .ok()
            .map(|index| &self.by_name[index])
    }

    /// All tenants, sorted by name.
    pub fn tenants(&self) -> &[Arc<Tenant>] {
        &self.by_name
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are no tenants.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Instant;

    use super::*;
    use crate::config::{TenantConfig, TenantSettings};

    /// A validated tenant, as a config load leaves it.
    fn valid(name: &str, settings: TenantSettings) -> TenantConfig {
        settings.validate(name).unwrap()
    }

    fn config_with(tenants: &[(&str, &[&str])]) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::parse(
            "[server]\nlisten = \"127.0.0.1:1\"\n[fastcgi]\nupstream = \"127.0.0.1:9000\"\nroot = \".\"\n",
            "t.toml",
            dir.path(),
        )
        .unwrap();
        for (name, hosts) in tenants {
            config.tenants.insert(
                name.to_string(),
                valid(
                    name,
                    TenantSettings {
                        hosts: hosts.iter().map(|h| h.to_string()).collect(),
                        ..TenantSettings::default()
                    },
                ),
            );
        }
        config
    }

    fn name_for<'a>(registry: &'a Registry, host: &str) -> Option<&'a str> {
        registry.lookup(host).map(|t| &*t.name)
    }

    #[test]
    fn exact_hosts_win_over_wildcards() {
        let registry = Registry::build(&config_with(&[
            ("wild", &["*.example.org"]),
            ("exact", &["a.example.org"]),
        ]))
        .unwrap();
        assert_eq!(name_for(&registry, "a.example.org"), Some("exact"));
        assert_eq!(name_for(&registry, "b.example.org"), Some("wild"));
    }

    #[test]
    fn the_most_specific_wildcard_wins() {
        let registry = Registry::build(&config_with(&[
            ("outer", &["*.example.org"]),
            ("inner", &["*.b.example.org"]),
        ]))
        .unwrap();
        assert_eq!(name_for(&registry, "a.b.example.org"), Some("inner"));
        assert_eq!(name_for(&registry, "x.a.b.example.org"), Some("inner"));
        assert_eq!(name_for(&registry, "b.example.org"), Some("outer"));
        assert_eq!(name_for(&registry, "a.example.org"), Some("outer"));
    }

    #[test]
    fn wildcards_only_match_whole_labels_below_their_suffix() {
        let registry = Registry::build(&config_with(&[("t", &["*.example.org"])])).unwrap();
        assert_eq!(name_for(&registry, "a.example.org"), Some("t"));
        assert_eq!(name_for(&registry, "a.b.example.org"), Some("t"));
        assert_eq!(name_for(&registry, "example.org"), None);
        assert_eq!(name_for(&registry, "evilexample.org"), None);
        assert_eq!(name_for(&registry, "example.org.evil.com"), None);
        assert_eq!(name_for(&registry, "a.example.org.evil.com"), None);
        assert_eq!(name_for(&registry, ".example.org"), Some("t"));
        assert_eq!(name_for(&registry, "org"), None);
        assert_eq!(name_for(&registry, ""), None);
    }

    #[test]
    fn duplicate_hosts_are_rejected_even_without_config_parse() {
        let err = Registry::build(&config_with(&[
            ("a", &["x.example"]),
            ("b", &["X.example"]),
        ]))
        .unwrap_err();
        assert!(err.is_duplicate_host());
        assert!(err.to_string().contains("\"a\" and \"b\""));
    }

    #[test]
    fn tenants_are_listed_and_found_by_name() {
        let registry = Registry::build(&config_with(&[
            ("c", &["c.example"]),
            ("a", &["a.example"]),
            ("b", &["b.example"]),
        ]))
        .unwrap();
        let names: Vec<&str> = registry.tenants().iter().map(|t| &*t.name).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(registry.tenant("b").map(|t| &*t.name), Some("b"));
        assert!(registry.tenant("d").is_none());
        assert_eq!(registry.len(), 3);
        assert!(Registry::default().is_empty());
    }

    #[test]
    fn invalid_default_params_fail_the_build() {
        let mut config = config_with(&[]);
        config.default_params = BTreeMap::from([("HTTP_X".to_owned(), "1".to_owned())]);
        assert!(Registry::build(&config).is_err());
    }

    #[test]
    fn ten_thousand_tenants_build_and_resolve() {
        let mut config = config_with(&[]);
        config.default_params = BTreeMap::from([("APP_ENV".to_owned(), "production".to_owned())]);
        for i in 0..10_000 {
            config.tenants.insert(
                format!("t{i}"),
                TenantConfig {
                    hosts: vec![format!("t{i}.example.org"), format!("*.t{i}.example.org")],
                    params: BTreeMap::from([
                        ("DBHOST".to_owned(), "10.0.0.1".to_owned()),
                        ("DBNAME".to_owned(), format!("moodle_t{i}")),
                        ("DBUSER".to_owned(), "moodle".to_owned()),
                        ("DBPASS".to_owned(), "secret".to_owned()),
                        ("WWWROOT".to_owned(), format!("https://t{i}.example.org")),
                        (
                            "DATAROOT".to_owned(),
                            PathBuf::from(format!("/data/t{i}")).display().to_string(),
                        ),
                    ]),
                    ..TenantConfig::default()
                },
            );
        }
        let started = Instant::now();
        let registry = Registry::build(&config).unwrap();
        let elapsed = started.elapsed();
        eprintln!("built 10,000 tenants in {elapsed:?}");
        assert_eq!(registry.len(), 10_000);
        assert_eq!(name_for(&registry, "t9999.example.org"), Some("t9999"));
        assert_eq!(name_for(&registry, "www.t42.example.org"), Some("t42"));
        assert_eq!(
            registry
                .lookup("t7.example.org")
                .unwrap()
                .params
                .get("DBNAME"),
            Some(&b"moodle_t7"[..])
        );
    }

    #[test]
    fn a_rebuild_shares_unchanged_tenants_and_rebuilds_changed_ones() {
        let old_config = config_with(&[("a", &["a.example"]), ("b", &["b.example"])]);
        let old = Registry::build(&old_config).unwrap();
        let mut config = old_config.clone();
        config.tenants.get_mut("b").unwrap().enabled = false;
        config.tenants.insert(
            "c".to_owned(),
            TenantConfig {
                hosts: vec!["c.example".to_owned()],
                ..TenantConfig::default()
            },
        );
        let new = Registry::build_reusing(&config, Some((&old_config, &old))).unwrap();
        assert!(Arc::ptr_eq(
            new.tenant("a").unwrap(),
            old.tenant("a").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            new.tenant("b").unwrap(),
            old.tenant("b").unwrap()
        ));
        assert!(!new.tenant("b").unwrap().enabled);
        assert_eq!(name_for(&new, "c.example"), Some("c"));
    }

    #[test]
    fn changed_defaults_rebuild_every_tenant() {
        let old_config = config_with(&[("a", &["a.example"])]);
        let old = Registry::build(&old_config).unwrap();
        let mut config = old_config.clone();
        config
            .default_params
            .insert("APP_ENV".to_owned(), "staging".to_owned());
        let new = Registry::build_reusing(&config, Some((&old_config, &old))).unwrap();
        let tenant = new.tenant("a").unwrap();
        assert!(!Arc::ptr_eq(tenant, old.tenant("a").unwrap()));
        assert_eq!(tenant.params.get("APP_ENV"), Some(&b"staging"[..]));
    }

    #[test]
    fn a_shared_tenant_still_conflicts_with_a_new_one_on_the_same_host() {
        let old_config = config_with(&[("a", &["a.example"])]);
        let old = Registry::build(&old_config).unwrap();
        let mut config = old_config.clone();
        config.tenants.insert(
            "b".to_owned(),
            TenantConfig {
                hosts: vec!["a.example".to_owned()],
                ..TenantConfig::default()
            },
        );
        let err = Registry::build_reusing(&config, Some((&old_config, &old))).unwrap_err();
        assert!(err.to_string().contains("a.example"), "{err}");
    }
}
