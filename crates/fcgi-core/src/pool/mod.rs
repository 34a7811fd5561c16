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

mod queue;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http_body::Body;
use tokio::sync::oneshot;

use crate::client::connection::{exchange, into_response, mark_idle};
use crate::client::{ClientConfig, Connection, QueueKey, Request, Response};
use crate::error::{Error, Kind};
use crate::upstream::{LivenessCheck, Upstream};
use queue::FairQueue;

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

/// What a waiter is handed: a connection to reuse, or the right to open one.
// A grant is moved once, through a oneshot, per handoff; boxing the connection would cost
// an allocation each time to save a few hundred bytes that live for microseconds.
#[allow(clippy::large_enum_variant)]
enum Grant {
    Conn(Connection),
    Slot,
}

#[derive(Debug)]
struct State {
    /// Idle connections, most recently used last (reused first, so the rest age out).
    idle: Vec<Connection>,
    /// Connections counted against the limit.
    open: usize,
    queue: FairQueue<oneshot::Sender<Grant>>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Grant::Conn(_) => "Grant::Conn",
            Grant::Slot => "Grant::Slot",
        })
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    upstream: Upstream,
    config: PoolConfig,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves counts that are still consistent enough to
        // go on; poisoning would turn one bug into a dead gateway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes back a lease's slot, with its connection when it is clean, and hands it to
    /// the next fair waiter.
    fn release(&self, key: &str, conn: Option<Connection>) {
        let mut state = self.lock();
        state.queue.released(key);
        let mut grant = match conn {
            Some(conn) => Grant::Conn(conn),
            None => Grant::Slot,
        };
        while let Some((next_key, waiter)) = state.queue.pop_next() {
            match waiter.send(grant) {
                Ok(()) => return,
                Err(back) => {
                    // Defensive: a waiter leaves the queue before it drops its receiver.
                    state.queue.released(&next_key);
                    grant = back;
                }
            }
        }
        match grant {
            Grant::Conn(conn) => state.idle.push(conn),
            Grant::Slot => state.open -= 1,
        }
    }
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

/// The queue used by requests that name none.
fn default_key() -> QueueKey {
    static KEY: std::sync::OnceLock<QueueKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| QueueKey::from("")).clone()
}

impl Pool {
    /// A pool for `upstream`. Opens nothing until the first request. When created inside
    /// a tokio runtime, a background task closes connections idle past `idle_timeout`.
    pub fn new(upstream: Upstream, config: PoolConfig) -> Self {
        let queue = FairQueue::new(config.max_connections);
        let shared = Arc::new(Shared {
            upstream,
            config,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                queue,
            }),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(reap_idle(Arc::downgrade(&shared)));
        }
        Self { shared }
    }

    /// The server this pool connects to.
    pub fn upstream(&self) -> &Upstream {
        &self.shared.upstream
    }

    /// The settings.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// Current occupancy.
    pub fn stats(&self) -> PoolStats {
        let state = self.shared.lock();
        PoolStats {
            open: state.open,
            idle: state.idle.len(),
            waiting: state.queue.waiting(),
        }
    }

    /// Connections `key` holds now.
    pub fn in_use(&self, key: &str) -> usize {
        self.shared.lock().queue.in_use(key)
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
        let key = queue.unwrap_or_else(default_key);
        // A replayable request survives a dead kept connection (it is sent again on a fresh
        // one), so it may skip the liveness system call on reuse; others may not.
        let check = if replayable {
            LivenessCheck::Cheap
        } else {
            LivenessCheck::Thorough
        };
        let mut lease = self.acquire(key, max_concurrency, check).await?;
        let mut stderr = crate::client::stderr::StderrLines::new(stderr);
        let reused = lease.conn_mut().completed > 0;
        if replayable && reused {
            // Keep the (empty) body's place: a replay sends the same params with no body.
            match exchange(&mut lease, &params, body, &mut stderr).await {
                Ok((head, decoder)) => return Ok(into_response(lease, head, decoder, stderr)),
                Err(err) if !err.response_started() && (err.is_io() || err.is_protocol()) => {
                    tracing::debug!(upstream = %self.shared.upstream, error = %err, "kept connection failed; retrying on a fresh one");
                    lease.reconnect(&self.shared).await?;
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
    ) -> Result<Lease, Error> {
        let shared = &self.shared;
        let config = &shared.config;
        let (grant, waiter) = {
            let mut state = shared.lock();
            // Waiters of other keys never stand in the way here: whenever a connection is
            // free, `release` has already handed it to every waiter that may take one, so
            // any still waiting are held back by their own key's cap.
            let free = !state.idle.is_empty() || state.open < config.max_connections;
            if free && state.queue.try_acquire(&key, cap) {
                if let Some(conn) = state.idle.pop() {
                    (Some(Grant::Conn(conn)), None)
                } else {
                    state.open += 1;
                    (Some(Grant::Slot), None)
                }
            } else {
                (None, Some(Self::enqueue(&mut state, &key, cap, config)?))
            }
        };
        let grant = match (grant, waiter) {
            (Some(grant), _) => grant,
            (None, Some((id, rx))) => {
                let mut place = QueuePlace {
                    shared,
                    key: &key,
                    id,
                    rx: Some(rx),
                };
                match place.wait(config.queue_timeout).await {
                    Some(grant) => grant,
                    None => return Err(Error::new(Kind::QueueTimeout(config.queue_timeout))),
                }
            }
            (None, None) => return Err(Error::new(Kind::QueueTimeout(config.queue_timeout))),
        };
        let mut lease = Lease {
            conn: None,
            pool: Some(shared.clone()),
            key,
            reusable: false,
        };
        match grant {
            Grant::Conn(conn) if !idle_expired(&conn, config) && conn.is_reusable(check) => {
                lease.conn = Some(conn);
            }
            // Dead, stale or never opened: open one on the slot this lease holds.
            Grant::Conn(_) | Grant::Slot => lease.reconnect(shared).await?,
        }
        Ok(lease)
    }

    fn enqueue(
        state: &mut State,
        key: &QueueKey,
        cap: Option<usize>,
        config: &PoolConfig,
    ) -> Result<(u64, oneshot::Receiver<Grant>), Error> {
        if state.queue.waiting() >= config.max_queue {
            return Err(Error::new(Kind::QueueFull(config.max_queue)));
        }
        let (tx, rx) = oneshot::channel();
        let id = state.queue.push(key, cap, tx);
        Ok((id, rx))
    }
}

/// A caller's place in the queue, until it is served.
///
/// Dropped unserved (the wait timed out, or the caller dropped its request future), it
/// leaves the queue. Dropped just after being served, before it could take what it was
/// handed, it passes that on: a cancelled wait never leaks a connection or a slot.
struct QueuePlace<'a> {
    shared: &'a Shared,
    key: &'a QueueKey,
    id: u64,
    /// `None` once the grant was taken or the place left the queue.
    rx: Option<oneshot::Receiver<Grant>>,
}

impl QueuePlace<'_> {
    /// Waits to be served for up to `timeout`; `None` when it was not.
    async fn wait(&mut self, timeout: Duration) -> Option<Grant> {
        let rx = self.rx.as_mut()?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(grant)) => {
                self.rx = None;
                Some(grant)
            }
            // Timed out. (The sender is only dropped unsent when the pool itself is gone.)
            _ => self.leave(),
        }
    }

    /// Leaves the queue; returns what it was handed if it was served meanwhile.
    fn leave(&mut self) -> Option<Grant> {
        let mut rx = self.rx.take()?;
        let removed = self.shared.lock().queue.remove(self.key, self.id).is_some();
        if removed {
            return None;
        }
        // Not in the queue any more: `release` popped it and sent the grant under the
        // lock just taken, so the grant is in the channel.
        rx.try_recv().ok()
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        if let Some(grant) = self.leave() {
            let conn = match grant {
                Grant::Conn(conn) => Some(conn),
                Grant::Slot => None,
            };
            self.shared.release(self.key, conn);
        }
    }
}

fn idle_expired(conn: &Connection, config: &PoolConfig) -> bool {
    conn.idle_since.elapsed() >= config.idle_timeout
}

/// Closes connections idle past the idle timeout, until the pool is dropped.
async fn reap_idle(shared: Weak<Shared>) {
    let period = match shared.upgrade() {
        Some(s) => {
            (s.config.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(5))
        }
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let expired: Vec<Connection> = {
            let mut state = shared.lock();
            let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut state.idle)
                .into_iter()
                .partition(|c| idle_expired(c, &shared.config));
            state.idle = kept;
            state.open -= expired.len();
            expired
        };
        // Closing the sockets happens here, outside the lock.
        drop(expired);
    }
}

/// The right to one connection slot of a pool, with the connection on it.
///
/// Dropping it gives the slot back; the connection goes with it only when
/// [`Lease::finish`] marked it clean.
#[derive(Debug)]
pub(crate) struct Lease {
    conn: Option<Connection>,
    pool: Option<Arc<Shared>>,
    key: QueueKey,
    reusable: bool,
}

impl Lease {
    /// A lease on a connection that belongs to no pool.
    pub(crate) fn unpooled(conn: Connection) -> Self {
        Self {
            conn: Some(conn),
            pool: None,
            key: default_key(),
            reusable: false,
        }
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        // Every lease handed out carries a connection: `acquire` and `reconnect` put one in
        // before the lease leaves them, and only `drop` takes it out.
        match self.conn.as_mut() {
            Some(conn) => conn,
            None => unreachable!("lease without a connection"),
        }
    }

    /// Replaces the connection with a new one, keeping the slot.
    async fn reconnect(&mut self, shared: &Shared) -> Result<(), Error> {
        self.conn = None;
        self.conn =
            Some(Connection::connect(&shared.upstream, shared.config.client.clone()).await?);
        Ok(())
    }

    /// The request ended cleanly: the connection may be reused if it still looks clean.
    pub(crate) fn finish(&mut self) {
        self.reusable = self
            .conn
            .as_ref()
            .is_some_and(|c| c.config.keep_conn && !c.eof && c.read_buf.is_empty());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        let conn = if self.reusable {
            self.conn.take().map(|mut c| {
                mark_idle(&mut c);
                c
            })
        } else {
            None
        };
        pool.release(&self.key, conn);
    }
}
