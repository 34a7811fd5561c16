//! The immutable view of the configuration that requests are served from, and the atomic
//! swap that replaces it on a reload.
//!
//! A request loads the current snapshot once and keeps it to its end, so a reload never
//! changes a request half-way. Each PHP-FPM pool (the `[fastcgi]` one and one per
//! `[upstreams.NAME]`) is carried over to the new snapshot when its servers, health check
//! and pool settings are unchanged, so a reload drops no kept connection of it. A pool
//! whose servers or settings changed is replaced by one that succeeds it
//! ([`fcgi_core::Pool::succeed`]): the kept connections of the servers it still has carry
//! over, those of removed servers close when their requests end. A pool left out of the
//! new snapshot lives on in the requests that still hold the old one, and closes when the
//! last of them ends.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::access::Telemetry;
use crate::config::Config;
use crate::error::error_page;
use crate::tenant::registry::Registry;

/// Everything a request needs, built whole from one validated config.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Host → tenant lookup.
    pub registry: Registry,
    /// The connection pool to the `[fastcgi]` upstream: tenants that name no upstream
    /// (and with no `[defaults] upstream`) use it.
    pub pool: fcgi_core::Pool,
    /// One pool per `[upstreams.NAME]`, by name.
    pub upstreams: BTreeMap<String, fcgi_core::Pool>,
    /// The page suspended tenants answer with.
    pub suspended_page: Bytes,
    /// Disk in use by spooled request bodies; the same counter across reloads, so
    /// `max_spool_bytes` bounds bodies spooled under an older snapshot too.
    pub spool_usage: Arc<crate::spool::SpoolUsage>,
}

/// Why a snapshot could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The registry refused the config.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// An upstream's servers could not make a pool (validation should have caught it).
    #[error("upstream {name:?}: {source}")]
    Upstream {
        /// The `[upstreams.NAME]`.
        name: String,
        /// Why fcgi-core refused it.
        source: fcgi_core::InvalidPool,
    },
    /// The suspended page could not be read.
    #[error("reading suspended page {path}: {source}")]
    SuspendedPage {
        /// The configured path.
        path: std::path::PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

impl Snapshot {
    /// Builds a snapshot, reusing `previous`'s pool when its settings are the same, and its
    /// tenants whose settings are the same.
    pub fn build(config: Config, previous: Option<&Snapshot>) -> Result<Self, SnapshotError> {
        let registry = Registry::build_reusing(
            &config,
            previous.map(|prev| (&*prev.config, &prev.registry)),
        )?;
        let pool_config = pool_config(&config);
        let upstream = upstream_of(&config);
        let pool = match previous {
            Some(prev)
                if prev.pool.upstream() == &upstream
                    && same_pool_config(prev.pool.config(), &pool_config) =>
            {
                prev.pool.clone()
            }
            _ => {
                let pool = fcgi_core::Pool::new(upstream, pool_config.clone());
                if let Some(prev) = previous {
                    pool.succeed(&prev.pool);
                }
                pool
            }
        };
        let mut upstreams = BTreeMap::new();
        for (name, settings) in &config.upstreams {
            let servers = settings.server_configs();
            let health = settings.health_config();
            let kept = previous
                .and_then(|prev| prev.upstreams.get(name))
                .filter(|prev| {
                    prev.servers() == servers.as_slice()
                        && prev.health() == &health
                        && same_shared_settings(prev.config(), &pool_config)
                });
            let pool = match kept {
                Some(pool) => pool.clone(),
                None => {
                    let pool = fcgi_core::Pool::with_servers(servers, pool_config.clone(), health)
                        .map_err(|source| SnapshotError::Upstream {
                            name: name.clone(),
                            source,
                        })?;
                    if let Some(prev) = previous.and_then(|prev| prev.upstreams.get(name)) {
                        pool.succeed(prev);
                    }
                    pool
                }
            };
            upstreams.insert(name.clone(), pool);
        }
        let suspended_page =
            match &config.server.suspended_page {
                Some(path) => Bytes::from(std::fs::read(path).map_err(|source| {
                    SnapshotError::SuspendedPage {
                        path: path.clone(),
                        source,
                    }
                })?),
                None => error_page(http::StatusCode::SERVICE_UNAVAILABLE),
            };
        let spool_usage = previous.map_or_else(Arc::default, |prev| prev.spool_usage.clone());
        Ok(Self {
            config: Arc::new(config),
            registry,
            pool,
            upstreams,
            suspended_page,
            spool_usage,
        })
    }
}

impl Snapshot {
    /// The pool a tenant naming `upstream` (its own `upstream` setting) sends to: that
    /// upstream's, else `[defaults] upstream`'s, else the `[fastcgi]` pool. Validation
    /// makes every name resolve; a name that does not (a tenant built by hand) falls back
    /// to the `[fastcgi]` pool rather than failing the request.
    pub fn pool_for(&self, upstream: Option<&str>) -> &fcgi_core::Pool {
        self.config
            .upstream_of(upstream)
            .and_then(|name| self.upstreams.get(name))
            .unwrap_or(&self.pool)
    }
}

/// The name the `[fastcgi]` pool goes by in metrics and the admin API: brackets, so it
/// never collides with an `[upstreams.NAME]` (names are `a-z0-9_-`).
pub const FASTCGI_UPSTREAM: &str = "[fastcgi]";

/// One upstream's state, for `/metrics` and `GET /upstreams`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamStats {
    /// `[upstreams.NAME]`'s name, or [`FASTCGI_UPSTREAM`].
    pub name: String,
    /// Connections counted against the servers' bounds (idle, in use, opening).
    pub open: usize,
    /// Idle connections kept for reuse.
    pub idle: usize,
    /// Requests waiting in the upstream's fair queue.
    pub queued: usize,
    /// Each server, in the order written.
    pub servers: Vec<ServerState>,
}

/// One server's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerState {
    /// `host:port` or `unix:PATH`.
    pub address: String,
    /// Chosen for new requests (not marked down).
    pub healthy: bool,
    /// Connections carrying a request, or being opened.
    pub in_use: usize,
    /// Connections kept for reuse.
    pub idle: usize,
    /// Its bound.
    pub max_connections: usize,
    /// Its weight.
    pub weight: u32,
    /// Used only while no primary server is healthy.
    pub backup: bool,
    /// Requests that failed on it in a way that marks a server down.
    pub failures: u64,
    /// Health checks that reached a verdict (a ping, or a request that completed).
    pub checks: u64,
    /// Of those, the failed ones.
    pub checks_failed: u64,
}

impl Snapshot {
    /// Every pool's state: the `[fastcgi]` pool first, then the upstreams by name.
    pub fn upstream_stats(&self) -> Vec<UpstreamStats> {
        std::iter::once((FASTCGI_UPSTREAM, &self.pool))
            .chain(
                self.upstreams
                    .iter()
                    .map(|(name, pool)| (name.as_str(), pool)),
            )
            .map(|(name, pool)| {
                let totals = pool.stats();
                UpstreamStats {
                    name: name.to_owned(),
                    open: totals.open,
                    idle: totals.idle,
                    queued: totals.waiting,
                    servers: pool
                        .server_stats()
                        .into_iter()
                        .zip(pool.servers())
                        .map(|(stats, config)| ServerState {
                            address: stats.address.to_string(),
                            healthy: stats.healthy,
                            in_use: stats.in_use,
                            idle: stats.idle,
                            max_connections: stats.max_connections,
                            weight: config.weight,
                            backup: config.backup,
                            failures: stats.failures,
                            checks: stats.checks,
                            checks_failed: stats.checks_failed,
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Occupancy over every pool.
    pub fn pool_totals(&self) -> fcgi_core::PoolStats {
        std::iter::once(&self.pool)
            .chain(self.upstreams.values())
            .map(fcgi_core::Pool::stats)
            .fold(fcgi_core::PoolStats::default(), |sum, s| {
                fcgi_core::PoolStats {
                    open: sum.open + s.open,
                    idle: sum.idle + s.idle,
                    waiting: sum.waiting + s.waiting,
                }
            })
    }
}

/// The pool settings a config asks for.
pub fn pool_config(config: &Config) -> fcgi_core::PoolConfig {
    let fastcgi = &config.fastcgi;
    fcgi_core::PoolConfig {
        client: fcgi_core::ClientConfig {
            connect_timeout: fastcgi.connect_timeout,
            read_timeout: fastcgi.read_timeout,
            max_head_len: fastcgi.max_head_bytes,
            keep_conn: true,
        },
        max_connections: fastcgi.max_connections,
        idle_timeout: fastcgi.idle_timeout,
        queue_timeout: config.server.queue_timeout,
        max_queue: config.server.max_queue,
    }
}

fn same_pool_config(a: &fcgi_core::PoolConfig, b: &fcgi_core::PoolConfig) -> bool {
    a.max_connections == b.max_connections && same_shared_settings(a, b)
}

/// The settings every upstream shares with the `[fastcgi]` pool: all but its bound (each
/// server of an upstream has its own, compared with the servers).
fn same_shared_settings(a: &fcgi_core::PoolConfig, b: &fcgi_core::PoolConfig) -> bool {
    a.idle_timeout == b.idle_timeout
        && a.queue_timeout == b.queue_timeout
        && a.max_queue == b.max_queue
        && a.client.connect_timeout == b.client.connect_timeout
        && a.client.read_timeout == b.client.read_timeout
        && a.client.max_head_len == b.client.max_head_len
        && a.client.keep_conn == b.client.keep_conn
}

/// The FastCGI client's address for the configured upstream.
pub fn upstream_of(config: &Config) -> fcgi_core::Upstream {
    crate::config::upstreams::client_address(&config.fastcgi.upstream)
}

/// The state shared by every request: the current snapshot and the telemetry sinks.
#[derive(Debug)]
pub struct SharedState {
    current: ArcSwap<Snapshot>,
    /// Access log, usage meter and metrics.
    pub telemetry: Arc<Telemetry>,
    /// Certificates in service and ACME challenge answers; outlives snapshots.
    pub tls: Arc<crate::tls::TlsRuntime>,
    /// The response cache's entries; outlive snapshots, and follow each config put in
    /// service (a tenant removed, suspended or changed loses its entries).
    pub cache: Arc<crate::cache::ResponseCache>,
}

impl SharedState {
    /// State serving `snapshot`.
    pub fn new(snapshot: Snapshot, telemetry: Arc<Telemetry>) -> Self {
        let cache = Arc::new(crate::cache::ResponseCache::new(&snapshot.config));
        Self {
            current: ArcSwap::from_pointee(snapshot),
            telemetry,
            tls: Arc::default(),
            cache,
        }
    }

    /// The snapshot to serve a request with.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Puts `snapshot` in service; requests already running keep the one they loaded.
    pub fn swap(&self, snapshot: Snapshot) {
        let next = Arc::new(snapshot);
        let previous = self.current.swap(next.clone());
        self.cache.reconcile(Some(&previous.config), &next.config);
        self.tls.snapshot_swapped();
    }

    /// Builds a snapshot from `config` and swaps it in; on error the old one stays.
    pub fn apply(&self, config: Config) -> Result<Arc<Snapshot>, SnapshotError> {
        let previous = self.current.load();
        let next = Arc::new(Snapshot::build(config, Some(&previous))?);
        self.current.store(next.clone());
        self.cache.reconcile(Some(&previous.config), &next.config);
        self.tls.snapshot_swapped();
        Ok(next)
    }
}
