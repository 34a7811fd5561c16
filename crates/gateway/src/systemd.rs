//! systemd integration, by hand over libc (a leaf): the listening sockets systemd hands
//! over (`sd_listen_fds`: `LISTEN_PID`, `LISTEN_FDS`, descriptors from 3) matched to the
//! configured addresses, and state changes sent to `NOTIFY_SOCKET` (`sd_notify`: `READY=1`,
//! `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`). Outside systemd both do nothing.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Why the inherited descriptors could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ListenFdsError {
    /// `LISTEN_FDS` or `LISTEN_PID` is not a number.
    #[error("{var}={value:?} is not a number")]
    NotANumber {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// A passed descriptor could not be marked close-on-exec.
    #[error("cannot set FD_CLOEXEC on inherited descriptor {fd}: {source}")]
    Cloexec {
        /// The descriptor.
        fd: RawFd,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Listening TCP sockets this process was given (by systemd or by the process it takes
/// over from), each with the address it is bound to. The gateway claims them address by
/// address; the rest are reported as unused.
#[derive(Debug, Default)]
pub struct InheritedListeners {
    sockets: Vec<(SocketAddr, std::net::TcpListener)>,
}

impl InheritedListeners {
    /// None: every address is bound afresh.
    pub fn none() -> Self {
        Self::default()
    }

    /// The sockets systemd passed, per the `sd_listen_fds` protocol: only when
    /// `LISTEN_PID` is this process; each descriptor from 3 on gets `FD_CLOEXEC`, and
    /// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` are removed from the environment so
    /// children do not take them for theirs.
    ///
    /// Call it before any other thread starts (the environment is changed).
    pub fn from_env() -> Result<Self, ListenFdsError> {
        let pid = std::env::var("LISTEN_PID").ok();
        let fds = std::env::var("LISTEN_FDS").ok();
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            // Single-threaded here (see the doc comment).
            std::env::remove_var(var);
        }
        let (Some(pid), Some(fds)) = (pid, fds) else {
            return Ok(Self::none());
        };
        let pid: u32 = pid.trim().parse().map_err(|_| ListenFdsError::NotANumber {
            var: "LISTEN_PID",
            value: pid.clone(),
        })?;
        if pid != std::process::id() {
            tracing::debug!(
                listen_pid = pid,
                "LISTEN_PID names another process; ignoring LISTEN_FDS"
            );
            return Ok(Self::none());
        }
        let count: RawFd = fds.trim().parse().map_err(|_| ListenFdsError::NotANumber {
            var: "LISTEN_FDS",
            value: fds.clone(),
        })?;
        let mut owned = Vec::new();
        for fd in LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(count.max(0)) {
            // SAFETY: F_SETFD on a descriptor number; a bad one fails with EBADF.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
                return Err(ListenFdsError::Cloexec {
                    fd,
                    source: std::io::Error::last_os_error(),
                });
            }
            // SAFETY: the protocol hands descriptors 3..3+LISTEN_FDS to this process, which
            // owns them from now on; fcntl just proved each is open.
            owned.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        tracing::info!(
            count = owned.len(),
            "socket activation: inherited listeners"
        );
        Ok(Self::from_fds(owned))
    }

    /// Takes `fds`: each listening TCP socket is kept under its bound address; anything
    /// else (a Unix or UDP socket, a file) is reported and closed.
    pub fn from_fds(fds: Vec<OwnedFd>) -> Self {
        let mut sockets = Vec::new();
        for fd in fds {
            let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
            if !is_listening_tcp(raw) {
                tracing::warn!(
                    fd = raw,
                    "inherited descriptor is not a listening TCP socket; closing it"
                );
                continue;
            }
            let listener = std::net::TcpListener::from(fd);
            match listener.local_addr() {
                Ok(addr) => sockets.push((addr, listener)),
                Err(err) => {
                    tracing::warn!(fd = raw, error = %err, "inherited socket has no address; closing it")
                }
            }
        }
        Self { sockets }
    }

    /// Whether no socket was inherited.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The inherited socket bound to exactly `addr`, if any, set non-blocking for tokio.
    pub fn take(&mut self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        let index = self.sockets.iter().position(|(bound, _)| *bound == addr)?;
        let (_, listener) = self.sockets.swap_remove(index);
        if let Err(err) = listener.set_nonblocking(true) {
            tracing::warn!(%addr, error = %err, "cannot make the inherited socket non-blocking; binding afresh");
            return None;
        }
        tracing::info!(%addr, "using the inherited listening socket");
        Some(listener)
    }

    /// Warns about each socket no configured address claimed, and closes it.
    pub fn warn_unclaimed(self) {
        for (addr, _) in self.sockets {
            tracing::warn!(%addr, "an inherited listening socket matches no listen, tls_listen or admin address; closing it");
        }
    }
}

/// Whether `fd` is a stream socket in the listening state, of an IP family.
fn is_listening_tcp(fd: RawFd) -> bool {
    let int_option = |name| {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len describe a c_int the kernel writes into.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                std::ptr::addr_of_mut!(value).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(value)
    };
    int_option(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && int_option(libc::SO_ACCEPTCONN) == Some(1)
        && matches!(
            int_option(libc::SO_DOMAIN),
            Some(libc::AF_INET | libc::AF_INET6)
        )
}

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `NOTIFY_SOCKET`, when set. A
/// name starting with `@` is an abstract socket. Failures are logged, never fatal: the
/// service manager's watchdog or start timeout reports a notify that got lost.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(err) = send_notify(&path, state) {
        tracing::warn!(error = %err, state, "sd_notify failed");
    }
}

fn send_notify(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::from_abstract_name(name)?,
        None => UnixAddr::from_pathname(path)?,
    };
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// `READY=1`: the listeners serve.
pub fn notify_ready() {
    notify(&format!("READY=1\nMAINPID={}", std::process::id()));
}

/// `RELOADING=1` with `MONOTONIC_USEC`, as `Type=notify-reload` expects, before a reload;
/// [`notify_ready`] after it.
pub fn notify_reloading() {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

/// `STOPPING=1`: the process stopped accepting and drains.
pub fn notify_stopping() {
    notify("STOPPING=1");
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares reload times with.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec the kernel fills.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

/// The watchdog's period when systemd asked for one (`WATCHDOG_USEC`, and `WATCHDOG_PID`
/// unset or this process): half the timeout, as sd_watchdog_enabled advises.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Sends `WATCHDOG=1` every [`watchdog_interval`] until `stop` completes; returns at once
/// when no watchdog is asked for.
pub async fn run_watchdog(stop: impl std::future::Future<Output = ()>) {
    let Some(period) = watchdog_interval() else {
        return;
    };
    tracing::info!(?period, "systemd watchdog: pinging");
    let mut stop = std::pin::pin!(stop);
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick() => notify("WATCHDOG=1"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_tcp_socket_is_kept_under_its_address_and_anything_else_is_dropped() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut inherited =
            InheritedListeners::from_fds(vec![OwnedFd::from(tcp), OwnedFd::from(udp)]);
        assert!(!inherited.is_empty());
        assert!(inherited.take("127.0.0.1:1".parse().unwrap()).is_none());
        let taken = inherited.take(addr).unwrap();
        assert_eq!(taken.local_addr().unwrap(), addr);
        assert!(inherited.is_empty());
    }

    #[test]
    fn notify_reaches_an_abstract_socket_and_a_path_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("gateway-notify-test-{}", std::process::id());
        let abstract_addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = std::os::unix::net::UnixDatagram::bind_addr(&abstract_addr).unwrap();
        send_notify(std::ffi::OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send_notify(path.as_os_str(), "STOPPING=1").unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert!(monotonic_usec() > 0);
    }
}
