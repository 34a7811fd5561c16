//! One tenant's settings: as written under `[tenants.NAME]` ([`TenantSettings`]), and
//! once they meet the rules ([`TenantConfig`]), which they are checked against once.
//!
//! Kept free of file positions so the admin API and the CLI validate a tenant they are
//! about to write (with `toml_edit`) with exactly the rules a full load applies.

use std::collections::BTreeMap;
use std::fmt;

use fcgi_core::proto::params::encoded_pair_len;
use fcgi_core::proto::record::MAX_CONTENT_LEN;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::error::{ConfigError, ConfigErrorKind, KeySegment};
use super::server::check_encodings;
use crate::compression::Encoding;

/// CGI variables the gateway derives from each request. A tenant param with one of these
/// names would silently replace the request's own value (tenant params are sent last and
/// PHP-FPM keeps the last value), so such names are rejected at load time. The list is
/// the one the CGI mapping inserts from ([`super::cgi_variables::CGI_VARIABLES`]).
pub const RESERVED_PARAM_NAMES: &[&str] = super::cgi_variables::CGI_VARIABLES;

/// One tenant's settings as written: a `[tenants.NAME]` table, the admin API's `PUT`
/// body, or the CLI's `tenants add` arguments. Nothing is checked yet:
/// [`validate`](Self::validate) turns it into the [`TenantConfig`] everything else uses.
///
/// `Debug` shows param names only: values hold database passwords.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// Host names (`a.example.org`) and wildcards (`*.a.example.org`) served for this
    /// tenant. Defaults to empty only so that validation, not serde, reports it, naming
    /// the tenant.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// FastCGI params injected into every request for this tenant; they win over
    /// `[defaults.params]`. Integers are accepted and sent in decimal, since `DBPORT = 5432`
    /// is what operators write.
    #[serde(default, deserialize_with = "deserialize_param_map")]
    pub params: BTreeMap<String, String>,
    /// A disabled tenant keeps its hosts (they answer with the suspended page) but sends
    /// nothing to PHP-FPM.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Cap on how many PHP-FPM connections this tenant may hold at once, so one busy
    /// tenant cannot take the whole shared pool.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// Whether a request body is read whole before a PHP-FPM connection is taken
    /// (`true`), or streamed to PHP-FPM as it arrives (`false`); `None` follows
    /// `[defaults] request_buffering`.
    #[serde(default)]
    pub request_buffering: Option<bool>,
    /// How the tenant's hosts get a certificate; `[defaults] tls` (or the built-in
    /// default, see [`crate::config::TlsConfig::setting_for`]) when `None`.
    #[serde(default)]
    pub tls: Option<crate::config::TlsSetting>,
    /// Encodings offered to this tenant's clients, most preferred first (empty: no
    /// compression); `[defaults] compression`, then `[server] compression` when `None`.
    #[serde(default)]
    pub compression: Option<Vec<Encoding>>,
    /// The directory of this tenant's private files (Moodle's dataroot), which PHP may
    /// hand to the gateway to serve with `X-Accel-Redirect` or `X-Sendfile`. `{tenant}`
    /// in it stands for the tenant's name; `None` follows `[defaults] private_root`.
    #[serde(default)]
    pub private_root: Option<String>,
    /// The `[upstreams.NAME]` this tenant's PHP requests go to; `None` follows
    /// `[defaults] upstream`, else the `[fastcgi]` upstream.
    #[serde(default)]
    pub upstream: Option<String>,
    /// `[tenants.NAME.cache]`: the response cache for this tenant; `None` follows
    /// `[defaults.cache]`.
    #[serde(default, deserialize_with = "super::cache::table_only")]
    pub cache: Option<super::TenantCacheSettings>,
}

/// One tenant's validated settings: what [`TenantSettings::validate`] returns and
/// [`Config::tenants`](super::Config::tenants) holds. Hosts are normalised (lower-case,
/// no trailing dot), each once; params are well-formed, unreserved and fit a FastCGI
/// record. The registry, the admin API and the CLI take it as it is and check nothing
/// again. Like [`Config`](super::Config)'s, its fields are public: one built by hand (a
/// test, an embedder) is trusted as it is.
///
/// `Debug` shows param names only: values hold database passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantConfig {
    /// Normalised hosts (`a.example.org`, `*.a.example.org`).
    pub hosts: Vec<String>,
    /// FastCGI params injected into every request for this tenant; they win over
    /// `[defaults.params]`.
    pub params: BTreeMap<String, String>,
    /// A disabled tenant keeps its hosts (they answer with the suspended page) but sends
    /// nothing to PHP-FPM.
    pub enabled: bool,
    /// Cap on how many PHP-FPM connections this tenant may hold at once (at least 1).
    pub max_concurrency: Option<usize>,
    /// Whether a request body is read whole before a PHP-FPM connection is taken
    /// (`true`), or streamed as it arrives (`false`); `None` follows `[defaults]`.
    pub request_buffering: Option<bool>,
    /// How the tenant's hosts get a certificate; `None` follows `[defaults] tls`.
    pub tls: Option<crate::config::TlsSetting>,
    /// This tenant's own encoding list (each encoding once); `None`: the default's.
    pub compression: Option<Vec<Encoding>>,
    /// The directory of this tenant's private files as written (absolute, `{tenant}`
    /// not yet substituted); `None` follows `[defaults] private_root`.
    pub private_root: Option<String>,
    /// The `[upstreams.NAME]` this tenant's PHP requests go to (a well-formed name; that
    /// it exists is checked against the whole file); `None` follows `[defaults]
    /// upstream`, else the `[fastcgi]` upstream.
    pub upstream: Option<String>,
    /// Its own cache settings (cookie patterns checked); `None` follows
    /// `[defaults.cache]`.
    pub cache: Option<super::TenantCacheSettings>,
}

fn enabled_by_default() -> bool {
    true
}

/// For both tenant types, which have the same fields: `Default` (enabled, nothing
/// else), and a `Debug` that shows param names, never their values.
macro_rules! tenant_impls {
    ($($tenant:ident),*) => {$(
        impl Default for $tenant {
            fn default() -> Self {
                Self {
                    hosts: Vec::new(),
                    params: BTreeMap::new(),
                    enabled: true,
                    max_concurrency: None,
                    request_buffering: None,
                    tls: None,
                    compression: None,
                    private_root: None,
                    upstream: None,
                    cache: None,
                }
            }
        }

        impl fmt::Debug for $tenant {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($tenant))
                    .field("hosts", &self.hosts)
                    .field("params", &self.params.keys().collect::<Vec<_>>())
                    .field("enabled", &self.enabled)
                    .field("max_concurrency", &self.max_concurrency)
                    .field("request_buffering", &self.request_buffering)
                    .field("tls", &self.tls)
                    .field("compression", &self.compression)
                    .field("private_root", &self.private_root)
                    .field("upstream", &self.upstream)
                    .field("cache", &self.cache)
                    .finish()
            }
        }
    )*};
}

tenant_impls!(TenantSettings, TenantConfig);

/// A normalised entry of a tenant's `hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Matches exactly this host.
    Exact(String),
    /// `*.SUFFIX`: matches any host with at least one more label before `SUFFIX`, never
    /// `SUFFIX` itself. Holds the suffix without the `*.`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses and normalises one `hosts` entry: lower-cases it, drops a trailing dot, and
    /// checks it is a DNS name (labels of letters, digits, `-` and `_`) or `*.` plus one.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let (wildcard, name) = match raw.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err("empty host name");
        }
        if name.contains('*') {
            return Err("'*' is only allowed as a whole first label: \"*.example.org\"");
        }
        if name.contains(':') {
            return Err("a port is not allowed: hosts match any port");
        }
        if name.len() > 253 {
            return Err("longer than 253 characters");
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err("empty label (two dots in a row, or a leading dot)");
            }
            if label.len() > 63 {
                return Err("a label is longer than 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err("only letters, digits, '-', '_' and '.' are allowed");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("a label cannot start or end with '-'");
            }
        }
        let name = name.to_ascii_lowercase();
        Ok(if wildcard {
            Self::Wildcard(name)
        } else {
            Self::Exact(name)
        })
    }

    /// The normalised form as it would be written in the config (`*.` kept).
    pub fn to_config_string(&self) -> String {
        match self {
            Self::Exact(host) => host.clone(),
            Self::Wildcard(suffix) => format!("*.{suffix}"),
        }
    }
}

/// Whether `name` is a valid tenant name: `[a-z0-9][a-z0-9_-]{0,62}`. Tenant names end up
/// in URLs of the admin API, metric labels and file names, hence the narrow alphabet.
pub fn is_valid_tenant_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Words that mark a param as a secret (matched case-insensitively anywhere in the name:
/// `DBPASS`, `DB_PASSWORD`, `AWS_SECRET_ACCESS_KEY`, `api_token`).
const SECRET_WORDS: &[&str] = &["PASS", "SECRET", "KEY", "TOKEN"];

/// Whether a param's value must never be shown (CLI, admin API, logs): its name contains
/// PASS, SECRET, KEY or TOKEN, in any case. Errs on the side of hiding.
pub fn is_secret_param(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|word| upper.contains(word))
}

/// The value to display for a param: `***` for a [secret](is_secret_param) one.
pub fn displayed_param_value<'a>(name: &str, value: &'a str) -> &'a str {
    if is_secret_param(name) {
        "***"
    } else {
        value
    }
}

/// Checks one param (of a tenant or of `[defaults.params]`).
///
/// The error carries no value text: values are secrets.
pub fn validate_param(name: &str, value: &str) -> Result<(), ConfigErrorKind> {
    let mut bytes = name.bytes();
    let well_formed = match bytes.next() {
        Some(first) => {
            (first.is_ascii_alphabetic() || first == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }
        None => false,
    };
    if !well_formed {
        return Err(ConfigErrorKind::InvalidParamName(name.to_owned()));
    }
    if name.starts_with("HTTP_") || RESERVED_PARAM_NAMES.contains(&name) {
        return Err(ConfigErrorKind::ReservedParamName(name.to_owned()));
    }
    if value.contains('\0') {
        // PHP hands params to C code (getenv, ini parsing) that stops at NUL.
        return Err(ConfigErrorKind::InvalidParamValue {
            name: name.to_owned(),
            reason: "value contains a NUL byte".to_owned(),
        });
    }
    // PHP-FPM cannot take a pair that spans two PARAMS records; catching it here keeps a
    // reload from producing a tenant whose every request fails.
    let encoded_len = encoded_pair_len(name.len(), value.len());
    if encoded_len > MAX_CONTENT_LEN {
        return Err(ConfigErrorKind::InvalidParamValue {
            name: name.to_owned(),
            reason: format!(
                "{encoded_len} bytes once encoded; a FastCGI param must fit in {MAX_CONTENT_LEN} bytes"
            ),
        });
    }
    Ok(())
}

impl TenantSettings {
    /// Checks one tenant on its own (its name, hosts, params and limits) and returns it
    /// validated, hosts normalised. Does not see other tenants, so hosts claimed by two
    /// tenants are caught by [`Config::parse`](super::Config::parse) (and
    /// [`Registry::build`](crate::tenant::Registry::build)).
    ///
    /// Errors name the tenant; their position is filled in when validating a whole file.
    pub fn validate(self, name: &str) -> Result<TenantConfig, ConfigError> {
        self.validate_with_patterns(name).map(|(tenant, _)| tenant)
    }

    /// [`validate`](Self::validate), also handing out the parsed host patterns, so a
    /// whole-file check for hosts claimed twice needs no copy of them.
    pub(super) fn validate_with_patterns(
        self,
        name: &str,
    ) -> Result<(TenantConfig, Vec<HostPattern>), ConfigError> {
        let fail = |kind: ConfigErrorKind, path: Vec<KeySegment>| {
            Err(ConfigError::new(kind).for_tenant(name).at(path))
        };
        if !is_valid_tenant_name(name) {
            return fail(ConfigErrorKind::InvalidTenantName(name.to_owned()), vec![]);
        }
        if self.hosts.is_empty() {
            return fail(
                ConfigErrorKind::NoHosts(name.to_owned()),
                vec![KeySegment::Key("hosts".into())],
            );
        }
        let mut patterns = Vec::with_capacity(self.hosts.len());
        for (index, host) in self.hosts.iter().enumerate() {
            let at = vec![KeySegment::Key("hosts".into()), KeySegment::Index(index)];
            let pattern = match HostPattern::parse(host) {
                Ok(pattern) => pattern,
                Err(reason) => {
                    let host = host.clone();
                    return fail(ConfigErrorKind::InvalidHost { host, reason }, at);
                }
            };
            if patterns.contains(&pattern) {
                return fail(
                    ConfigErrorKind::DuplicateHost {
                        host: pattern.to_config_string(),
                        first: name.to_owned(),
                        second: name.to_owned(),
                    },
                    at,
                );
            }
            patterns.push(pattern);
        }
        for (param, value) in &self.params {
            if let Err(kind) = validate_param(param, value) {
                return fail(
                    kind,
                    vec![
                        KeySegment::Key("params".into()),
                        KeySegment::Key(param.clone()),
                    ],
                );
            }
        }
        if self.max_concurrency == Some(0) {
            return Err(ConfigError::invalid(
                "max_concurrency",
                "must be at least 1 (set enabled = false to stop a tenant)",
            )
            .for_tenant(name)
            .at([KeySegment::Key("max_concurrency".into())]));
        }
        let compression = match self.compression {
            None => None,
            Some(list) => Some(
                check_encodings(list, "compression", &["compression"])
                    .map_err(|err| err.for_tenant(name))?,
            ),
        };
        if let Some(root) = &self.private_root {
            validate_private_root(root).map_err(|reason| {
                ConfigError::invalid("private_root", reason)
                    .for_tenant(name)
                    .at([KeySegment::Key("private_root".into())])
            })?;
        }
        if let Some(upstream) = &self.upstream {
            if !is_valid_tenant_name(upstream) {
                return Err(ConfigError::invalid(
                    "upstream",
                    format!("{upstream:?} is not an upstream name (1-63 characters from a-z, 0-9, '_' and '-')"),
                )
                .for_tenant(name)
                .at([KeySegment::Key("upstream".into())]));
            }
        }
        if let Some(cache) = &self.cache {
            cache
                .check(&["cache"])
                .map_err(|err| err.for_tenant(name))?;
        }
        let tenant = TenantConfig {
            hosts: patterns.iter().map(HostPattern::to_config_string).collect(),
            params: self.params,
            enabled: self.enabled,
            max_concurrency: self.max_concurrency,
            request_buffering: self.request_buffering,
            tls: self.tls,
            compression,
            private_root: self.private_root,
            upstream: self.upstream,
            cache: self.cache,
        };
        Ok((tenant, patterns))
    }
}

/// Checks a `private_root` as written (a tenant's or `[defaults]`'): an absolute path
/// with no `..`, no NUL, and at most `{tenant}` as a placeholder. Whether it exists is
/// not checked: a tenant's data directory may be created after the tenant.
pub(crate) fn validate_private_root(root: &str) -> Result<(), &'static str> {
    if root.contains('\0') {
        return Err("contains a NUL byte");
    }
    if !root.starts_with('/') {
        return Err("must be an absolute path (\"/srv/moodledata/{tenant}\")");
    }
    if root.split('/').any(|segment| segment == "..") {
        return Err("must not contain \"..\"");
    }
    if root.replace("{tenant}", "").contains(['{', '}']) {
        return Err("the only placeholder is {tenant}");
    }
    Ok(())
}

/// A `private_root` as written with `{tenant}` replaced by the tenant's name, as a path.
pub fn private_root_for(root: &str, tenant: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(root.replace("{tenant}", tenant))
}

/// Reads a param table whose values are strings or integers.
fn deserialize_param_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct ParamValue(String);

    impl<'de> Deserialize<'de> for ParamValue {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ValueVisitor;

            impl Visitor<'_> for ValueVisitor {
                type Value = ParamValue;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string or an integer")
                }

                fn visit_str<E: de::Error>(self, v: &str) -> Result<ParamValue, E> {
                    Ok(ParamValue(v.to_owned()))
                }

                fn visit_string<E: de::Error>(self, v: String) -> Result<ParamValue, E> {
                    Ok(ParamValue(v))
                }

                fn visit_i64<E: de::Error>(self, v: i64) -> Result<ParamValue, E> {
                    Ok(ParamValue(v.to_string()))
                }

                fn visit_u64<E: de::Error>(self, v: u64) -> Result<ParamValue, E> {
                    Ok(ParamValue(v.to_string()))
                }
            }

            deserializer.deserialize_any(ValueVisitor)
        }
    }

    struct MapVisitor;

    impl<'de> Visitor<'de> for MapVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of params")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut map = BTreeMap::new();
            while let Some((name, ParamValue(value))) = access.next_entry::<String, ParamValue>()? {
                map.insert(name, value);
            }
            Ok(map)
        }
    }

    deserializer.deserialize_map(MapVisitor)
}

/// The default param table, for `[defaults.params]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    #[serde(default, deserialize_with = "deserialize_param_map")]
    pub(crate) params: BTreeMap<String, String>,
    pub(crate) request_buffering: Option<bool>,
    /// `[defaults] tls`.
    #[serde(default)]
    pub(crate) tls: Option<crate::config::TlsSetting>,
    /// `[defaults] compression`: the encoding list of tenants that set none.
    #[serde(default)]
    pub(crate) compression: Option<Vec<Encoding>>,
    pub(crate) private_root: Option<String>,
    pub(crate) upstream: Option<String>,
    /// `[defaults.cache]`.
    #[serde(default, deserialize_with = "super::cache::table_only")]
    pub(crate) cache: Option<super::TenantCacheSettings>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(hosts: &[&str]) -> TenantSettings {
        TenantSettings {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..TenantSettings::default()
        }
    }

    #[test]
    fn params_that_look_secret_are_masked() {
        for secret in [
            "DBPASS",
            "db_password",
            "AWS_SECRET_ACCESS_KEY",
            "ApiKey",
            "token",
        ] {
            assert!(is_secret_param(secret), "{secret}");
            assert_eq!(displayed_param_value(secret, "hunter2"), "***");
        }
        for plain in ["DBHOST", "DBNAME", "DBUSER", "WWWROOT"] {
            assert!(!is_secret_param(plain), "{plain}");
            assert_eq!(displayed_param_value(plain, "x"), "x");
        }
    }

    #[test]
    fn tenant_names_follow_the_documented_alphabet() {
        for good in ["a", "0", "centro1", "a-b_c", &"x".repeat(63)] {
            assert!(is_valid_tenant_name(good), "{good}");
        }
        for bad in ["", "-a", "_a", "A", "a.b", "a b", "é", &"x".repeat(64)] {
            assert!(!is_valid_tenant_name(bad), "{bad}");
        }
    }

    #[test]
    fn host_patterns_are_normalised() {
        assert_eq!(
            HostPattern::parse("Centro1.Example.ORG."),
            Ok(HostPattern::Exact("centro1.example.org".into()))
        );
        assert_eq!(
            HostPattern::parse("*.Example.org"),
            Ok(HostPattern::Wildcard("example.org".into()))
        );
        assert_eq!(
            HostPattern::parse("localhost"),
            Ok(HostPattern::Exact("localhost".into()))
        );
    }

    #[test]
    fn host_patterns_reject_ports_stars_and_bad_labels() {
        for bad in [
            "",
            ".",
            "*.",
            "*",
            "a.example:8080",
            "a.*.example",
            "*a.example",
            "a..example",
            ".a.example",
            "-a.example",
            "a-.example",
            "a example",
            "a/b",
            "user@a.example",
            "[::1]",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(HostPattern::parse(&format!("{}.example", "a".repeat(64))).is_err());
    }

    #[test]
    fn params_reject_bad_and_reserved_names() {
        assert!(validate_param("DBPASS", "x").is_ok());
        assert!(validate_param("_private", "x").is_ok());
        assert!(validate_param("PHP_VALUE", "memory_limit=256M\nmax_execution_time=60").is_ok());
        assert!(validate_param("PHP_ADMIN_VALUE", "x").is_ok());
        for bad in ["", "1A", "A-B", "A B", "Ä"] {
            assert!(
                matches!(
                    validate_param(bad, "x"),
                    Err(ConfigErrorKind::InvalidParamName(_))
                ),
                "{bad:?}"
            );
        }
        for reserved in [
            "HTTP_HOST",
            "HTTP_X",
            "HTTPS",
            "SCRIPT_FILENAME",
            "PATH_INFO",
        ] {
            assert!(
                matches!(
                    validate_param(reserved, "x"),
                    Err(ConfigErrorKind::ReservedParamName(_))
                ),
                "{reserved}"
            );
        }
    }

    #[test]
    fn param_value_errors_never_include_the_value() {
        let err = validate_param("DBPASS", "hunter2\0").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let huge = "s".repeat(70_000);
        let err = validate_param("DBPASS", &huge).unwrap_err();
        assert!(err.to_string().contains("65535"));
        assert!(!err.to_string().contains("sss"));
    }

    #[test]
    fn validate_tenant_names_the_tenant() {
        let err = tenant(&[]).validate("t1").unwrap_err();
        assert_eq!(err.tenant(), Some("t1"));
        assert!(matches!(err.kind(), ConfigErrorKind::NoHosts(_)));

        let err = tenant(&["a.example", "bad host"])
            .validate("t1")
            .unwrap_err();
        assert_eq!(err.tenant(), Some("t1"));
        assert!(err.to_string().contains("bad host"));

        let err = tenant(&["a.example"]).validate("Bad").unwrap_err();
        assert!(matches!(err.kind(), ConfigErrorKind::InvalidTenantName(_)));
    }

    #[test]
    fn validate_tenant_rejects_a_host_listed_twice() {
        let err = tenant(&["a.example", "A.example."])
            .validate("t1")
            .unwrap_err();
        assert!(err.is_duplicate_host());
        assert_eq!(
            err.to_string(),
            "host \"a.example\" is listed twice in tenant \"t1\""
        );
    }

    #[test]
    fn a_tenants_compression_list_is_kept_and_checked_for_repeats() {
        let t: TenantSettings =
            toml::from_str("hosts = [\"a.example\"]\ncompression = [\"br\", \"gzip\"]").unwrap();
        let config = t.validate("t1").unwrap();
        assert_eq!(
            config.compression,
            Some(vec![Encoding::Brotli, Encoding::Gzip])
        );
        let t: TenantSettings =
            toml::from_str("hosts = [\"a.example\"]\ncompression = [\"br\", \"br\"]").unwrap();
        let err = t.validate("t1").unwrap_err();
        assert_eq!(err.tenant(), Some("t1"));
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(toml::from_str::<TenantSettings>("compression = [\"deflate\"]").is_err());
    }

    #[test]
    fn validate_tenant_rejects_zero_concurrency() {
        let mut t = tenant(&["a.example"]);
        t.max_concurrency = Some(0);
        assert!(t.clone().validate("t1").is_err());
        t.max_concurrency = Some(1);
        assert!(t.clone().validate("t1").is_ok());
    }

    #[test]
    fn private_root_must_be_absolute_and_plain() {
        let mut t = tenant(&["a.example"]);
        for good in ["/srv/moodledata/x", "/srv/moodledata/{tenant}", "/"] {
            t.private_root = Some(good.into());
            assert!(t.clone().validate("t1").is_ok(), "{good}");
        }
        for bad in ["srv/x", "", "/srv/../etc", "/srv/{name}", "/srv/x\0"] {
            t.private_root = Some(bad.into());
            let err = t.clone().validate("t1").unwrap_err();
            assert_eq!(err.tenant(), Some("t1"), "{bad}");
            assert!(err.to_string().contains("private_root"), "{bad}: {err}");
        }
        assert_eq!(
            private_root_for("/srv/moodledata/{tenant}", "centro1"),
            std::path::Path::new("/srv/moodledata/centro1")
        );
    }

    #[test]
    fn debug_shows_param_names_but_not_values() {
        let mut t = tenant(&["a.example"]);
        t.params.insert("DBPASS".into(), "hunter2".into());
        let shown = format!("{t:?}");
        assert!(shown.contains("DBPASS"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn param_tables_accept_strings_and_integers_only() {
        let t: TenantSettings =
            toml::from_str("hosts = [\"a\"]\nparams = { DBPORT = 5432, DBNAME = \"m\" }").unwrap();
        assert_eq!(t.params["DBPORT"], "5432");
        assert!(t.enabled);
        assert!(toml::from_str::<TenantSettings>("params = { A = true }").is_err());
    }
}
