//! The response cache's settings: `[cache]` (the memory all tenants share) and a tenant's
//! `cache` table (`[tenants.NAME.cache]`, or `[defaults.cache]` for every tenant), as
//! written ([`TenantCacheSettings`]) and resolved over the defaults ([`TenantCache`]).

use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use super::error::{ConfigError, KeySegment};
use super::units::{ByteSize, HumanDuration};

/// The cookies that mark a visitor as logged in (or holding a session) when a tenant
/// names none: WordPress, Drupal, Moodle and plain PHP sessions.
pub const DEFAULT_BYPASS_COOKIES: &[&str] = &[
    "wordpress_logged_in_*",
    "wp-postpass_*",
    "comment_author_*",
    "MoodleSession*",
    "PHPSESSID",
    "SESS*",
    "SSESS*",
];

/// How long an entry is served past its freshness when PHP-FPM fails, unless the tenant
/// says otherwise.
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(60);

/// The largest answer body stored, unless the tenant says otherwise; larger bodies stream
/// to the client uncached.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

/// The validated `[cache]` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes all tenants' entries may take together; 0: no cache at all.
    pub memory: u64,
}

/// `[cache]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    memory: Option<ByteSize>,
}

impl RawCache {
    /// The validated table.
    pub(crate) fn validate(self) -> CacheConfig {
        CacheConfig {
            memory: self.memory.map_or(0, |size| size.0),
        }
    }
}

/// A tenant's `cache` table as written (or `[defaults.cache]`); a key left out follows
/// `[defaults.cache]`, then the built-in default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantCacheSettings {
    /// Whether the tenant's answers are cached (off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The most memory this tenant's entries may take (default: all of `[cache] memory`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "size_out"
    )]
    pub max_memory: Option<ByteSize>,
    /// How long an answer with no caching headers and no cookie is kept (default 0s:
    /// only what PHP marks cacheable is cached).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration_out"
    )]
    pub default_ttl: Option<HumanDuration>,
    /// Request cookies (names; a trailing `*` matches any rest) that send the request to
    /// PHP uncached: a logged-in visitor's pages are never stored nor served from cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass_cookies: Option<Vec<String>>,
    /// How long an expired entry may still be served while PHP-FPM is down or answers
    /// 5xx (default 60s; PHP's own `stale-if-error` wins).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration_out"
    )]
    pub stale_if_error: Option<HumanDuration>,
    /// The largest body stored (default 1MiB); larger answers stream uncached.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "size_out"
    )]
    pub max_body: Option<ByteSize>,
}

fn size_out<S: Serializer>(size: &Option<ByteSize>, out: S) -> Result<S::Ok, S::Error> {
    match size {
        Some(size) => out.serialize_u64(size.0),
        None => out.serialize_none(),
    }
}

fn duration_out<S: Serializer>(
    duration: &Option<HumanDuration>,
    out: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => out.serialize_str(&duration_text(duration.0)),
        None => out.serialize_none(),
    }
}

/// A duration as the config file writes it: whole seconds as `"30s"`, else `"1500ms"`.
pub(crate) fn duration_text(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

impl TenantCacheSettings {
    /// Checks the values that can be wrong on their own: cookie patterns. `at` is where
    /// the table is (`["tenants", NAME, "cache"]`), for the error's position.
    pub(crate) fn check(&self, at: &[&str]) -> Result<(), ConfigError> {
        let key_path = |key: &str| -> Vec<KeySegment> {
            at.iter()
                .chain(std::iter::once(&key))
                .map(|key| KeySegment::Key((*key).into()))
                .collect()
        };
        for (key, size) in [("max_memory", self.max_memory), ("max_body", self.max_body)] {
            if size.is_some_and(|size| i64::try_from(size.0).is_err()) {
                return Err(
                    ConfigError::invalid("cache size", format!("{key} is too large"))
                        .at(key_path(key)),
                );
            }
        }
        for (index, pattern) in self.bypass_cookies.iter().flatten().enumerate() {
            let stem = pattern.strip_suffix('*').unwrap_or(pattern);
            let bad = if stem.is_empty() && pattern.is_empty() {
                Some("empty cookie name")
            } else if stem.contains(['*', '=', ';', ',', ' ']) {
                Some("a cookie name, with at most one '*', at its end")
            } else {
                None
            };
            if let Some(reason) = bad {
                let mut path: Vec<KeySegment> = at
                    .iter()
                    .map(|key| KeySegment::Key((*key).into()))
                    .collect();
                path.push(KeySegment::Key("bypass_cookies".into()));
                path.push(KeySegment::Index(index));
                return Err(ConfigError::invalid("bypass_cookies", reason).at(path));
            }
        }
        Ok(())
    }

    /// This table over `defaults`, then the built-in defaults; `None` when the cache is
    /// off for the tenant (or `[cache] memory` is 0).
    pub fn resolve(
        &self,
        defaults: &TenantCacheSettings,
        global: CacheConfig,
    ) -> Option<TenantCache> {
        if global.memory == 0 || !self.enabled.or(defaults.enabled).unwrap_or(false) {
            return None;
        }
        Some(TenantCache {
            max_memory: self
                .max_memory
                .or(defaults.max_memory)
                .map_or(global.memory, |size| size.0.min(global.memory)),
            default_ttl: self
                .default_ttl
                .or(defaults.default_ttl)
                .map_or(Duration::ZERO, |d| d.0),
            bypass_cookies: self
                .bypass_cookies
                .clone()
                .or_else(|| defaults.bypass_cookies.clone())
                .unwrap_or_else(|| {
                    DEFAULT_BYPASS_COOKIES
                        .iter()
                        .map(|c| (*c).to_owned())
                        .collect()
                }),
            stale_if_error: self
                .stale_if_error
                .or(defaults.stale_if_error)
                .map_or(DEFAULT_STALE_IF_ERROR, |d| d.0),
            max_body: self
                .max_body
                .or(defaults.max_body)
                .map_or(DEFAULT_MAX_BODY, |size| size.0),
        })
    }

    /// The table as `toml_edit` writes it into the config file.
    pub(crate) fn toml_value(&self) -> toml_edit::Value {
        let mut table = toml_edit::InlineTable::new();
        if let Some(enabled) = self.enabled {
            table.insert("enabled", enabled.into());
        }
        if let Some(size) = self.max_memory {
            table.insert(
                "max_memory",
                i64::try_from(size.0).unwrap_or(i64::MAX).into(),
            );
        }
        if let Some(ttl) = self.default_ttl {
            table.insert("default_ttl", duration_text(ttl.0).into());
        }
        if let Some(cookies) = &self.bypass_cookies {
            let list: toml_edit::Array = cookies.iter().map(String::as_str).collect();
            table.insert("bypass_cookies", toml_edit::Value::Array(list));
        }
        if let Some(stale) = self.stale_if_error {
            table.insert("stale_if_error", duration_text(stale.0).into());
        }
        if let Some(size) = self.max_body {
            table.insert("max_body", i64::try_from(size.0).unwrap_or(i64::MAX).into());
        }
        toml_edit::Value::InlineTable(table)
    }
}

/// A `cache` key: a table (or `null`, in JSON, for none), never an array, which serde
/// would otherwise read field by field.
pub(crate) fn table_only<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<TenantCacheSettings>, D::Error> {
    use serde::de::{self, MapAccess, Visitor};

    struct Table;

    impl<'de> Visitor<'de> for Table {
        type Value = Option<TenantCacheSettings>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a table of cache settings")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D2: serde::Deserializer<'de>>(
            self,
            inner: D2,
        ) -> Result<Self::Value, D2::Error> {
            inner.deserialize_map(self)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            TenantCacheSettings::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }

    deserializer.deserialize_option(Table)
}

/// One tenant's cache as it is served: every setting resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCache {
    /// The most bytes its entries take (never above `[cache] memory`).
    pub max_memory: u64,
    /// Freshness of answers with no caching headers and no cookie (zero: not stored).
    pub default_ttl: Duration,
    /// Cookie names (trailing `*`: a prefix) that bypass the cache.
    pub bypass_cookies: Vec<String>,
    /// How long past freshness an entry answers when PHP-FPM fails.
    pub stale_if_error: Duration,
    /// The largest body stored.
    pub max_body: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_table_wins_over_defaults_and_the_cache_is_off_unless_enabled() {
        let global = CacheConfig { memory: 1 << 20 };
        let defaults = TenantCacheSettings {
            enabled: Some(true),
            default_ttl: Some(HumanDuration(Duration::from_secs(5))),
            ..TenantCacheSettings::default()
        };
        let own = TenantCacheSettings {
            max_memory: Some(ByteSize(1 << 30)),
            ..TenantCacheSettings::default()
        };
        let resolved = own.resolve(&defaults, global).unwrap();
        assert_eq!(resolved.max_memory, 1 << 20, "capped by [cache] memory");
        assert_eq!(resolved.default_ttl, Duration::from_secs(5));
        assert!(resolved.bypass_cookies.contains(&"PHPSESSID".to_owned()));
        assert!(TenantCacheSettings::default()
            .resolve(&TenantCacheSettings::default(), global)
            .is_none());
        assert!(own.resolve(&defaults, CacheConfig { memory: 0 }).is_none());
    }

    #[test]
    fn cookie_patterns_take_one_star_at_the_end() {
        let bad = TenantCacheSettings {
            bypass_cookies: Some(vec!["a*b".into()]),
            ..TenantCacheSettings::default()
        };
        assert!(bad.check(&["defaults", "cache"]).is_err());
        let good = TenantCacheSettings {
            bypass_cookies: Some(vec!["wordpress_logged_in_*".into(), "PHPSESSID".into()]),
            ..TenantCacheSettings::default()
        };
        assert!(good.check(&["defaults", "cache"]).is_ok());
    }
}
