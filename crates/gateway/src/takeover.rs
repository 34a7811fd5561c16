//! Upgrade without systemd: a new gateway process takes the listening sockets of the
//! running one over its control Unix socket (`[server] takeover_socket`), starts serving
//! on them, and only then tells the old one to stop accepting and drain. The sockets are
//! the same kernel objects in both processes, so a connection waiting in a backlog is
//! accepted by one or the other, never refused.
//!
//! The exchange on the control socket, new process (N) and old one (O):
//! ```text
//! N → O  "takeover\n"
//! O → N  "listeners\n" + every listening socket (SCM_RIGHTS)
//!        N binds what was not handed over, starts serving
//! N → O  "serving\n"
//! O → N  "draining\n"   O stops accepting, drains, exits; N binds the control socket
//! ```
//! A new process that disconnects before "serving" leaves the old one serving.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long either side waits for the other's next message.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new process waits for the control socket to appear.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);
/// Most descriptors one handover carries (listen + tls_listen + admin addresses).
const MAX_FDS: usize = 64;

/// Why a takeover failed.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    /// The control socket could not be reached or broke.
    #[error("takeover over {path}: {source}")]
    Io {
        /// The control socket.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The other side answered something else.
    #[error("takeover over {path}: expected {expected:?}, got {got:?}")]
    Protocol {
        /// The control socket.
        path: PathBuf,
        /// The message expected.
        expected: &'static str,
        /// What came.
        got: String,
    },
}

/// The new process's side of a takeover in progress: the listening sockets are received,
/// the old process still accepts until [`finish`](Self::finish).
#[derive(Debug)]
pub struct Handover {
    path: PathBuf,
    stream: BufReader<UnixStream>,
}

impl Handover {
    /// Connects to the old process's control socket at `path` and receives its listening
    /// sockets. Blocking: call it before the runtime starts.
    pub fn connect(path: &Path) -> Result<(Self, Vec<OwnedFd>), TakeoverError> {
        let io = |source| TakeoverError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut stream = connect_patiently(path).map_err(io)?;
        stream.set_read_timeout(Some(STEP_TIMEOUT)).map_err(io)?;
        stream.write_all(b"takeover\n").map_err(io)?;
        let (line, fds) = recv_with_fds(&stream).map_err(io)?;
        if line != b"listeners\n" {
            return Err(TakeoverError::Protocol {
                path: path.to_path_buf(),
                expected: "listeners",
                got: String::from_utf8_lossy(&line).into_owned(),
            });
        }
        tracing::info!(path = %path.display(), sockets = fds.len(), "takeover: received the listening sockets");
        Ok((
            Self {
                path: path.to_path_buf(),
                stream: BufReader::new(stream),
            },
            fds,
        ))
    }

    /// Tells the old process this one serves, and waits until it stopped accepting.
    fn finish(mut self) -> Result<(), TakeoverError> {
        let path = self.path.clone();
        let io = |source| TakeoverError::Io {
            path: path.clone(),
            source,
        };
        self.stream.get_mut().write_all(b"serving\n").map_err(io)?;
        let mut line = String::new();
        self.stream.read_line(&mut line).map_err(io)?;
        if line != "draining\n" {
            return Err(TakeoverError::Protocol {
                path: path.clone(),
                expected: "draining",
                got: line,
            });
        }
        tracing::info!(path = %path.display(), "takeover: the old process drains");
        Ok(())
    }
}

/// Connects to the control socket, waiting up to [`CONNECT_PATIENCE`] while nothing
/// listens there yet: the process started by the previous takeover binds it only once the
/// one before it confirmed it drains.
fn connect_patiently(path: &Path) -> std::io::Result<UnixStream> {
    let deadline = std::time::Instant::now() + CONNECT_PATIENCE;
    loop {
        match UnixStream::connect(path) {
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Runs the control socket at `path`: first completes `handover` (when this process is
/// taking over), then hands `listeners` to whichever new process asks, and cancels
/// `taken_over` once one serves. Stops at `stop`; removes the socket file unless taken
/// over (the path is the new process's then).
pub async fn run_control(
    path: PathBuf,
    listeners: Vec<OwnedFd>,
    handover: Option<Handover>,
    taken_over: CancellationToken,
    stop: CancellationToken,
) {
    if let Some(handover) = handover {
        match tokio::task::spawn_blocking(move || handover.finish()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(error = %err, "takeover not confirmed; both processes may accept for now")
            }
            Err(err) => tracing::error!(error = %err, "takeover task failed"),
        }
    }
    let listener = match bind_in_place(&path) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(path = %path.display(), error = %err, "cannot listen on the takeover socket; upgrades must restart");
            return;
        }
    };
    tracing::info!(path = %path.display(), "takeover socket listening");
    let listeners = std::sync::Arc::new(listeners);
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "takeover socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let listeners = listeners.clone();
        let path_shown = path.display().to_string();
        let handed = tokio::task::spawn_blocking(move || {
            let stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            hand_over(stream, &listeners)
        })
        .await;
        match handed {
            Ok(Ok(())) => {
                tracing::info!(path = %path_shown, "taken over by a new process: draining");
                taken_over.cancel();
                // The new process binds the path now; it is not ours to remove.
                return;
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "takeover attempt failed; still serving")
            }
            Err(err) => tracing::warn!(error = %err, "takeover task failed; still serving"),
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

/// Binds a Unix listener at `path`, replacing whatever file is there (left by a process
/// that is gone, or by the one that just handed over) in one rename, so a client never
/// finds the path missing.
fn bind_in_place(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.new", std::process::id()));
    let fresh = path.with_file_name(name);
    let _ = std::fs::remove_file(&fresh);
    let listener = tokio::net::UnixListener::bind(&fresh)?;
    std::fs::rename(&fresh, path)?;
    Ok(listener)
}

/// The old process's side of one exchange, up to "draining" (see the module docs).
fn hand_over(stream: UnixStream, listeners: &[OwnedFd]) -> std::io::Result<()> {
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line != "takeover\n" {
        return Err(std::io::Error::other(format!(
            "expected \"takeover\", got {line:?}"
        )));
    }
    let fds: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    send_with_fds(reader.get_ref(), b"listeners\n", &fds)?;
    line.clear();
    reader.read_line(&mut line)?;
    if line != "serving\n" {
        return Err(std::io::Error::other(format!(
            "the new process did not start serving (said {line:?})"
        )));
    }
    reader.get_mut().write_all(b"draining\n")?;
    Ok(())
}

/// Sends `data` with `fds` attached (SCM_RIGHTS) in one message.
fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as libc::c_uint) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: zeroed msghdr is a valid empty header; the pointers set below outlive the
    // sendmsg call, and the control buffer is CMSG_SPACE bytes, 8-aligned.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as libc::c_uint) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
        if libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one message and the descriptors attached to it (close-on-exec).
fn recv_with_fds(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut data = vec![0u8; 64];
    // SAFETY: arithmetic only.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as libc::c_uint) }
            as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut fds = Vec::new();
    // SAFETY: the header points at buffers that outlive recvmsg; the control messages
    // are walked with the CMSG macros within msg_controllen, and each SCM_RIGHTS
    // descriptor is new to this process, so it is owned once.
    let received = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let received = libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if received < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = libc::CMSG_LEN(0) as usize;
                let count = ((*cmsg).cmsg_len as usize).saturating_sub(header)
                    / std::mem::size_of::<RawFd>();
                let first = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(first.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(std::io::Error::other("too many descriptors handed over"));
        }
        received as usize
    };
    data.truncate(received);
    Ok((data, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_cross_the_control_socket_and_keep_their_address() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        send_with_fds(&a, b"listeners\n", &[tcp.as_raw_fd()]).unwrap();
        let (line, fds) = recv_with_fds(&b).unwrap();
        assert_eq!(line, b"listeners\n");
        assert_eq!(fds.len(), 1);
        let received = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(received.local_addr().unwrap(), addr);
    }
}
