//! The gateway's configuration (`tenants.toml`): parsed, then validated, then handed out
//! as an immutable [`Config`] that the rest of the program reads.
//!
//! # Layout
//! - `units.rs`: durations (`"2s"`) and sizes (`"64MiB"`).
//! - `server.rs`, `fastcgi.rs`: the `[server]` and `[fastcgi]` tables.
//! - `tenant.rs`: one `[tenants.NAME]` table as written ([`TenantSettings`]) and validated
//!   ([`TenantConfig`], by [`TenantSettings::validate`]), shared with the admin API and
//!   CLI that edit the file with `toml_edit`.
//! - `upstreams.rs`: the `[upstreams.NAME]` tables (several PHP-FPM servers, health
//!   checks) that tenants name with `upstream = "NAME"`.
//! - `error.rs`: [`ConfigError`], which names the file, line, column and tenant.
//! - `edit.rs`: [`ConfigDocument`], comment-preserving edits of the file (CLI, admin API)
//!   that refuse to save anything [`Config::parse`] would reject.
//!
//! Parsing uses serde structs that deny unknown fields, so a typo is an error rather
//! than a silently ignored setting. Validation turns those structs into the validated
//! types [`Config`] holds, once: nothing downstream checks them again. Only when it fails
//! is the text parsed again (with `toml_edit`, which keeps positions) to say where.

pub(crate) mod cache;
pub(crate) mod cgi_variables;
pub(crate) mod edit;
pub(crate) mod error;
pub(crate) mod fastcgi;
pub(crate) mod registry;
pub(crate) mod server;
pub(crate) mod tenant;
pub(crate) mod tls;
pub(crate) mod units;
pub(crate) mod upstreams;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::compression::Encoding;

pub use cache::{CacheConfig, TenantCache, TenantCacheSettings};
pub use edit::{ConfigDocument, EditError};
pub use error::{ConfigError, ConfigErrorKind};
pub use fastcgi::{FastCgiConfig, Upstream};
pub use registry::{RegistryConfig, UsageShipping, DEFAULT_REGISTRY_CHECK_INTERVAL};
pub use server::{AdminToken, ServerConfig};
pub use tenant::{
    displayed_param_value, is_secret_param, private_root_for, validate_param, HostPattern,
    TenantConfig, TenantSettings,
};
pub use tls::{AcmeChallenge, AcmeConfig, TlsConfig, TlsSetting};
pub use upstreams::{UpstreamConfig, UpstreamHealth, UpstreamServer};

use error::{keys, KeySegment};

/// Default interval between usage-metering flushes.
pub const DEFAULT_USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// A validated configuration: every setting checked, defaults applied, relative paths
/// resolved against the config file's directory, hosts normalised and unique.
///
/// `Debug` shows param names only.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this came from, as named by the operator (for messages and reloads).
    pub path: PathBuf,
    /// The directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[fastcgi]`.
    pub fastcgi: FastCgiConfig,
    /// `[defaults.params]`: params every tenant gets; a tenant's own params win.
    pub default_params: BTreeMap<String, String>,
    /// `[defaults] request_buffering`: whether tenants that do not say read request
    /// bodies whole before asking PHP-FPM (the default, `true`) or stream them.
    pub default_request_buffering: bool,
    /// `[defaults] compression`: the encodings of tenants that list none; `None`: the
    /// server's.
    pub default_compression: Option<Vec<Encoding>>,
    /// `[defaults] private_root`: the private-files directory of tenants that do not
    /// name their own, `{tenant}` standing for the tenant's name (absolute, checked).
    pub default_private_root: Option<String>,
    /// `[upstreams.NAME]`, by name: groups of PHP-FPM servers tenants may name.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// `[defaults] upstream`: the upstream of tenants that name none; `None`: the
    /// `[fastcgi]` upstream. Names an entry of `upstreams`.
    pub default_upstream: Option<String>,
    /// `[usage]`.
    pub usage: UsageConfig,
    /// `[tenants.NAME]`, by name.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// `[tls]` and `[defaults] tls`.
    pub tls: TlsConfig,
    /// `[cache]`: the memory the response cache may take over all tenants.
    pub cache: CacheConfig,
    /// `[defaults.cache]`: the cache settings of tenants that leave a key out.
    pub default_cache: TenantCacheSettings,
    /// `[registry]`: whether the tenants come from PostgreSQL (a fleet of gateways).
    pub registry: RegistryConfig,
}

impl Config {
    /// The encodings offered to a tenant's clients, most preferred first: its own list,
    /// else `[defaults] compression`, else `[server] compression`; empty means off.
    pub fn compression_for<'a>(
        &'a self,
        tenant_compression: Option<&'a [Encoding]>,
    ) -> &'a [Encoding] {
        tenant_compression
            .or(self.default_compression.as_deref())
            .unwrap_or(&self.server.compression)
    }
}

/// The validated `[usage]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageConfig {
    /// The usage-metering SQLite database; metering is off when `None`. Resolved against
    /// the config file's directory; created on first use, so not checked here.
    pub database: Option<PathBuf>,
    /// How often buffered usage counters are written.
    pub flush_interval: Duration,
    /// `postgres` and `gateway_id`: where hourly totals are shipped in a fleet; `None`
    /// keeps them in `database` only.
    pub shipping: Option<UsageShipping>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("base_dir", &self.base_dir)
            .field("server", &self.server)
            .field("fastcgi", &self.fastcgi)
            .field(
                "default_params",
                &self.default_params.keys().collect::<Vec<_>>(),
            )
            .field("default_request_buffering", &self.default_request_buffering)
            .field("default_compression", &self.default_compression)
            .field("default_private_root", &self.default_private_root)
            .field("upstreams", &self.upstreams)
            .field("default_upstream", &self.default_upstream)
            .field("usage", &self.usage)
            .field("tenants", &self.tenants)
            .field("tls", &self.tls)
            .field("cache", &self.cache)
            .field("default_cache", &self.default_cache)
            .field("registry", &self.registry)
            .finish()
    }
}

/// The whole file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: server::RawServer,
    fastcgi: fastcgi::RawFastCgi,
    #[serde(default)]
    defaults: tenant::RawDefaults,
    #[serde(default)]
    upstreams: BTreeMap<String, upstreams::RawUpstream>,
    #[serde(default)]
    usage: RawUsage,
    #[serde(default)]
    tenants: BTreeMap<String, TenantSettings>,
    #[serde(default)]
    tls: tls::RawTls,
    #[serde(default)]
    cache: cache::RawCache,
    #[serde(default)]
    registry: registry::RawRegistry,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsage {
    database: Option<PathBuf>,
    flush_interval: Option<units::HumanDuration>,
    postgres: Option<String>,
    gateway_id: Option<String>,
}

impl Config {
    /// Reads and validates the config file at `path`; relative paths inside it are
    /// resolved against its directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|err| ConfigError::io(path, err))?;
        let base_dir = base_dir_of(path)?;
        Self::parse(&text, path, &base_dir)
    }

    /// Parses and validates config text. `path_for_messages` only names the file in
    /// errors (and is kept as [`Config::path`]); `base_dir` resolves relative paths.
    ///
    /// Checks the filesystem: `fastcgi.root` must be a directory, `suspended_page` a
    /// file, and `admin_token_file` is read.
    pub fn parse(
        text: &str,
        path_for_messages: impl AsRef<Path>,
        base_dir: impl AsRef<Path>,
    ) -> Result<Config, ConfigError> {
        let file = path_for_messages.as_ref();
        Self::parse_inner(text, file, base_dir.as_ref())
            .map_err(|err| err.in_file(file).locate(text))
    }

    /// Reads the config file at `path` as [`load`](Self::load) does, but with `tenants`
    /// (a fleet's registry, read from PostgreSQL) in place of the file's `[tenants]`
    /// tables, validated exactly as if they had been written there.
    pub fn load_with_tenants(
        path: impl AsRef<Path>,
        tenants: &BTreeMap<String, TenantSettings>,
    ) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|err| ConfigError::io(path, err))?;
        let base_dir = base_dir_of(path)?;
        Self::parse_inner_with(&text, path, &base_dir, Some(tenants))
            .map_err(|err| err.in_file(path).locate(&text))
    }

    fn parse_inner(text: &str, file: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        Self::parse_inner_with(text, file, base_dir, None)
    }

    fn parse_inner_with(
        text: &str,
        file: &Path,
        base_dir: &Path,
        registry_tenants: Option<&BTreeMap<String, TenantSettings>>,
    ) -> Result<Config, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|err| {
            let mut error = ConfigError::new(ConfigErrorKind::Syntax(err.message().to_owned()));
            if let Some(span) = err.span() {
                if let Some(tenant) = error::tenant_at(text, span.start) {
                    error = error.for_tenant(&tenant);
                }
                error = error.at_offset(text, span.start);
            }
            error
        })?;

        let registry = raw.registry.validate(base_dir, !raw.tenants.is_empty())?;
        if let Some(tenants) = registry_tenants {
            raw.tenants = tenants.clone();
        }
        let server = raw.server.validate(base_dir)?;
        let fastcgi = raw.fastcgi.validate(base_dir)?;

        for (name, value) in &raw.defaults.params {
            validate_param(name, value)
                .map_err(|kind| ConfigError::new(kind).at(keys(&["defaults", "params", name])))?;
        }

        let default_compression = match raw.defaults.compression {
            None => None,
            Some(list) => Some(server::check_encodings(
                list,
                "defaults.compression",
                &["defaults", "compression"],
            )?),
        };
        if let Some(root) = &raw.defaults.private_root {
            tenant::validate_private_root(root).map_err(|reason| {
                ConfigError::invalid("private_root", reason).at(keys(&["defaults", "private_root"]))
            })?;
        }

        let upstreams = upstreams::validate(raw.upstreams, base_dir, fastcgi.max_connections)?;
        if let Some(name) = &raw.defaults.upstream {
            if !upstreams.contains_key(name) {
                return Err(ConfigError::invalid(
                    "defaults.upstream",
                    unknown_upstream(name, &upstreams),
                )
                .at(keys(&["defaults", "upstream"])));
            }
        }

        let tenants = check_tenants(raw.tenants)?;
        for (name, tenant) in &tenants {
            if let Some(upstream) = &tenant.upstream {
                if !upstreams.contains_key(upstream) {
                    return Err(ConfigError::invalid(
                        "upstream",
                        unknown_upstream(upstream, &upstreams),
                    )
                    .for_tenant(name)
                    .at(keys(&["tenants", name, "upstream"])));
                }
            }
        }
        let tls = tls::validate(raw.tls, raw.defaults.tls, &server, &tenants, base_dir)?;

        let shipping = registry::validate_shipping(
            raw.usage.postgres,
            raw.usage.gateway_id,
            raw.usage.database.is_some(),
        )?;
        let usage = UsageConfig {
            shipping,
            database: raw.usage.database.map(|db| base_dir.join(db)),
            flush_interval: raw
                .usage
                .flush_interval
                .map_or(DEFAULT_USAGE_FLUSH_INTERVAL, |d| d.0),
        };

        let default_cache = raw.defaults.cache.unwrap_or_default();
        default_cache.check(&["defaults", "cache"])?;

        Ok(Config {
            path: file.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            server,
            fastcgi,
            default_params: raw.defaults.params,
            default_request_buffering: raw.defaults.request_buffering.unwrap_or(true),
            default_compression,
            default_private_root: raw.defaults.private_root,
            upstreams,
            default_upstream: raw.defaults.upstream,
            usage,
            tenants,
            tls,
            cache: raw.cache.validate(),
            default_cache,
            registry,
        })
    }
}

/// Why a named upstream is refused: it is not among the `[upstreams]` tables.
fn unknown_upstream(name: &str, upstreams: &BTreeMap<String, UpstreamConfig>) -> String {
    if upstreams.is_empty() {
        format!("no [upstreams.{name}] table (this file defines no upstreams)")
    } else {
        let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
        format!(
            "no [upstreams.{name}] table (upstreams defined: {})",
            known.join(", ")
        )
    }
}

impl Config {
    /// The response cache settings of `tenant`, resolved over `[defaults.cache]`; `None`
    /// when its answers are not cached.
    pub fn cache_for(&self, tenant: &TenantConfig) -> Option<TenantCache> {
        tenant
            .cache
            .as_ref()
            .unwrap_or(&TenantCacheSettings::default())
            .resolve(&self.default_cache, self.cache)
    }
}

impl Config {
    /// The upstream `tenant` sends its PHP requests to: its own, else `[defaults]
    /// upstream`; `None` is the `[fastcgi]` upstream.
    pub fn upstream_of<'a>(&'a self, tenant: Option<&'a str>) -> Option<&'a str> {
        tenant.or(self.default_upstream.as_deref())
    }
}

/// The directory relative paths in the config at `path` are resolved against: the
/// directory of `path` as named (not of a symlink's target), made absolute.
pub(crate) fn base_dir_of(path: &Path) -> Result<PathBuf, ConfigError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // An absolute base keeps `root` (and so SCRIPT_FILENAME) absolute even when the
    // gateway was started with a relative config path.
    std::path::absolute(dir).map_err(|err| ConfigError::io(dir, err))
}

/// Validates every tenant and checks no host is claimed twice. Tenants are visited in
/// name order, so "first" in a duplicate error is stable.
fn check_tenants(
    tenants: BTreeMap<String, TenantSettings>,
) -> Result<BTreeMap<String, TenantConfig>, ConfigError> {
    let host_count = tenants.values().map(|t| t.hosts.len()).sum();
    let mut valid: Vec<(String, TenantConfig)> = Vec::with_capacity(tenants.len());
    // Exact hosts and wildcard suffixes are separate namespaces: `a.example` and
    // `*.a.example` do not collide. Each host maps to its tenant's index in `valid`.
    let mut owners: HashMap<HostPattern, usize> = HashMap::with_capacity(host_count);
    for (name, settings) in tenants {
        let in_tenant = || {
            [
                KeySegment::Key("tenants".into()),
                KeySegment::Key(name.clone()),
            ]
        };
        let (tenant, patterns) = settings
            .validate_with_patterns(&name)
            .map_err(|err| err.within(in_tenant()))?;
        for (index, pattern) in patterns.iter().enumerate() {
            if let Some(&first) = owners.get(pattern) {
                return Err(ConfigError::new(ConfigErrorKind::DuplicateHost {
                    host: pattern.to_config_string(),
                    first: valid[first].0.clone(),
                    second: name.clone(),
                })
                .for_tenant(&name)
                .at(in_tenant()
                    .into_iter()
                    .chain([KeySegment::Key("hosts".into()), KeySegment::Index(index)])));
            }
        }
        for pattern in patterns {
            owners.insert(pattern, valid.len());
        }
        valid.push((name, tenant));
    }
    // In name order already: the sort inside `collect` finds nothing to move.
    Ok(valid.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory holding `app/` so `root = "app"` validates.
    fn scratch() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("app")).unwrap();
        dir
    }

    const HEAD: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[fastcgi]\nupstream = \"127.0.0.1:9000\"\nroot = \"app\"\n";

    fn parse(dir: &Path, rest: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{HEAD}{rest}"), "tenants.toml", dir)
    }

    #[test]
    fn the_documented_example_parses() {
        let dir = scratch();
        let text = r#"
[server]
listen = "127.0.0.1:8080"
trusted_proxies = ["10.0.0.0/8"]
admin = "127.0.0.1:9180"
max_body = "64MiB"
max_header_bytes = "64KiB"
max_headers = 100
keepalive_timeout = "75s"
retry_after = "120s"
queue_timeout = "30s"
max_queue = 4096

[fastcgi]
upstream = "unix:/run/php/php8.2-fpm.sock"
root = "app"
fpm_root = "/var/www/html/"
index = "index.php"
max_connections = 8
connect_timeout = "2s"
read_timeout = "60s"
idle_timeout = "30s"
max_head_bytes = "64KiB"

[defaults.params]
APP_ENV = "production"

[usage]
database = "usage.db"
flush_interval = "5s"

[tenants.centro1]
hosts = ["Centro1.example.org", "*.centro1.example.org."]
params = { DBHOST = "10.200.16.27", DBNAME = "moodle_centro1", DBUSER = "moodle", DBPASS = "secret", WWWROOT = "https://centro1.example.org", DATAROOT = "/moodledata/centro1" }
enabled = true
max_concurrency = 4
"#;
        let config = Config::parse(text, "tenants.toml", dir.path()).unwrap();
        assert_eq!(config.fastcgi.fpm_root, "/var/www/html");
        assert_eq!(config.fastcgi.root, dir.path().join("app"));
        assert_eq!(
            config.fastcgi.upstream,
            Upstream::Unix("/run/php/php8.2-fpm.sock".into())
        );
        assert_eq!(config.default_params["APP_ENV"], "production");
        assert_eq!(config.usage.database, Some(dir.path().join("usage.db")));
        let centro = &config.tenants["centro1"];
        assert_eq!(
            centro.hosts,
            ["centro1.example.org", "*.centro1.example.org"]
        );
        assert_eq!(centro.max_concurrency, Some(4));
        assert_eq!(centro.params["DBNAME"], "moodle_centro1");
    }

    #[test]
    fn debug_never_shows_param_values() {
        let dir = scratch();
        let config = parse(
            dir.path(),
            "[defaults.params]\nSHARED = \"topsecret\"\n[tenants.a]\nhosts = [\"a.example\"]\nparams = { DBPASS = \"hunter2\" }\n",
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(shown.contains("DBPASS") && shown.contains("SHARED"));
        assert!(!shown.contains("hunter2") && !shown.contains("topsecret"));
    }

    #[test]
    fn duplicate_hosts_name_both_tenants_and_the_line() {
        let dir = scratch();
        let err = parse(
            dir.path(),
            "\n[tenants.a]\nhosts = [\"a.example\"]\n\n[tenants.b]\nhosts = [\"x.example\", \"A.Example.\"]\n",
        )
        .unwrap_err();
        assert!(err.is_duplicate_host());
        assert_eq!(err.tenant(), Some("b"));
        assert_eq!(err.line(), Some(12));
        assert_eq!(
            err.to_string(),
            "tenants.toml:12:23: duplicate host \"a.example\" in tenants \"a\" and \"b\""
        );
    }

    #[test]
    fn an_exact_host_and_a_wildcard_over_it_do_not_collide() {
        let dir = scratch();
        let config = parse(
            dir.path(),
            "[tenants.a]\nhosts = [\"a.example\"]\n[tenants.b]\nhosts = [\"*.a.example\"]\n",
        )
        .unwrap();
        assert_eq!(config.tenants.len(), 2);
        let err = parse(
            dir.path(),
            "[tenants.a]\nhosts = [\"*.a.example\"]\n[tenants.b]\nhosts = [\"*.A.example\"]\n",
        )
        .unwrap_err();
        assert!(err.is_duplicate_host());
    }

    #[test]
    fn unknown_fields_are_errors_with_position_and_tenant() {
        let dir = scratch();
        let err = parse(
            dir.path(),
            "[tenants.a]\nhosts = [\"a.example\"]\nmax_concurency = 4\n",
        )
        .unwrap_err();
        assert!(err.is_syntax());
        assert_eq!(err.tenant(), Some("a"));
        assert_eq!((err.line(), err.column()), (Some(9), Some(1)));
        assert!(err
            .to_string()
            .starts_with("tenants.toml:9:1: tenant \"a\": unknown field `max_concurency`"));

        let err = Config::parse(
            &HEAD.replace("[server]", "[server]\nlisten_on = 1"),
            "t.toml",
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(err.line(), Some(2));
        assert_eq!(err.tenant(), None);
    }

    #[test]
    fn toml_syntax_errors_have_a_position() {
        let dir = scratch();
        let err = parse(dir.path(), "[tenants.a\n").unwrap_err();
        assert!(err.is_syntax());
        assert_eq!(err.line(), Some(7));
    }

    #[test]
    fn tenant_errors_point_at_the_offending_value() {
        let dir = scratch();
        let err = parse(
            dir.path(),
            "[tenants.a]\nhosts = [\"a.example\"]\nparams = { GOOD = \"1\", REQUEST_URI = \"/x\" }\n",
        )
        .unwrap_err();
        assert_eq!(err.tenant(), Some("a"));
        assert_eq!(err.line(), Some(9));
        assert!(matches!(
            err.kind(),
            ConfigErrorKind::ReservedParamName(name) if name == "REQUEST_URI"
        ));

        let err = parse(dir.path(), "[tenants.Bad]\nhosts = [\"a.example\"]\n").unwrap_err();
        assert_eq!((err.line(), err.column()), (Some(7), Some(10)));

        let err = parse(dir.path(), "[tenants.a]\nhosts = []\n").unwrap_err();
        assert!(matches!(err.kind(), ConfigErrorKind::NoHosts(_)));
        assert_eq!(err.line(), Some(8));
    }

    #[test]
    fn default_params_follow_the_same_rules() {
        let dir = scratch();
        let err = parse(dir.path(), "[defaults.params]\nHTTP_X = \"1\"\n").unwrap_err();
        assert!(matches!(err.kind(), ConfigErrorKind::ReservedParamName(_)));
        assert_eq!(err.line(), Some(8));
    }

    #[test]
    fn server_and_fastcgi_errors_point_at_their_line() {
        let dir = scratch();
        let err = Config::parse(
            &HEAD.replace("127.0.0.1:9000", "nowhere"),
            "t.toml",
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(err.line(), Some(5));
        assert!(err
            .to_string()
            .starts_with("t.toml:5:12: invalid fastcgi.upstream"));

        let err =
            Config::parse(&HEAD.replace("\"app\"", "\"nope\""), "t.toml", dir.path()).unwrap_err();
        assert!(err.is_io());
        assert_eq!(err.line(), Some(6));
    }

    #[test]
    fn private_root_is_set_in_defaults_or_per_tenant_and_must_be_absolute() {
        let dir = scratch();
        let config = parse(
            dir.path(),
            "[defaults]\nprivate_root = \"/srv/moodledata/{tenant}\"\n\
             [tenants.a]\nhosts = [\"a.example\"]\n\
             [tenants.b]\nhosts = [\"b.example\"]\nprivate_root = \"/data/b\"\n",
        )
        .unwrap();
        assert_eq!(
            config.default_private_root.as_deref(),
            Some("/srv/moodledata/{tenant}")
        );
        assert_eq!(config.tenants["a"].private_root, None);
        assert_eq!(config.tenants["b"].private_root.as_deref(), Some("/data/b"));
        let err = parse(dir.path(), "[defaults]\nprivate_root = \"data\"\n").unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
        let err = parse(
            dir.path(),
            "[tenants.a]\nhosts = [\"a.example\"]\nprivate_root = \"data/a\"\n",
        )
        .unwrap_err();
        assert_eq!(err.tenant(), Some("a"));
    }

    #[test]
    fn request_buffering_is_on_by_default_and_set_in_defaults_or_per_tenant() {
        let dir = scratch();
        let config = parse(
            dir.path(),
            "[tenants.a]\nhosts = [\"a.example\"]\n[tenants.b]\nhosts = [\"b.example\"]\nrequest_buffering = false\n",
        )
        .unwrap();
        assert!(config.default_request_buffering);
        assert_eq!(config.tenants["a"].request_buffering, None);
        assert_eq!(config.tenants["b"].request_buffering, Some(false));
        let config = parse(dir.path(), "[defaults]\nrequest_buffering = false\n").unwrap();
        assert!(!config.default_request_buffering);
        let err = parse(dir.path(), "[defaults]\nrequest_buffering = \"no\"\n").unwrap_err();
        assert!(err.is_syntax(), "{err}");
    }

    const UPSTREAMS: &str = r#"
[upstreams.main]
servers = [
  { address = "10.0.0.11:9000", max_connections = 16 },
  { address = "10.0.0.12:9000", max_connections = 16, weight = 2 },
  { address = "unix:/run/php/php8.2-fpm.sock", max_connections = 8, backup = true },
]
health = { ping_path = "/fpm-ping", ping_response = "pong", interval = "2s", timeout = "1s", fails = 2, passes = 2 }

[upstreams.big]
servers = [{ address = "10.0.0.21:9000" }]
"#;

    #[test]
    fn upstreams_parse_as_the_issue_writes_them_and_tenants_name_one() {
        let dir = scratch();
        let config = parse(
            dir.path(),
            &format!("{UPSTREAMS}[defaults]\nupstream = \"main\"\n[tenants.centro1]\nhosts = [\"c.example\"]\nupstream = \"big\"\n[tenants.other]\nhosts = [\"o.example\"]\n"),
        )
        .unwrap();
        let main = &config.upstreams["main"];
        assert_eq!(main.servers.len(), 3);
        assert_eq!(main.servers[1].weight, 2);
        assert!(main.servers[2].backup);
        assert_eq!(
            main.servers[2].address,
            Upstream::Unix("/run/php/php8.2-fpm.sock".into())
        );
        assert_eq!(main.health.ping, Some(("/fpm-ping".into(), "pong".into())));
        // A server without a bound takes [fastcgi] max_connections (8 by default).
        assert_eq!(config.upstreams["big"].servers[0].max_connections, 8);
        assert_eq!(config.upstreams["big"].health.ping, None);
        assert_eq!(config.tenants["centro1"].upstream.as_deref(), Some("big"));
        assert_eq!(config.upstream_of(Some("big")), Some("big"));
        assert_eq!(config.upstream_of(None), Some("main"));
        let plain = parse(dir.path(), UPSTREAMS).unwrap();
        assert_eq!(plain.upstream_of(None), None);
    }

    #[test]
    fn bad_upstreams_are_refused_with_a_clear_reason_and_line() {
        let dir = scratch();
        let cases = [
            (
                format!("{UPSTREAMS}[tenants.a]\nhosts = [\"a.example\"]\nupstream = \"huge\"\n"),
                "no [upstreams.huge] table (upstreams defined: big, main)",
            ),
            (
                "[defaults]\nupstream = \"main\"\n".to_owned(),
                "no [upstreams.main] table (this file defines no upstreams)",
            ),
            (
                "[upstreams.u]\nservers = [{ address = \"127.0.0.1:9000\" }, { address = \"127.0.0.1:9000\" }]\n".to_owned(),
                "127.0.0.1:9000 is listed twice in upstream \"u\"",
            ),
            (
                "[upstreams.u]\nservers = [{ address = \"127.0.0.1:9000\", max_connections = 0 }]\n".to_owned(),
                "max_connections: 127.0.0.1:9000: must be at least 1",
            ),
            (
                "[upstreams.u]\nservers = [{ address = \"127.0.0.1:9000\", weight = 0 }]\n".to_owned(),
                "weight: 127.0.0.1:9000: must be at least 1",
            ),
            (
                "[upstreams.u]\nservers = [{ address = \"127.0.0.1:9000\", backup = true }]\n".to_owned(),
                "has only backup servers",
            ),
            (
                "[upstreams.u]\nservers = []\n".to_owned(),
                "lists no servers",
            ),
            (
                "[upstreams.u]\nservers = [{ address = \"nowhere\" }]\n".to_owned(),
                "expected \"host:port\"",
            ),
            (
                "[upstreams.u]\nservers = [{ address = \"127.0.0.1:9000\" }]\nhealth = { ping_path = \"fpm-ping\" }\n".to_owned(),
                "must be a path starting with '/'",
            ),
            (
                "[upstreams.u]\nservers = [{ address = \"127.0.0.1:9000\" }]\nhealth = { fails = 0 }\n".to_owned(),
                "fails: must be at least 1",
            ),
            (
                "[upstreams.u]\nservers = [{ address = \"127.0.0.1:9000\" }]\nhealth = { interval = \"0s\" }\n".to_owned(),
                "interval: must be above zero",
            ),
            (
                "[upstreams.U]\nservers = [{ address = \"127.0.0.1:9000\" }]\n".to_owned(),
                "invalid upstream name \"U\"",
            ),
        ];
        for (rest, want) in cases {
            let err = parse(dir.path(), &rest).unwrap_err();
            assert!(err.to_string().contains(want), "{rest}: {err}");
            assert!(err.line().is_some(), "{rest}: {err}");
        }
        let err = parse(
            dir.path(),
            &format!("{UPSTREAMS}[tenants.a]\nhosts = [\"a.example\"]\nupstream = \"huge\"\n"),
        )
        .unwrap_err();
        assert_eq!(err.tenant(), Some("a"));
    }

    #[test]
    fn a_config_without_tenants_is_valid() {
        let dir = scratch();
        let config = parse(dir.path(), "").unwrap();
        assert!(config.tenants.is_empty());
        assert_eq!(config.usage.database, None);
        assert_eq!(config.usage.flush_interval, DEFAULT_USAGE_FLUSH_INTERVAL);
    }

    #[test]
    fn load_resolves_paths_against_the_file_directory() {
        let dir = scratch();
        let path = dir.path().join("tenants.toml");
        fs::write(&path, format!("{HEAD}[usage]\ndatabase = \"u.db\"\n")).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.fastcgi.root, dir.path().join("app"));
        assert_eq!(config.usage.database, Some(dir.path().join("u.db")));
        assert_eq!(config.path, path);

        let err = Config::load(dir.path().join("missing.toml")).unwrap_err();
        assert!(err.is_io());
        assert!(err.to_string().contains("missing.toml"));
    }
}
