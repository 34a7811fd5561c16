//! The `[upstreams.NAME]` tables: named groups of PHP-FPM servers, each with its own
//! bound, weight and backup flag, and the health check that watches them. A tenant names
//! one with `upstream = "NAME"`; the `[fastcgi]` upstream stays the one-server shorthand
//! for tenants that name none.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, KeySegment};
use super::fastcgi::Upstream;
use super::tenant::is_valid_tenant_name;
use super::units::HumanDuration;

/// Default `ping_response`: PHP-FPM's own default `ping.response`.
pub const DEFAULT_PING_RESPONSE: &str = "pong";

/// One validated server of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    /// Where it listens.
    pub address: Upstream,
    /// Most connections to it at once (that host's `pm.max_children` or fewer); at
    /// least 1. Defaults to `[fastcgi] max_connections`.
    pub max_connections: usize,
    /// Its share of the load, at least 1.
    pub weight: u32,
    /// Used only while no primary server is healthy.
    pub backup: bool,
}

/// The validated `health` table of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamHealth {
    /// PHP-FPM's `ping.path` and `ping.response`; `None`: passive marking only.
    pub ping: Option<(String, String)>,
    /// Time between checks; without a ping, how long a failed server is left out.
    pub interval: Duration,
    /// Longest wait for a ping's answer.
    pub timeout: Duration,
    /// Failed checks in a row that mark a server down.
    pub fails: u32,
    /// Good checks in a row that bring it back.
    pub passes: u32,
}

/// One validated `[upstreams.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Its servers, in the order written; addresses unique, at least one primary.
    pub servers: Vec<UpstreamServer>,
    /// How they are checked.
    pub health: UpstreamHealth,
}

impl UpstreamConfig {
    /// The servers as fcgi-core takes them.
    pub fn server_configs(&self) -> Vec<fcgi_core::ServerConfig> {
        self.servers
            .iter()
            .map(|server| {
                let mut config = fcgi_core::ServerConfig::new(
                    client_address(&server.address),
                    server.max_connections,
                );
                config.weight = server.weight;
                config.backup = server.backup;
                config
            })
            .collect()
    }

    /// The health settings as fcgi-core takes them.
    pub fn health_config(&self) -> fcgi_core::HealthConfig {
        let health = &self.health;
        fcgi_core::HealthConfig {
            ping: health
                .ping
                .as_ref()
                .map(|(path, response)| fcgi_core::Ping {
                    path: path.clone(),
                    response: response.clone(),
                }),
            interval: health.interval,
            timeout: health.timeout,
            fails: health.fails,
            passes: health.passes,
        }
    }
}

/// The FastCGI client's address for a configured one.
pub fn client_address(upstream: &Upstream) -> fcgi_core::Upstream {
    match upstream {
        Upstream::Tcp { host, port } if host.contains(':') => {
            fcgi_core::Upstream::Tcp(format!("[{host}]:{port}"))
        }
        Upstream::Tcp { host, port } => fcgi_core::Upstream::Tcp(format!("{host}:{port}")),
        Upstream::Unix(path) => fcgi_core::Upstream::Unix(path.clone()),
    }
}

/// `[upstreams.NAME]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    #[serde(default)]
    servers: Vec<RawServer>,
    #[serde(default)]
    health: Option<RawHealth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    address: String,
    max_connections: Option<usize>,
    weight: Option<u32>,
    #[serde(default)]
    backup: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    ping_path: Option<String>,
    ping_response: Option<String>,
    interval: Option<HumanDuration>,
    timeout: Option<HumanDuration>,
    fails: Option<u32>,
    passes: Option<u32>,
}

/// Validates every `[upstreams.NAME]`; `default_max_connections` is `[fastcgi]
/// max_connections`, taken by a server that gives no bound of its own.
pub(crate) fn validate(
    raw: BTreeMap<String, RawUpstream>,
    base_dir: &Path,
    default_max_connections: usize,
) -> Result<BTreeMap<String, UpstreamConfig>, ConfigError> {
    raw.into_iter()
        .map(|(name, upstream)| {
            let at = |rest: &[KeySegment]| {
                let mut path = vec![
                    KeySegment::Key("upstreams".into()),
                    KeySegment::Key(name.clone()),
                ];
                path.extend_from_slice(rest);
                path
            };
            if !is_valid_tenant_name(&name) {
                return Err(ConfigError::invalid(
                    "upstreams",
                    format!("invalid upstream name {name:?}: use 1-63 characters from a-z, 0-9, '_' and '-', starting with a letter or digit"),
                )
                .at(at(&[])));
            }
            let config = upstream
                .validate(&name, base_dir, default_max_connections)
                .map_err(|err| err.within(at(&[])))?;
            Ok((name, config))
        })
        .collect()
}

impl RawUpstream {
    fn validate(
        self,
        name: &str,
        base_dir: &Path,
        default_max_connections: usize,
    ) -> Result<UpstreamConfig, ConfigError> {
        let servers_at = |index: usize, key: &str| {
            vec![
                KeySegment::Key("servers".into()),
                KeySegment::Index(index),
                KeySegment::Key(key.into()),
            ]
        };
        if self.servers.is_empty() {
            return Err(ConfigError::invalid(
                "upstreams.servers",
                format!("upstream {name:?} lists no servers"),
            )
            .at([KeySegment::Key("servers".into())]));
        }
        let mut seen = HashSet::new();
        let mut servers = Vec::with_capacity(self.servers.len());
        for (index, raw) in self.servers.into_iter().enumerate() {
            let address = Upstream::parse(&raw.address, base_dir).map_err(|reason| {
                ConfigError::invalid("upstreams.servers.address", reason)
                    .at(servers_at(index, "address"))
            })?;
            if !seen.insert(address.clone()) {
                return Err(ConfigError::invalid(
                    "upstreams.servers.address",
                    format!("{address} is listed twice in upstream {name:?}"),
                )
                .at(servers_at(index, "address")));
            }
            let max_connections = raw.max_connections.unwrap_or(default_max_connections);
            if max_connections == 0 {
                return Err(ConfigError::invalid(
                    "upstreams.servers.max_connections",
                    format!("{address}: must be at least 1"),
                )
                .at(servers_at(index, "max_connections")));
            }
            let weight = raw.weight.unwrap_or(1);
            if weight == 0 {
                return Err(ConfigError::invalid(
                    "upstreams.servers.weight",
                    format!("{address}: must be at least 1 (remove the server to stop using it)"),
                )
                .at(servers_at(index, "weight")));
            }
            servers.push(UpstreamServer {
                address,
                max_connections,
                weight,
                backup: raw.backup,
            });
        }
        if servers.iter().all(|server| server.backup) {
            return Err(ConfigError::invalid(
                "upstreams.servers.backup",
                format!(
                    "upstream {name:?} has only backup servers: at least one must be a primary"
                ),
            )
            .at([KeySegment::Key("servers".into())]));
        }
        let health = match self.health {
            Some(raw) => raw.validate()?,
            None => default_health(),
        };
        Ok(UpstreamConfig { servers, health })
    }
}

fn default_health() -> UpstreamHealth {
    let defaults = fcgi_core::HealthConfig::default();
    UpstreamHealth {
        ping: None,
        interval: defaults.interval,
        timeout: defaults.timeout,
        fails: defaults.fails,
        passes: defaults.passes,
    }
}

impl RawHealth {
    fn validate(self) -> Result<UpstreamHealth, ConfigError> {
        let at = |key: &str| {
            [
                KeySegment::Key("health".into()),
                KeySegment::Key(key.into()),
            ]
        };
        let defaults = default_health();
        let ping = match (self.ping_path, self.ping_response) {
            (Some(path), response) => {
                if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control()) {
                    return Err(ConfigError::invalid(
                        "upstreams.health.ping_path",
                        format!("{path:?} must be a path starting with '/', like PHP-FPM's ping.path \"/fpm-ping\""),
                    )
                    .at(at("ping_path")));
                }
                let response = response.unwrap_or_else(|| DEFAULT_PING_RESPONSE.to_owned());
                if response.is_empty() {
                    return Err(ConfigError::invalid(
                        "upstreams.health.ping_response",
                        "must not be empty (PHP-FPM's ping.response, \"pong\" by default)",
                    )
                    .at(at("ping_response")));
                }
                Some((path, response))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "upstreams.health.ping_response",
                    "needs ping_path (PHP-FPM's ping.path) too",
                )
                .at(at("ping_response")))
            }
            (None, None) => None,
        };
        let interval = self.interval.map_or(defaults.interval, |d| d.0);
        if interval.is_zero() {
            return Err(
                ConfigError::invalid("upstreams.health.interval", "must be above zero")
                    .at(at("interval")),
            );
        }
        let timeout = self.timeout.map_or(defaults.timeout, |d| d.0);
        if timeout.is_zero() {
            return Err(
                ConfigError::invalid("upstreams.health.timeout", "must be above zero")
                    .at(at("timeout")),
            );
        }
        let fails = self.fails.unwrap_or(defaults.fails);
        if fails == 0 {
            return Err(
                ConfigError::invalid("upstreams.health.fails", "must be at least 1")
                    .at(at("fails")),
            );
        }
        let passes = self.passes.unwrap_or(defaults.passes);
        if passes == 0 {
            return Err(
                ConfigError::invalid("upstreams.health.passes", "must be at least 1")
                    .at(at("passes")),
            );
        }
        Ok(UpstreamHealth {
            ping,
            interval,
            timeout,
            fails,
            passes,
        })
    }
}
