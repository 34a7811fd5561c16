//! A bounded keep-alive pool of FastCGI connections over one or more servers, with fair
//! per-key queues.
//!
//! PHP-FPM gives each connection a worker for as long as it stays open, so the pool never
//! holds more connections to a server than that server's `max_connections`: callers beyond
//! the bounds wait in a queue (bounded, with a timeout) rather than opening more and piling
//! up in PHP-FPM's listen queue. No connection is opened in advance (PHP-FPM drops a
//! connection that sends nothing).
//!
//! A connection goes back to the pool only after a clean END_REQUEST with nothing left
//! unread; a kept connection is checked before reuse (PHP-FPM closes it when it recycles
//! a worker), and an idempotent request that fails on a reused connection before any
//! response byte is sent once more on a fresh one.
//!
//! With several servers ([`Pool::with_servers`]), a request goes to the healthy server with
//! the fewest connections in use relative to `max_connections` × `weight` (backups only
//! while no primary is healthy); servers are marked down and back up as [`HealthConfig`]
//! says; with all of them down a request fails at once ([`Error::is_all_down`]). A request
//! goes to the next healthy server, once, when nothing of it was sent (the connect
//! failed), or when it is replayable (idempotent, no body) and nothing of the response
//! came back. A request whose body went out is never sent twice.

mod health;
mod servers;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body::Body;

use crate::client::connection::{exchange, into_response};
use crate::client::stderr::StderrLines;
use crate::client::{ClientConfig, Connection, QueueKey, Request, Response};
use crate::error::Error;
use crate::keepalive::{self, Lease, ServerLimits, Settings};
use crate::upstream::{LivenessCheck, Upstream};
use health::ServerHealth;
pub use servers::{HealthConfig, InvalidPool, Ping, ServerConfig, ServerStats};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Per-connection settings (timeouts, head limit, keep-alive).
    pub client: ClientConfig,
    /// Most connections open at once: PHP-FPM's `pm.max_children` or fewer. (A pool made
    /// by [`Pool::with_servers`] takes each server's own bound instead.)
    pub max_connections: usize,
    /// An idle connection is closed after this long, freeing its PHP-FPM worker.
    pub idle_timeout: Duration,
    /// Longest wait in the queue for a connection.
    pub queue_timeout: Duration,
    /// Most callers waiting at once; beyond it a request fails at once as overloaded.
    pub max_queue: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            max_connections: 8,
            idle_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(30),
            max_queue: 4096,
        }
    }
}

/// A snapshot of the pool's occupancy over all its servers, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections counted against the limit (idle, leased and being opened).
    pub open: usize,
    /// Idle connections kept for reuse.
    pub idle: usize,
    /// Callers waiting for a connection (the queue is one per pool, for all its servers).
    pub waiting: usize,
}

/// A pool of connections to one FastCGI server, or to several ([`Pool::with_servers`]).
///
/// Cheap to clone (an `Arc`); all clones share the connections.
///
/// Fairness: each request may name a queue key (a tenant) and a cap. When the pool is full,
/// a freed connection (of any healthy server) goes to the waiting key that holds the
/// fewest connections, so a key flooding slow scripts cannot starve the others.
#[derive(Debug, Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    servers: Vec<ServerConfig>,
    /// Each server's address, shared with its connections and responses.
    addresses: Vec<Arc<Upstream>>,
    config: PoolConfig,
    health: HealthConfig,
    /// Each server's health, by the index the slots use.
    states: Mutex<Vec<ServerHealth>>,
    slots: keepalive::Pool<Connection>,
}

impl Shared {
    fn lock_health(&self) -> MutexGuard<'_, Vec<ServerHealth>> {
        // Counters stay meaningful after a panic elsewhere; poisoning would stop the checks.
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a failed request moves on to another server and marks its own down.
    fn fails_over(&self) -> bool {
        self.servers.len() > 1
    }

    /// A request failed on `server` in a way that says the server is at fault.
    fn failed(&self, server: usize, err: &Error) {
        let marked = self.lock_health()[server].failed_request(self.fails_over());
        if marked {
            let address = &self.addresses[server];
            tracing::warn!(server = %address, error = %err, "FastCGI server marked down");
            self.slots.set_healthy(server, false);
        }
    }
}

/// Whether an error on a connection says its server is at fault: it could not be reached,
/// broke the protocol, or dropped a fresh connection. (A kept connection that turns out
/// closed is PHP-FPM recycling a worker, not a failure.)
fn blames_server(err: &Error, reused: bool) -> bool {
    err.is_connect() || err.is_protocol() || (err.is_io() && !reused)
}

impl Pool {
    /// A pool for `upstream`. Opens nothing until the first request. When created inside
    /// a tokio runtime, a background task closes connections idle past `idle_timeout`.
    pub fn new(upstream: Upstream, config: PoolConfig) -> Self {
        let server = ServerConfig::new(upstream, config.max_connections);
        Self::build(vec![server], config, HealthConfig::default())
    }

    /// A pool over several servers, each with its own bound, weight and backup flag,
    /// checked as `health` says; `config.max_connections` is not used (each server has
    /// its own). Opens nothing until the first request. Created inside a tokio runtime,
    /// it runs the health checks (and the idle reaper) in background tasks that end with
    /// the pool.
    pub fn with_servers(
        servers: Vec<ServerConfig>,
        config: PoolConfig,
        health: HealthConfig,
    ) -> Result<Self, InvalidPool> {
        servers::validate(&servers, &health)?;
        Ok(Self::build(servers, config, health))
    }

    fn build(servers: Vec<ServerConfig>, config: PoolConfig, health: HealthConfig) -> Self {
        let settings = Settings {
            idle_timeout: config.idle_timeout,
            queue_timeout: config.queue_timeout,
            max_queue: config.max_queue,
            mark_on_fault: servers.len() > 1,
        };
        let limits: Vec<ServerLimits> = servers
            .iter()
            .map(|s| ServerLimits {
                max_connections: s.max_connections,
                weight: s.weight,
                backup: s.backup,
            })
            .collect();
        let shared = Arc::new(Shared {
            addresses: servers
                .iter()
                .map(|s| Arc::new(s.address.clone()))
                .collect(),
            states: Mutex::new(servers.iter().map(|_| ServerHealth::new()).collect()),
            slots: keepalive::Pool::new(&limits, settings),
            servers,
            config,
            health,
        });
        let checked = shared.fails_over() || shared.health.ping.is_some();
        if checked {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let interval = shared.health.interval;
                handle.spawn(health::watch(Arc::downgrade(&shared), interval));
            }
        }
        Self { shared }
    }

    /// Takes `previous`'s place after a reload that changed its servers or settings:
    /// the kept connections of every server this pool has too (same address) carry over,
    /// idle ones now and busy ones when their requests end, as far as this pool's bounds
    /// allow; those of servers it no longer has are closed, idle ones now and busy ones
    /// when their requests end. A pool replaced without this closes all of its
    /// connections once the requests still holding it are done.
    pub fn succeed(&self, previous: &Pool) {
        let mut taken = vec![false; self.shared.servers.len()];
        let map = previous
            .shared
            .servers
            .iter()
            .map(|old| {
                let index = self
                    .shared
                    .servers
                    .iter()
                    .enumerate()
                    .position(|(i, new)| !taken[i] && new.address == old.address)?;
                taken[index] = true;
                Some(index)
            })
            .collect();
        self.shared.slots.succeed(&previous.shared.slots, map);
    }

    /// The (first) server this pool connects to.
    pub fn upstream(&self) -> &Upstream {
        &self.shared.servers[0].address
    }

    /// The servers, in the order given.
    pub fn servers(&self) -> &[ServerConfig] {
        &self.shared.servers
    }

    /// How the servers are checked.
    pub fn health(&self) -> &HealthConfig {
        &self.shared.health
    }

    /// The settings.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// Current occupancy.
    pub fn stats(&self) -> PoolStats {
        let (open, idle, waiting) = self.shared.slots.totals();
        PoolStats {
            open,
            idle,
            waiting,
        }
    }

    /// Connections `key` holds now.
    pub fn in_use(&self, key: &str) -> usize {
        self.shared.slots.in_use(key)
    }

    /// Each server's state, in the order given.
    pub fn server_stats(&self) -> Vec<ServerStats> {
        let slots = self.shared.slots.server_stats();
        let health = self.shared.lock_health();
        self.shared
            .servers
            .iter()
            .zip(slots)
            .zip(health.iter())
            .map(|((server, slot), health)| ServerStats {
                address: server.address.clone(),
                healthy: slot.healthy,
                in_use: slot.in_use(),
                idle: slot.idle,
                max_connections: server.max_connections,
                failures: health.failures + slot.faults,
                checks: health.checks,
                checks_failed: health.checks_failed,
            })
            .collect()
    }

    /// Sends a request and returns its response as soon as the CGI head is in.
    ///
    /// Waits in the request's queue when the pool is full. When a reused connection turns
    /// out dead before any response byte and the request is replayable, sends it once more
    /// on a fresh connection. With several servers, goes to the next healthy one once (see
    /// the [module documentation](self)).
    pub async fn send<B>(&self, request: Request<B>) -> Result<Response, Error>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let replayable = request.is_replayable();
        let Request {
            params,
            body,
            queue,
            max_concurrency,
            stderr,
            ..
        } = request;
        let key = queue.unwrap_or_else(keepalive::default_key);
        // A replayable request survives a dead kept connection (it is sent again on a fresh
        // one), so it may skip the liveness system call on reuse; others may not.
        let check = if replayable {
            LivenessCheck::Cheap
        } else {
            LivenessCheck::Thorough
        };
        let mut failover = self.shared.fails_over();
        let mut lease = self
            .connected(&key, max_concurrency, check, &mut failover)
            .await?;
        let mut stderr = StderrLines::new(stderr);
        let mut reused = lease.is_reused();
        let mut err = match exchange(&mut lease, &params, body, &mut stderr).await {
            Ok((head, decoder)) => return Ok(into_response(lease, head, decoder, stderr)),
            Err(err) => err,
        };
        // Each round either returns or uses up a retry: a kept connection is replaced by a
        // fresh one on its server; a fresh one that failed moves on to the next server, once.
        loop {
            let server = lease.server();
            if blames_server(&err, reused) {
                self.shared.failed(server, &err);
            }
            let replay =
                replayable && !err.response_started() && (err.is_io() || err.is_protocol());
            if !replay {
                return Err(err);
            }
            let address = &self.shared.addresses[server];
            if reused {
                tracing::debug!(upstream = %address, error = %err, "kept connection failed; retrying on a fresh one");
                if let Err(err) = self.reconnect(&mut lease).await {
                    if !(err.is_connect() && failover) {
                        return Err(err);
                    }
                    drop(lease);
                    lease = self
                        .connected(&key, max_concurrency, check, &mut failover)
                        .await?;
                }
            } else if failover {
                tracing::debug!(upstream = %address, error = %err, "request failed before its answer; retrying on the next server");
                failover = false;
                drop(lease);
                lease = self
                    .connected(&key, max_concurrency, check, &mut failover)
                    .await?;
            } else {
                return Err(err);
            }
            reused = lease.is_reused();
            // The same params with no body: a replayable request has none.
            let empty = http_body_util::Empty::<bytes::Bytes>::new();
            err = match exchange(&mut lease, &params, empty, &mut stderr).await {
                Ok((head, decoder)) => return Ok(into_response(lease, head, decoder, stderr)),
                Err(err) => err,
            };
        }
    }

    /// A connected lease for `key`; when the connect fails and `failover` is still set,
    /// once more (after the failed server was marked down), clearing `failover`.
    async fn connected(
        &self,
        key: &QueueKey,
        cap: Option<usize>,
        check: LivenessCheck,
        failover: &mut bool,
    ) -> Result<Lease<Connection>, Error> {
        match self.acquire(key.clone(), cap, check).await {
            // Nothing of the request went out: any request may go to the next server.
            Err(err) if err.is_connect() && *failover => {
                *failover = false;
                self.acquire(key.clone(), cap, check).await
            }
            other => other,
        }
    }

    /// Takes a connection for `key`: an idle one that still looks alive, a new one if the
    /// pool has room, or the next one freed, waiting in `key`'s queue.
    async fn acquire(
        &self,
        key: QueueKey,
        cap: Option<usize>,
        check: LivenessCheck,
    ) -> Result<Lease<Connection>, Error> {
        let mut lease = self.shared.slots.acquire(key, cap).await?;
        match lease.take() {
            Some(conn) if conn.is_reusable(check) => lease.fill(conn, true),
            // Dead, stale or never opened: open one on the slot this lease holds.
            _ => self.reconnect(&mut lease).await?,
        }
        Ok(lease)
    }

    /// Opens a new connection on the lease's slot, closing the one it had. A failed
    /// connect counts against the server.
    async fn reconnect(&self, lease: &mut Lease<Connection>) -> Result<(), Error> {
        drop(lease.take());
        let server = lease.server();
        let address = self.shared.addresses[server].clone();
        match Connection::open(address, self.shared.config.client.clone()).await {
            Ok(conn) => {
                lease.fill(conn, false);
                Ok(())
            }
            Err(err) => {
                self.shared.failed(server, &err);
                Err(err)
            }
        }
    }
}
