//! A bounded keep-alive pool of FastCGI connections with fair per-key queues.
//!
//! PHP-FPM gives each connection a worker for as long as it stays open, so the pool never
//! holds more connections than its limit: callers beyond it wait in a queue (bounded, with
//! a timeout) rather than opening more and piling up in PHP-FPM's listen queue. No
//! connection is opened in advance (PHP-FPM drops a connection that sends nothing).
//!
//! A connection goes back to the pool only after a clean END_REQUEST with nothing left
//! unread; a kept connection is checked before reuse (PHP-FPM closes it when it recycles
//! a worker), and an idempotent request that fails on a reused connection before any
//! response byte is sent once more on a fresh one.

use std::sync::Arc;
use std::time::Duration;

use http_body::Body;

use crate::client::connection::{exchange, into_response};
use crate::client::{ClientConfig, Connection, QueueKey, Request, Response};
use crate::error::Error;
use crate::keepalive::{self, Lease, ServerLimits, Settings};
use crate::upstream::{LivenessCheck, Upstream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Per-connection settings (timeouts, head limit, keep-alive).
    pub client: ClientConfig,
    /// Most connections open at once: PHP-FPM's `pm.max_children` or fewer.
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

/// A snapshot of the pool's occupancy, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections counted against the limit (idle, leased and being opened).
    pub open: usize,
    /// Idle connections kept for reuse.
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// A pool of connections to one FastCGI server.
///
/// Cheap to clone (an `Arc`); all clones share the connections.
///
/// Fairness: each request may name a queue key (a tenant) and a cap. When the pool is full,
/// a freed connection goes to the waiting key that holds the fewest connections, so a key
/// flooding slow scripts cannot starve the others.
#[derive(Debug, Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Where each server of `slots` listens, by the index the slots use.
    servers: Vec<Upstream>,
    config: PoolConfig,
    slots: keepalive::Pool<Connection>,
}

impl Pool {
    /// A pool for `upstream`. Opens nothing until the first request. When created inside
    /// a tokio runtime, a background task closes connections idle past `idle_timeout`.
    pub fn new(upstream: Upstream, config: PoolConfig) -> Self {
        let settings = Settings {
            idle_timeout: config.idle_timeout,
            queue_timeout: config.queue_timeout,
            max_queue: config.max_queue,
        };
        let slots = keepalive::Pool::new(&[ServerLimits::new(config.max_connections)], settings);
        Self {
            shared: Arc::new(Shared {
                servers: vec![upstream],
                config,
                slots,
            }),
        }
    }

    /// The server this pool connects to.
    pub fn upstream(&self) -> &Upstream {
        &self.shared.servers[0]
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

    /// Sends a request and returns its response as soon as the CGI head is in.
    ///
    /// Waits in the request's queue when the pool is full. When a reused connection turns
    /// out dead before any response byte and the request is replayable, sends it once more
    /// on a fresh connection.
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
        let mut lease = self.acquire(key, max_concurrency, check).await?;
        let mut stderr = crate::client::stderr::StderrLines::new(stderr);
        let reused = lease.is_reused();
        if replayable && reused {
            // Keep the (empty) body's place: a replay sends the same params with no body.
            match exchange(&mut lease, &params, body, &mut stderr).await {
                Ok((head, decoder)) => return Ok(into_response(lease, head, decoder, stderr)),
                Err(err) if !err.response_started() && (err.is_io() || err.is_protocol()) => {
                    tracing::debug!(upstream = %self.shared.servers[lease.server()], error = %err, "kept connection failed; retrying on a fresh one");
                    self.reconnect(&mut lease).await?;
                    let empty = http_body_util::Empty::<bytes::Bytes>::new();
                    let (head, decoder) = exchange(&mut lease, &params, empty, &mut stderr).await?;
                    return Ok(into_response(lease, head, decoder, stderr));
                }
                Err(err) => return Err(err),
            }
        }
        let (head, decoder) = exchange(&mut lease, &params, body, &mut stderr).await?;
        Ok(into_response(lease, head, decoder, stderr))
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

    /// Opens a new connection on the lease's slot, closing the one it had.
    async fn reconnect(&self, lease: &mut Lease<Connection>) -> Result<(), Error> {
        drop(lease.take());
        let upstream = &self.shared.servers[lease.server()];
        let conn = Connection::connect(upstream, self.shared.config.client.clone()).await?;
        lease.fill(conn, false);
        Ok(())
    }
}
