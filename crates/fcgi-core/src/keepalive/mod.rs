//! A bounded keep-alive pool, generic over what it pools (connections in the crate, `i32`
//! in its tests): slots bounded per server, fair per-key queues for the callers beyond the
//! bounds, idle values kept for reuse and closed after a timeout.
//!
//! It opens nothing itself. [`Pool::acquire`] hands out a [`Lease`] on a slot of one
//! server, holding a kept value or empty; the caller checks a kept value and fills an
//! empty slot with a new one. The lease goes back through [`Recycle`], which the pool
//! implements, so whoever holds a lease never names the pool.
//!
//! A pool has one or more servers ([`ServerLimits`]): each has its own bound, and one fair
//! queue serves them all, handing a freed slot of any healthy server to the waiting key
//! that holds the fewest (see [`queue`]). A server marked down takes no new requests and
//! its idle values are closed; with every server down, acquiring fails at once.

mod lease;
mod queue;
mod server;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{Error, Kind};
pub(crate) use lease::{Lease, Poolable, Recycle};
use queue::FairQueue;
pub use server::ServerLimits;
use server::{choose, Choice, Idle, Server};

/// The name of a fair queue in the pool (a tenant, typically).
pub type QueueKey = Arc<str>;

/// The queue used by callers that name none.
pub(crate) fn default_key() -> QueueKey {
    static KEY: std::sync::OnceLock<QueueKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| QueueKey::from("")).clone()
}

/// The pool's waiting rules and idle timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// An idle value is closed after this long.
    pub(crate) idle_timeout: Duration,
    /// Longest wait in the queue.
    pub(crate) queue_timeout: Duration,
    /// Most callers waiting at once.
    pub(crate) max_queue: usize,
    /// Whether a protocol fault on a slot marks its server down at once (with several
    /// servers; a lone server has nowhere else to send requests).
    pub(crate) mark_on_fault: bool,
}

/// One server's occupancy, as [`Pool::server_stats`] reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SlotStats {
    pub(crate) healthy: bool,
    /// Slots counted against the bound: idle, leased and being opened.
    pub(crate) open: usize,
    pub(crate) idle: usize,
    pub(crate) max: usize,
    /// Values given back clean since the pool began: requests that completed.
    pub(crate) completed: u64,
    /// Slots given back with a protocol fault since the pool began.
    pub(crate) faults: u64,
}

impl SlotStats {
    /// Slots leased or being opened.
    pub(crate) fn in_use(&self) -> usize {
        self.open - self.idle
    }

    /// Whether a new request could take a slot of this server now.
    pub(crate) fn has_room(&self) -> bool {
        self.idle > 0 || self.open < self.max
    }
}

/// What a waiter is handed.
enum Grant<T> {
    /// A kept value of this server.
    Kept(usize, Idle<T>),
    /// The right to open one on this server.
    Slot(usize),
    /// Every server went down while it waited.
    Down,
}

struct State<T> {
    servers: Vec<Server<T>>,
    queue: FairQueue<oneshot::Sender<Grant<T>>>,
    /// Set when a newer pool took this one's place (a reload): values given back clean
    /// go on to it, to the server with the same index in `successor_servers`.
    successor: Option<Successor<T>>,
}

/// The pool that replaced this one, and which of its servers each of ours is.
struct Successor<T> {
    pool: Weak<Shared<T>>,
    /// Our server index → the successor's, for the servers it kept.
    servers: Vec<Option<usize>>,
}

impl<T> State<T> {
    /// Takes a slot on `server`: its most recently kept value, or room for a new one.
    fn take(&mut self, server: usize) -> Grant<T> {
        let s = &mut self.servers[server];
        s.picked += 1;
        match s.idle.pop() {
            Some(idle) => Grant::Kept(server, idle),
            None => {
                s.open += 1;
                Grant::Slot(server)
            }
        }
    }

    /// Undoes a `take` whose waiter was gone.
    fn untake(&mut self, grant: Grant<T>) {
        match grant {
            Grant::Kept(server, idle) => self.servers[server].idle.push(idle),
            Grant::Slot(server) => self.servers[server].open -= 1,
            Grant::Down => {}
        }
    }

    /// Marks `server` up or down (see [`Pool::set_healthy`]); returns the idle values to
    /// close once the lock is released.
    fn mark(&mut self, server: usize, healthy: bool) -> Vec<Idle<T>> {
        let Some(s) = self.servers.get_mut(server) else {
            return Vec::new();
        };
        s.healthy = healthy;
        let closed = if healthy {
            Vec::new()
        } else {
            let closed = std::mem::take(&mut s.idle);
            s.open -= closed.len();
            closed
        };
        self.refresh_capacity();
        self.dispatch();
        closed
    }

    /// Sets the fair queue's capacity to the bounds of the servers in use: the healthy
    /// primaries, or the healthy backups while no primary is.
    fn refresh_capacity(&mut self) {
        self.queue
            .set_capacity(server::serving_capacity(&self.servers));
    }

    /// Hands free slots to waiters, fairest first, while both last; with every server
    /// down, tells every waiter so.
    fn dispatch(&mut self) {
        loop {
            let server = match choose(&self.servers) {
                Choice::Server(server) => server,
                Choice::Full => return,
                Choice::Down => {
                    for (_, waiter) in self.queue.drain() {
                        // A waiter gone meanwhile needs no telling.
                        let _ = waiter.send(Grant::Down);
                    }
                    return;
                }
            };
            let Some((key, waiter)) = self.queue.pop_next() else {
                return;
            };
            let grant = self.take(server);
            if let Err(grant) = waiter.send(grant) {
                // Defensive: a waiter leaves the queue before it drops its receiver.
                self.queue.released(&key);
                self.untake(grant);
            }
        }
    }
}

struct Shared<T> {
    settings: Settings,
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves counts that are still consistent enough to
        // go on; poisoning would turn one bug into a dead gateway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Shared<T> {
    /// Takes in values of `server` from the pool this one replaced, as far as the
    /// server's bound allows (the rest close), and hands them to waiters.
    fn adopt(&self, server: usize, values: Vec<Idle<T>>) {
        let mut state = self.lock();
        let mut surplus = Vec::new();
        match state.servers.get_mut(server) {
            Some(s) => {
                for idle in values {
                    if s.healthy && s.open < s.limits.max_connections {
                        s.open += 1;
                        // Older than this pool's own idle values: reused last.
                        s.idle.insert(0, idle);
                    } else {
                        surplus.push(idle);
                    }
                }
            }
            None => surplus = values,
        }
        state.dispatch();
        drop(state);
        drop(surplus);
    }

    /// Gives back a grant its waiter could not take, as it was.
    fn give_back(&self, key: &QueueKey, grant: Grant<T>) {
        let mut state = self.lock();
        state.queue.released(key);
        state.untake(grant);
        state.dispatch();
    }
}

impl<T: Poolable> Recycle<T> for Shared<T> {
    fn recycle(&self, key: &QueueKey, server: usize, value: Option<T>, faulted: bool) {
        let mut state = self.lock();
        state.queue.released(key);
        let s = &mut state.servers[server];
        s.completed += u64::from(value.is_some());
        s.faults += u64::from(faulted);
        let mut closed = Vec::new();
        if faulted && s.healthy && self.settings.mark_on_fault {
            closed = state.mark(server, false);
        }
        // Replaced by a reload: a value goes on to the new pool when its server is still
        // there, and closes when it is not; this pool's slot is free either way.
        let successor = state.successor.as_ref().map(|next| {
            let index = next.servers.get(server).copied().flatten()?;
            Some((next.pool.upgrade()?, index))
        });
        let s = &mut state.servers[server];
        let (surplus, handover) = match (value, successor) {
            (Some(value), Some(Some(next))) => {
                s.open -= 1;
                (None, Some((next, value)))
            }
            (Some(value), None) if s.healthy => {
                s.idle.push(Idle {
                    value,
                    since: Instant::now(),
                });
                (None, None)
            }
            (other, _) => {
                s.open -= 1;
                (other, None)
            }
        };
        state.dispatch();
        drop(state);
        if let Some(((next, index), value)) = handover {
            let idle = Idle {
                value,
                since: Instant::now(),
            };
            next.adopt(index, vec![idle]);
        }
        drop(surplus);
        drop(closed);
    }
}

/// A bounded keep-alive pool of `T` over one or more servers. Cheap to clone.
pub(crate) struct Pool<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl<T: Poolable> Pool<T> {
    /// A pool over `servers` (one [`ServerLimits`] each, indexed as given). When created
    /// inside a tokio runtime, a background task closes values idle past the timeout.
    pub(crate) fn new(servers: &[ServerLimits], settings: Settings) -> Self {
        let servers: Vec<_> = servers.iter().copied().map(Server::new).collect();
        let capacity = server::serving_capacity(&servers);
        let shared = Arc::new(Shared {
            settings,
            state: Mutex::new(State {
                servers,
                queue: FairQueue::new(capacity),
                successor: None,
            }),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(reap_idle(Arc::downgrade(&shared)));
        }
        Self { shared }
    }

    /// Takes a slot for `key`: on the least loaded healthy server with room (with its kept
    /// value if it has one still fresh), or the next one freed, waiting in `key`'s queue.
    pub(crate) async fn acquire(
        &self,
        key: QueueKey,
        cap: Option<usize>,
    ) -> Result<Lease<T>, Error> {
        let shared = &self.shared;
        let settings = &shared.settings;
        let grant = {
            let mut state = shared.lock();
            // Waiters of other keys never stand in the way here: whenever a slot is free,
            // `dispatch` has already handed it to every waiter that may take one, so any
            // still waiting are held back by their own key's cap or share.
            match choose(&state.servers) {
                Choice::Down => return Err(Error::new(Kind::AllDown)),
                Choice::Server(server) if state.queue.try_acquire(&key, cap) => {
                    Ok(state.take(server))
                }
                _ => {
                    if state.queue.waiting() >= settings.max_queue {
                        return Err(Error::new(Kind::QueueFull(settings.max_queue)));
                    }
                    let (tx, rx) = oneshot::channel();
                    let id = state.queue.push(&key, cap, tx);
                    Err((id, rx))
                }
            }
        };
        let grant = match grant {
            Ok(grant) => grant,
            Err((id, rx)) => {
                let mut place = QueuePlace {
                    shared,
                    key: &key,
                    id,
                    rx: Some(rx),
                };
                match place.wait(settings.queue_timeout).await {
                    Some(grant) => grant,
                    None => return Err(Error::new(Kind::QueueTimeout(settings.queue_timeout))),
                }
            }
        };
        let home: Arc<dyn Recycle<T>> = shared.clone();
        match grant {
            Grant::Kept(server, idle) => {
                let fresh = idle.since.elapsed() < settings.idle_timeout;
                // A stale value is closed here; its slot stays this lease's, to fill anew.
                let value = fresh.then_some(idle.value);
                Ok(Lease::new(home, key, server, value))
            }
            Grant::Slot(server) => Ok(Lease::new(home, key, server, None)),
            Grant::Down => Err(Error::new(Kind::AllDown)),
        }
    }

    /// Takes `previous`'s place (a reload that changed its servers): `map` gives, for each
    /// of `previous`'s servers, its index here if this pool has it too. The idle values of
    /// those servers move here now, and their leased ones when they are given back (as
    /// far as this pool's bounds allow); the values of servers this pool does not have
    /// close (idle ones now, leased ones when their requests end).
    pub(crate) fn succeed(&self, previous: &Pool<T>, map: Vec<Option<usize>>) {
        if Arc::ptr_eq(&self.shared, &previous.shared) {
            return;
        }
        let mut moved = Vec::new();
        let mut closed = Vec::new();
        {
            let mut old = previous.shared.lock();
            for (index, s) in old.servers.iter_mut().enumerate() {
                let idle = std::mem::take(&mut s.idle);
                s.open -= idle.len();
                match map.get(index).copied().flatten() {
                    Some(ours) => moved.push((ours, idle)),
                    None => closed.extend(idle),
                }
            }
            old.successor = Some(Successor {
                pool: Arc::downgrade(&self.shared),
                servers: map,
            });
            old.dispatch();
        }
        for (server, idle) in moved {
            self.shared.adopt(server, idle);
        }
        drop(closed);
    }

    /// Marks `server` up or down. Down, it takes no new request and its idle values are
    /// closed (leased ones are not kept when they come back); when no server is left,
    /// every waiter fails at once. Up, waiters may be served by it at once.
    pub(crate) fn set_healthy(&self, server: usize, healthy: bool) {
        let mut state = self.shared.lock();
        let closed = state.mark(server, healthy);
        drop(state);
        drop(closed);
    }

    /// Each server's occupancy, in the order given to [`Pool::new`].
    pub(crate) fn server_stats(&self) -> Vec<SlotStats> {
        let state = self.shared.lock();
        state
            .servers
            .iter()
            .map(|s| SlotStats {
                healthy: s.healthy,
                open: s.open,
                idle: s.idle.len(),
                max: s.limits.max_connections,
                completed: s.completed,
                faults: s.faults,
            })
            .collect()
    }

    /// Slots counted against the bounds, idle values and waiters, over all servers.
    pub(crate) fn totals(&self) -> (usize, usize, usize) {
        let state = self.shared.lock();
        let open = state.servers.iter().map(|s| s.open).sum();
        let idle = state.servers.iter().map(|s| s.idle.len()).sum();
        (open, idle, state.queue.waiting())
    }

    /// Slots `key` holds now.
    pub(crate) fn in_use(&self, key: &str) -> usize {
        self.shared.lock().queue.in_use(key)
    }
}

/// A caller's place in the queue, until it is served.
///
/// Dropped unserved (the wait timed out, or the caller dropped its request future), it
/// leaves the queue. Dropped just after being served, before it could take what it was
/// handed, it passes that on: a cancelled wait never leaks a value or a slot.
struct QueuePlace<'a, T: Poolable> {
    shared: &'a Shared<T>,
    key: &'a QueueKey,
    id: u64,
    /// `None` once the grant was taken or the place left the queue.
    rx: Option<oneshot::Receiver<Grant<T>>>,
}

impl<T: Poolable> QueuePlace<'_, T> {
    /// Waits to be served for up to `timeout`; `None` when it was not.
    async fn wait(&mut self, timeout: Duration) -> Option<Grant<T>> {
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
    fn leave(&mut self) -> Option<Grant<T>> {
        let mut rx = self.rx.take()?;
        let removed = self.shared.lock().queue.remove(self.key, self.id).is_some();
        if removed {
            return None;
        }
        // Not in the queue any more: `dispatch` popped it and sent the grant under the
        // lock just taken, so the grant is in the channel.
        rx.try_recv().ok()
    }
}

impl<T: Poolable> Drop for QueuePlace<'_, T> {
    fn drop(&mut self) {
        match self.leave() {
            Some(Grant::Down) | None => {}
            Some(grant) => self.shared.give_back(self.key, grant),
        }
    }
}

/// Closes values idle past the idle timeout, until the pool is dropped.
async fn reap_idle<T>(shared: Weak<Shared<T>>) {
    let period = match shared.upgrade() {
        Some(s) => {
            (s.settings.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(5))
        }
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let timeout = shared.settings.idle_timeout;
        let mut expired = Vec::new();
        {
            let mut state = shared.lock();
            for server in &mut state.servers {
                let before = server.idle.len();
                let (old, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut server.idle)
                    .into_iter()
                    .partition(|idle| idle.since.elapsed() >= timeout);
                server.idle = kept;
                server.open -= before - server.idle.len();
                expired.extend(old);
            }
        }
        // Closing happens here, outside the lock.
        drop(expired);
    }
}

#[cfg(test)]
mod tests;
