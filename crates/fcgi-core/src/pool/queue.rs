//! The pool's waiting room: one FIFO queue per key (tenant), served fairly.
//!
//! When a connection frees up it goes to the waiting key that holds the fewest
//! connections (ties go round-robin). That shares PHP-FPM's workers by concurrency, not by
//! request count: a tenant flooding a slow script cannot take every worker while another
//! tenant waits, because each free worker goes to whoever holds fewer. A key may also be
//! capped (`max_concurrency`), and then waits even when workers are free.

use std::collections::{HashMap, VecDeque};

use crate::client::QueueKey;

/// Per-key accounting.
#[derive(Debug, Default)]
struct KeyState<W> {
    /// Waiters in arrival order.
    waiters: VecDeque<(u64, W)>,
    /// Connections this key holds now (leased or being opened).
    in_use: usize,
    /// The key's cap, as its latest waiter or lease gave it.
    cap: Option<usize>,
}

/// Queues of waiters `W` per key, with fair selection.
#[derive(Debug)]
pub(crate) struct FairQueue<W> {
    keys: HashMap<QueueKey, KeyState<W>>,
    /// Keys that have waiters, in round-robin order.
    ring: VecDeque<QueueKey>,
    waiting: usize,
    next_id: u64,
}

impl<W> Default for FairQueue<W> {
    fn default() -> Self {
        Self {
            keys: HashMap::new(),
            ring: VecDeque::new(),
            waiting: 0,
            next_id: 0,
        }
    }
}

impl<W> FairQueue<W> {
    /// Number of waiters across all keys.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Connections `key` holds now.
    pub(crate) fn in_use(&self, key: &str) -> usize {
        self.keys.get(key).map_or(0, |k| k.in_use)
    }

    /// Whether `key` may take a connection now without jumping its own queue or its cap.
    pub(crate) fn may_take(&self, key: &str, cap: Option<usize>) -> bool {
        match self.keys.get(key) {
            None => cap.is_none_or(|c| c > 0),
            Some(state) => state.waiters.is_empty() && cap.is_none_or(|c| state.in_use < c),
        }
    }

    /// Records that `key` took a connection.
    pub(crate) fn acquired(&mut self, key: &QueueKey, cap: Option<usize>) {
        let state = self.keys.entry(key.clone()).or_insert_with(|| KeyState {
            waiters: VecDeque::new(),
            in_use: 0,
            cap,
        });
        state.in_use += 1;
        state.cap = cap;
    }

    /// Records that `key` gave a connection back.
    pub(crate) fn released(&mut self, key: &str) {
        if let Some(state) = self.keys.get_mut(key) {
            state.in_use = state.in_use.saturating_sub(1);
            if state.in_use == 0 && state.waiters.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    /// Queues a waiter for `key`; returns its id for [`FairQueue::remove`].
    pub(crate) fn push(&mut self, key: &QueueKey, cap: Option<usize>, waiter: W) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let state = self.keys.entry(key.clone()).or_insert_with(|| KeyState {
            waiters: VecDeque::new(),
            in_use: 0,
            cap,
        });
        state.cap = cap;
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
            if state.in_use == 0 {
                self.keys.remove(key);
            }
        }
        Some(waiter)
    }

    /// Picks the next waiter to get a connection: among keys under their cap, the one
    /// holding the fewest connections, earliest in the ring on a tie. Counts the
    /// connection as acquired by that key.
    pub(crate) fn pop_next(&mut self) -> Option<(QueueKey, W)> {
        let mut best: Option<(usize, usize)> = None; // (ring index, in_use)
        for (index, key) in self.ring.iter().enumerate() {
            let Some(state) = self.keys.get(key) else {
                continue;
            };
            if state.cap.is_some_and(|c| state.in_use >= c) {
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
        if !state.waiters.is_empty() {
            self.ring.push_back(key.clone());
        }
        Some((key, waiter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> QueueKey {
        QueueKey::from(name)
    }

    #[test]
    fn a_free_connection_goes_to_the_key_holding_fewer() {
        let mut queue = FairQueue::default();
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
        let mut queue = FairQueue::default();
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
        let mut queue = FairQueue::default();
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
    fn a_removed_waiter_is_not_served_and_state_is_dropped() {
        let mut queue = FairQueue::default();
        let a = key("a");
        let id = queue.push(&a, None, "a0");
        assert_eq!(queue.waiting(), 1);
        assert_eq!(queue.remove("a", id), Some("a0"));
        assert_eq!(queue.waiting(), 0);
        assert!(queue.pop_next().is_none());
        assert!(queue.keys.is_empty());
        assert!(queue.ring.is_empty());
    }

    #[test]
    fn newcomers_queue_behind_their_own_waiters() {
        let mut queue = FairQueue::default();
        let a = key("a");
        assert!(queue.may_take("a", None));
        queue.push(&a, None, ());
        assert!(!queue.may_take("a", None));
        assert!(queue.may_take("b", None));
        assert!(!queue.may_take("z", Some(0)));
    }
}
