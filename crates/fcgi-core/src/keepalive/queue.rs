//! The pool's waiting room: one FIFO queue per key (tenant), served fairly.
//!
//! When a connection frees up it goes to the waiting key that holds the fewest
//! connections (ties go round-robin). That shares PHP-FPM's workers by concurrency, not by
//! request count: a tenant flooding a slow script cannot take every worker while another
//! tenant waits, because each free worker goes to whoever holds fewer. A key may also be
//! capped (`max_concurrency`), and then waits even when workers are free.
//!
//! Choosing the neediest waiter is not enough on its own: a tenant whose requests take
//! microseconds often has no waiter at the instant a worker frees up, and a flooding
//! tenant's 50 ms request then takes that worker. Over a few cycles the flood holds every
//! worker. So while several keys are active (holding or waiting for a connection, or
//! having done so within [`ACTIVE_GRACE`]), no key may hold more than its fair share,
//! `capacity / active keys` rounded up. A worker may then stay free for a moment, which
//! is the price of a latency bound for the quiet tenant.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

use super::QueueKey;

/// How long a key counts as active after its last connection went back.
pub(crate) const ACTIVE_GRACE: Duration = Duration::from_millis(100);

/// Per-key accounting.
#[derive(Debug)]
struct KeyState<W> {
    /// Waiters in arrival order.
    waiters: VecDeque<(u64, W)>,
    /// Connections this key holds now (leased or being opened).
    in_use: usize,
    /// The key's cap, as its latest waiter or lease gave it.
    cap: Option<usize>,
    /// When the key last took, returned or asked for a connection.
    last_active: Instant,
}

impl<W> KeyState<W> {
    fn new(cap: Option<usize>, now: Instant) -> Self {
        Self {
            waiters: VecDeque::new(),
            in_use: 0,
            cap,
            last_active: now,
        }
    }

    fn is_active(&self, now: Instant) -> bool {
        self.in_use > 0
            || !self.waiters.is_empty()
            || now.saturating_duration_since(self.last_active) < ACTIVE_GRACE
    }

    /// The most connections this key may hold: its own cap and the fair share.
    fn limit(&self, share: usize) -> usize {
        limit(self.cap, share)
    }
}

/// Queues of waiters `W` per key, with fair selection.
#[derive(Debug)]
pub(crate) struct FairQueue<W> {
    /// The pool's connection limit, which fair shares divide.
    capacity: usize,
    /// Keys that are active or were within the grace period.
    keys: HashMap<QueueKey, KeyState<W>, RandomState>,
    /// Keys that have waiters, in round-robin order.
    ring: VecDeque<QueueKey>,
    waiting: usize,
    next_id: u64,
}

impl<W> FairQueue<W> {
    /// An empty queue for a pool of `capacity` connections.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            keys: HashMap::default(),
            ring: VecDeque::new(),
            waiting: 0,
            next_id: 0,
        }
    }

    /// Changes the limit fair shares divide (servers went up or down).
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// Forgets keys idle past the grace period.
    fn forget_idle(&mut self, now: Instant) {
        self.keys.retain(|_, state| state.is_active(now));
    }

    /// The fair share of each active key, forgetting keys idle past the grace period.
    fn share(&mut self, now: Instant) -> usize {
        self.forget_idle(now);
        fair_share(self.capacity, self.keys.len())
    }

    /// Number of waiters across all keys.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Connections `key` holds now.
    pub(crate) fn in_use(&self, key: &str) -> usize {
        self.keys.get(key).map_or(0, |k| k.in_use)
    }

    /// Whether `key` may take a connection now without jumping its own queue, its cap or
    /// its fair share.
    #[cfg(test)]
    fn may_take(&mut self, key: &str, cap: Option<usize>) -> bool {
        let now = Instant::now();
        self.forget_idle(now);
        let known = self.keys.len();
        admits(self.capacity, known, self.keys.get(key), cap)
    }

    /// Takes a connection for `key` if it may have one now without jumping its own queue,
    /// its cap or its fair share, and counts it as held; one lookup of `key`.
    pub(crate) fn try_acquire(&mut self, key: &QueueKey, cap: Option<usize>) -> bool {
        let now = Instant::now();
        self.forget_idle(now);
        let (capacity, known) = (self.capacity, self.keys.len());
        let state = self.keys.get_mut(&**key);
        if !admits(capacity, known, state.as_deref(), cap) {
            return false;
        }
        match state {
            Some(state) => {
                state.in_use += 1;
                state.cap = cap;
                state.last_active = now;
            }
            None => {
                let mut state = KeyState::new(cap, now);
                state.in_use = 1;
                self.keys.insert(key.clone(), state);
            }
        }
        true
    }

    /// Records that `key` took a connection, whatever its share.
    #[cfg(test)]
    fn acquired(&mut self, key: &QueueKey, cap: Option<usize>) {
        let now = Instant::now();
        let state = self
            .keys
            .entry(key.clone())
            .or_insert_with(|| KeyState::new(cap, now));
        state.in_use += 1;
        state.cap = cap;
        state.last_active = now;
    }

    /// Records that `key` gave a connection back. The key stays known for the grace
    /// period, so a tenant between two quick requests keeps its share.
    pub(crate) fn released(&mut self, key: &str) {
        if let Some(state) = self.keys.get_mut(key) {
            state.in_use = state.in_use.saturating_sub(1);
            state.last_active = Instant::now();
        }
    }

    /// Queues a waiter for `key`; returns its id for [`FairQueue::remove`].
    pub(crate) fn push(&mut self, key: &QueueKey, cap: Option<usize>, waiter: W) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let now = Instant::now();
        let state = self
            .keys
            .entry(key.clone())
            .or_insert_with(|| KeyState::new(cap, now));
        state.cap = cap;
        state.last_active = now;
        if state.waiters.is_empty() {
            self.ring.push_back(key.clone());
        }
        state.waiters.push_back((id, waiter));
        self.waiting += 1;
        id
    }

    /// Removes a waiter that gave up. Returns it if it was still queued.
    pub(crate) fn remove(&mut self, key: &str, id: u64) -> Option<W> {
        let state = self.keys.get_mut(key)?;
        let pos = state.waiters.iter().position(|(i, _)| *i == id)?;
        let (_, waiter) = state.waiters.remove(pos)?;
        self.waiting -= 1;
        if state.waiters.is_empty() {
            self.ring.retain(|k| &**k != key);
        }
        Some(waiter)
    }

    /// Picks the next waiter to get a connection: among keys under their cap and fair
    /// share, the one holding the fewest connections, earliest in the ring on a tie.
    /// Counts the connection as acquired by that key.
    pub(crate) fn pop_next(&mut self) -> Option<(QueueKey, W)> {
        if self.ring.is_empty() {
            return None;
        }
        let now = Instant::now();
        let share = self.share(now);
        let mut best: Option<(usize, usize)> = None; // (ring index, in_use)
        for (index, key) in self.ring.iter().enumerate() {
            let Some(state) = self.keys.get(key) else {
                continue;
            };
            if state.in_use >= state.limit(share) {
                continue;
            }
            if best.is_none_or(|(_, in_use)| state.in_use < in_use) {
                best = Some((index, state.in_use));
            }
        }
        let (index, _) = best?;
        let key = self.ring.remove(index)?;
        let state = self.keys.get_mut(&key)?;
        let (_, waiter) = state.waiters.pop_front()?;
        self.waiting -= 1;
        state.in_use += 1;
        state.last_active = now;
        if !state.waiters.is_empty() {
            self.ring.push_back(key.clone());
        }
        Some((key, waiter))
    }
}

impl<W> FairQueue<W> {
    /// Takes every waiter out, whatever its key's share (to tell them all the pool cannot
    /// serve them). Counts nothing as acquired.
    pub(crate) fn drain(&mut self) -> Vec<(QueueKey, W)> {
        let mut out = Vec::with_capacity(self.waiting);
        for key in std::mem::take(&mut self.ring) {
            if let Some(state) = self.keys.get_mut(&key) {
                out.extend(state.waiters.drain(..).map(|(_, w)| (key.clone(), w)));
            }
        }
        self.waiting = 0;
        out
    }
}

/// Each of `active` keys' share of `capacity` connections.
fn fair_share(capacity: usize, active: usize) -> usize {
    capacity.div_ceil(active.max(1))
}

/// Whether a key may take a connection now: it has no waiter of its own ahead, and holds
/// less than its cap and its fair share. `state` is `None` for a key not known yet, which
/// then makes one more active key than the `known` ones.
fn admits<W>(
    capacity: usize,
    known: usize,
    state: Option<&KeyState<W>>,
    cap: Option<usize>,
) -> bool {
    let active = known + usize::from(state.is_none());
    let limit = limit(cap, fair_share(capacity, active));
    match state {
        None => limit > 0,
        Some(state) => state.waiters.is_empty() && state.in_use < limit,
    }
}

/// The most connections a key may hold: its cap, if any, and its fair share.
fn limit(cap: Option<usize>, share: usize) -> usize {
    cap.map_or(share, |cap| cap.min(share))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> QueueKey {
        QueueKey::from(name)
    }

    #[test]
    fn a_free_connection_goes_to_the_key_holding_fewer() {
        let mut queue = FairQueue::new(16);
        let (a, b) = (key("a"), key("b"));
        for _ in 0..3 {
            queue.acquired(&a, None);
        }
        for i in 0..10 {
            queue.push(&a, None, format!("a{i}"));
        }
        queue.push(&b, None, "b0".to_string());
        queue.push(&b, None, "b1".to_string());
        let (k, w) = queue.pop_next().unwrap();
        assert_eq!((&*k, w.as_str()), ("b", "b0"));
        // b holds 1, a holds 3: b again.
        let (k, _) = queue.pop_next().unwrap();
        assert_eq!(&*k, "b");
        // b has no waiters left: a.
        let (k, w) = queue.pop_next().unwrap();
        assert_eq!((&*k, w.as_str()), ("a", "a0"));
    }

    #[test]
    fn ties_go_round_robin() {
        let mut queue = FairQueue::new(16);
        for name in ["a", "b", "c"] {
            for i in 0..3 {
                queue.push(&key(name), None, format!("{name}{i}"));
            }
        }
        let mut order = Vec::new();
        while let Some((k, _)) = queue.pop_next() {
            order.push(k.to_string());
            // Each served request finishes at once.
            queue.released(&k);
        }
        assert_eq!(order, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn a_capped_key_waits_even_when_first_in_line() {
        let mut queue = FairQueue::new(16);
        let (a, b) = (key("a"), key("b"));
        queue.acquired(&a, Some(1));
        queue.push(&a, Some(1), "a0");
        queue.push(&b, None, "b0");
        assert!(!queue.may_take("a", Some(1)));
        assert_eq!(queue.pop_next().map(|(_, w)| w), Some("b0"));
        assert_eq!(queue.pop_next().map(|(_, w)| w), None);
        queue.released("a");
        assert_eq!(queue.pop_next().map(|(_, w)| w), Some("a0"));
    }

    #[test]
    fn a_removed_waiter_is_not_served_and_state_is_dropped_after_the_grace() {
        let mut queue = FairQueue::new(16);
        let a = key("a");
        let id = queue.push(&a, None, "a0");
        assert_eq!(queue.waiting(), 1);
        assert_eq!(queue.remove("a", id), Some("a0"));
        assert_eq!(queue.waiting(), 0);
        assert!(queue.pop_next().is_none());
        assert!(queue.ring.is_empty());
        std::thread::sleep(ACTIVE_GRACE + Duration::from_millis(20));
        assert!(queue.may_take("b", None));
        assert!(!queue.keys.contains_key("a"));
    }

    #[test]
    fn a_flooding_key_is_held_to_its_fair_share_while_another_is_active() {
        let mut queue = FairQueue::new(4);
        let (a, b) = (key("a"), key("b"));
        // b ran a quick request a moment ago and has nothing in flight now.
        queue.acquired(&b, None);
        queue.released("b");
        queue.acquired(&a, None);
        queue.acquired(&a, None);
        // a holds its share (4 / 2): a third worker stays for b.
        assert!(!queue.may_take("a", None));
        queue.push(&a, None, "a-waits");
        assert!(queue.pop_next().is_none());
        assert!(queue.may_take("b", None));
        // Once b has been quiet past the grace period, a may use the whole pool.
        std::thread::sleep(ACTIVE_GRACE + Duration::from_millis(20));
        assert_eq!(
            queue.pop_next().map(|(k, w)| (k.to_string(), w)),
            Some(("a".into(), "a-waits"))
        );
    }

    #[test]
    fn newcomers_queue_behind_their_own_waiters() {
        let mut queue = FairQueue::new(16);
        let a = key("a");
        assert!(queue.may_take("a", None));
        queue.push(&a, None, ());
        assert!(!queue.may_take("a", None));
        assert!(queue.may_take("b", None));
        assert!(!queue.may_take("z", Some(0)));
    }
}
