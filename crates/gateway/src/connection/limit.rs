//! The bound on open client connections (`[server] max_connections`): over it, a new
//! connection is accepted and closed at once (rather than left in the kernel's backlog
//! where it would time out slowly), with a log line at most once a second. Also the
//! process's open-file limit, which sets the default bound.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// File descriptors kept out of the default connection bound for everything that is not
/// a client connection or a PHP-FPM connection: listeners, the config watcher, the usage
/// database, logs, the runtime.
pub const RESERVED_FDS: u64 = 64;

/// The default `max_connections` for an open-file limit of `nofile` and a PHP-FPM pool of
/// `pool` connections. Each client connection may hold two descriptors at once (its socket,
/// and a spooled request body or a static file being sent), as nginx counts a proxied
/// connection twice.
pub fn default_max_connections(nofile: u64, pool: usize) -> usize {
    let spare = nofile
        .saturating_sub(RESERVED_FDS)
        .saturating_sub(pool as u64);
    usize::try_from(spare / 2).unwrap_or(usize::MAX).max(1)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as nginx's `worker_rlimit_nofile`
/// would: a distribution's soft default (often 1,024) is far below what a front server
/// needs. Returns the soft limit in force afterwards.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `setrlimit` reads one `rlimit` through a valid pointer to a local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        } else {
            // The hard limit may be "unlimited" where the kernel caps descriptors lower;
            // the soft limit then stays as it was.
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot raise the open-file limit"
            );
        }
    }
    Ok(limit.rlim_cur)
}

/// Counts open client connections against a bound; shared by every listener.
#[derive(Debug)]
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
    /// Connections refused since the last log line.
    refused: AtomicU64,
    /// When the last "limit reached" line was written, in ms from `start` (0: never).
    last_logged: AtomicU64,
    start: Instant,
}

/// Minimum time between two "connection limit reached" log lines.
const LOG_INTERVAL_MS: u64 = 1_000;

impl ConnectionLimit {
    /// A bound of `max` connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
            refused: AtomicU64::new(0),
            last_logged: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Counts a new connection, or refuses it (and notes that, for the log) when the
    /// bound is reached. The permit uncounts it when dropped.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok();
        if admitted {
            return Some(ConnectionPermit(self.clone()));
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.log_refusals();
        None
    }

    fn log_refusals(&self) {
        // Offset by the interval so the very first refusal is logged.
        let now = u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(LOG_INTERVAL_MS);
        let last = self.last_logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) < LOG_INTERVAL_MS
            || self
                .last_logged
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let refused = self.refused.swap(0, Ordering::Relaxed);
        tracing::warn!(
            max_connections = self.max,
            refused,
            "connection limit reached: new connections are closed at once"
        );
    }
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub struct ConnectionPermit(Arc<ConnectionLimit>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_over_the_bound_are_refused_until_one_closes() {
        let limit = ConnectionLimit::new(2);
        let a = limit.try_acquire().unwrap();
        let _b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());
        assert_eq!(limit.open(), 2);
        drop(a);
        assert!(limit.try_acquire().is_some());
    }

    #[test]
    fn the_default_bound_leaves_room_for_the_pool_and_two_descriptors_a_connection() {
        assert_eq!(default_max_connections(1024, 8), (1024 - 64 - 8) / 2);
        assert_eq!(default_max_connections(10, 8), 1);
    }

    #[test]
    fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
        let soft = raise_nofile_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise_nofile_limit`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(soft, limit.rlim_cur);
        assert!(limit.rlim_cur == limit.rlim_max || limit.rlim_max == libc::RLIM_INFINITY);
    }
}
