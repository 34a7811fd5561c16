//! A lease on one slot of a [`Pool`](super::Pool), and the trait it hands its value back
//! through, so what holds a lease (a response body) never names the pool.

use std::fmt;
use std::sync::Arc;

use super::QueueKey;

/// What a pool may keep: something that can say, without IO, whether it is fit to be
/// handed to the next user.
pub(crate) trait Poolable: Send + 'static {
    /// Whether it may go back to the pool once its user is done with it.
    fn is_clean(&self) -> bool;
}

/// Where a lease goes back to when it is dropped. The pool implements it.
pub(crate) trait Recycle<T>: Send + Sync {
    /// Takes back the slot `key` held on `server`, with its value when that is fit for
    /// reuse; `faulted` when the server broke the protocol while the slot was held.
    fn recycle(&self, key: &QueueKey, server: usize, value: Option<T>, faulted: bool);
}

/// The right to one slot of a pool, with the value on it.
///
/// Dropping it gives the slot back; the value goes with it only when [`Lease::finish`]
/// found it clean.
pub(crate) struct Lease<T: Poolable> {
    /// `None` between a slot's grant and its filling, and after `drop` took it.
    value: Option<T>,
    /// `None` for a value that belongs to no pool.
    home: Option<Arc<dyn Recycle<T>>>,
    key: QueueKey,
    /// Index of the server the slot counts against.
    server: usize,
    /// The value was kept from an earlier use (so may have died meanwhile).
    reused: bool,
    /// Set by `finish`: the value goes back with the slot.
    reusable: bool,
    /// Set by `fault`: the server broke the protocol on this slot.
    faulted: bool,
}

impl<T: Poolable> fmt::Debug for Lease<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("server", &self.server)
            .field("filled", &self.value.is_some())
            .field("pooled", &self.home.is_some())
            .field("reused", &self.reused)
            .finish()
    }
}

impl<T: Poolable> Lease<T> {
    pub(super) fn new(
        home: Arc<dyn Recycle<T>>,
        key: QueueKey,
        server: usize,
        value: Option<T>,
    ) -> Self {
        Self {
            reused: value.is_some(),
            value,
            home: Some(home),
            key,
            server,
            reusable: false,
            faulted: false,
        }
    }

    /// A lease on a value that belongs to no pool: dropping it drops the value.
    pub(crate) fn unpooled(value: T) -> Self {
        Self {
            value: Some(value),
            home: None,
            key: super::default_key(),
            server: 0,
            reused: false,
            reusable: false,
            faulted: false,
        }
    }

    /// Index of the server whose slot this is.
    pub(crate) fn server(&self) -> usize {
        self.server
    }

    /// Whether the value was kept from an earlier use.
    pub(crate) fn is_reused(&self) -> bool {
        self.reused
    }

    /// Takes the kept value out (to check it, and drop it if it died); the slot stays.
    pub(crate) fn take(&mut self) -> Option<T> {
        self.value.take()
    }

    /// Puts a value on the slot (a fresh one, or the kept one after its check).
    pub(crate) fn fill(&mut self, value: T, reused: bool) {
        self.value = Some(value);
        self.reused = reused;
    }

    /// The value. Every lease handed past the pool's front carries one: the front fills
    /// the slot before anything else sees the lease.
    pub(crate) fn get_mut(&mut self) -> &mut T {
        match self.value.as_mut() {
            Some(value) => value,
            None => unreachable!("lease without a value"),
        }
    }

    /// The server broke the protocol on this slot: the pool counts it against the server
    /// (and marks it down when the pool marks servers). The value is not kept.
    pub(crate) fn fault(&mut self) {
        self.faulted = true;
        self.reusable = false;
    }

    /// The user is done and the value ended cleanly: it may go back if it still is.
    pub(crate) fn finish(&mut self) {
        self.reusable = self.value.as_ref().is_some_and(T::is_clean);
    }
}

impl<T: Poolable> Drop for Lease<T> {
    fn drop(&mut self) {
        let Some(home) = self.home.take() else {
            return;
        };
        let value = if self.reusable {
            self.value.take()
        } else {
            None
        };
        home.recycle(&self.key, self.server, value, self.faulted);
    }
}
