//! What a pool is made of: its servers ([`ServerConfig`]) and how they are checked
//! ([`HealthConfig`]), validated together; and the per-server figures it reports
//! ([`ServerStats`]).

use std::collections::HashSet;
use std::time::Duration;

use crate::upstream::Upstream;

/// One FastCGI server of a [`Pool`](super::Pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where it listens.
    pub address: Upstream,
    /// Most connections to it at once: that host's `pm.max_children` or fewer. A kept
    /// connection pins one of its workers.
    pub max_connections: usize,
    /// Its share of the load (at least 1): a server is chosen by the fewest connections in
    /// use relative to `max_connections` × `weight`, so a slower host can be given less.
    pub weight: u32,
    /// Used only while no primary (non-backup) server is healthy.
    pub backup: bool,
}

impl ServerConfig {
    /// A primary server of weight 1.
    pub fn new(address: Upstream, max_connections: usize) -> Self {
        Self {
            address,
            max_connections,
            weight: 1,
            backup: false,
        }
    }
}

/// An active health check: PHP-FPM's own `ping.path`, asked over FastCGI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// The pool's `ping.path` (sent as `SCRIPT_NAME` and `REQUEST_URI`), e.g. `/fpm-ping`.
    pub path: String,
    /// The pool's `ping.response`: the body a healthy server answers (PHP-FPM's default is
    /// `pong`).
    pub response: String,
}

/// How the servers of a pool are checked and marked down.
///
/// Passive: with more than one server, a connect failure, a fresh connection refused,
/// reset or closed before the response, or a FastCGI protocol error (in the head or in the
/// body) marks the server down at once.
/// (A pool of one server is never marked down, as nginx does with a one-server upstream:
/// there is nowhere else to go.)
///
/// Active, with [`ping`](HealthConfig::ping): every `interval`, each server not all busy is
/// sent a FastCGI request for the ping path on a connection of its own (not counted
/// against `max_connections`); `fails` failed checks in a row mark it down, `passes` good
/// ones bring it back. A request that completed on it since the last check counts as a
/// good check; a server whose connections are all busy is not probed; a probe that timed
/// out counts as failed only if the server had idle capacity.
///
/// Without `ping`, a server marked down is tried again after `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// The active check; `None` for passive marking alone.
    pub ping: Option<Ping>,
    /// Time between checks; without `ping`, how long a failed server is left out.
    pub interval: Duration,
    /// Longest wait for a ping's answer (connect included).
    pub timeout: Duration,
    /// Failed checks in a row that mark a server down.
    pub fails: u32,
    /// Good checks in a row that bring a server back.
    pub passes: u32,
}

impl Default for HealthConfig {
    /// Passive marking only; `interval` 2 s, `timeout` 1 s, `fails` 2, `passes` 2.
    fn default() -> Self {
        Self {
            ping: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            fails: 2,
            passes: 2,
        }
    }
}

/// One server's state, for metrics and the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStats {
    /// Where it listens.
    pub address: Upstream,
    /// Chosen for new requests (not marked down).
    pub healthy: bool,
    /// Connections carrying a request, or being opened.
    pub in_use: usize,
    /// Connections kept for reuse.
    pub idle: usize,
    /// Its bound.
    pub max_connections: usize,
    /// Requests that failed on it in a way that marks a server down (connect failure,
    /// refused or reset connection, protocol error).
    pub failures: u64,
    /// Health checks that reached a verdict (a ping, or a request that completed).
    pub checks: u64,
    /// Of those, the failed ones.
    pub checks_failed: u64,
}

/// A server list or health setting that cannot make a pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPool {
    /// The list is empty.
    #[error("a FastCGI pool needs at least one server")]
    NoServers,
    /// A server listed twice.
    #[error("FastCGI server {0} is listed twice")]
    Duplicate(Upstream),
    /// `max_connections` of 0.
    #[error("FastCGI server {0}: max_connections must be at least 1")]
    NoConnections(Upstream),
    /// `weight` of 0.
    #[error("FastCGI server {0}: weight must be at least 1")]
    NoWeight(Upstream),
    /// A health setting out of range.
    #[error("FastCGI health check: {0}")]
    Health(&'static str),
}

/// Checks servers and health settings together.
pub(super) fn validate(servers: &[ServerConfig], health: &HealthConfig) -> Result<(), InvalidPool> {
    if servers.is_empty() {
        return Err(InvalidPool::NoServers);
    }
    let mut seen = HashSet::new();
    for server in servers {
        if !seen.insert(&server.address) {
            return Err(InvalidPool::Duplicate(server.address.clone()));
        }
        if server.max_connections == 0 {
            return Err(InvalidPool::NoConnections(server.address.clone()));
        }
        if server.weight == 0 {
            return Err(InvalidPool::NoWeight(server.address.clone()));
        }
    }
    if health.interval.is_zero() {
        return Err(InvalidPool::Health("interval must be above zero"));
    }
    if health.timeout.is_zero() {
        return Err(InvalidPool::Health("timeout must be above zero"));
    }
    if health.fails == 0 || health.passes == 0 {
        return Err(InvalidPool::Health("fails and passes must be at least 1"));
    }
    if let Some(ping) = &health.ping {
        if !ping.path.starts_with('/') {
            return Err(InvalidPool::Health("ping path must start with '/'"));
        }
        if ping.response.is_empty() {
            return Err(InvalidPool::Health("ping response must not be empty"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(address: &str) -> ServerConfig {
        ServerConfig::new(address.parse().unwrap(), 4)
    }

    #[test]
    fn a_bad_server_list_or_health_setting_is_refused_with_its_reason() {
        let health = HealthConfig::default();
        assert_eq!(validate(&[], &health), Err(InvalidPool::NoServers));
        let twice = [server("127.0.0.1:9000"), server("127.0.0.1:9000")];
        assert!(matches!(
            validate(&twice, &health),
            Err(InvalidPool::Duplicate(_))
        ));
        let mut none = server("127.0.0.1:9000");
        none.max_connections = 0;
        assert!(matches!(
            validate(&[none], &health),
            Err(InvalidPool::NoConnections(_))
        ));
        let mut light = server("127.0.0.1:9000");
        light.weight = 0;
        assert!(matches!(
            validate(&[light], &health),
            Err(InvalidPool::NoWeight(_))
        ));
        let ok = [server("127.0.0.1:9000"), server("unix:/run/php/fpm.sock")];
        assert_eq!(validate(&ok, &health), Ok(()));
        let bad_ping = HealthConfig {
            ping: Some(Ping {
                path: "fpm-ping".into(),
                response: "pong".into(),
            }),
            ..HealthConfig::default()
        };
        assert!(matches!(
            validate(&ok, &bad_ping),
            Err(InvalidPool::Health(_))
        ));
        let no_fails = HealthConfig {
            fails: 0,
            ..HealthConfig::default()
        };
        assert!(matches!(
            validate(&ok, &no_fails),
            Err(InvalidPool::Health(_))
        ));
    }
}
