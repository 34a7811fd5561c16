//! What the private database servers (PostgreSQL, MariaDB) share: the wait until a
//! started server is ready, its clean stop, and the system user it runs as when the
//! test runs as root (neither server runs as root).

use std::ffi::CString;
use std::io;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};

/// Waits until `ready()` says the server `child` accepts connections on `address`. The
/// child exiting first (`child` is then `None`) or `timeout` passing is the error, with
/// the tail of `log`; on a timeout the caller stops the server, which it knows how to.
pub(crate) fn wait_until_ready(
    child: &mut Option<Child>,
    ready: impl Fn() -> bool,
    binary: &Path,
    address: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(server) = child.as_mut() {
            if let Ok(Some(status)) = server.try_wait() {
                *child = None;
                return Err(HarnessError::ExitedEarly {
                    binary: binary.to_path_buf(),
                    status: status.to_string(),
                    address: address.display().to_string(),
                    log_tail: crate::process::log_tail(&[log], 20),
                });
            }
        }
        if Instant::now() > deadline {
            return Err(HarnessError::NotReady {
                binary: binary.to_path_buf(),
                address: address.display().to_string(),
                timeout_ms: timeout.as_millis(),
                log_tail: crate::process::log_tail(&[log], 20),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` (a clean shutdown) to the server `pid` (`child` itself, or the server
/// behind a `runuser` child) and waits up to `timeout` for `child` to exit; kills it
/// then, or when the signal cannot be sent.
pub(crate) fn stop_server(
    mut child: Child,
    pid: libc::pid_t,
    signal: libc::c_int,
    signal_name: &'static str,
    timeout: Duration,
) -> Result<()> {
    // SAFETY: kill with a pid and a valid signal has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let source = io::Error::last_os_error();
        if source.raw_os_error() != Some(libc::ESRCH) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HarnessError::Signal {
                signal: signal_name,
                target: "process",
                pid,
                source,
            });
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(());
            }
        }
    }
}

/// A temporary directory (`prefix`…) for a server's files (`what`), given to the system
/// user `user` when the test runs as root; whether it was (the server then runs as
/// `user`).
pub(crate) fn server_dir(
    prefix: &str,
    what: &'static str,
    user: &str,
    server: &str,
) -> Result<(tempfile::TempDir, bool)> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| HarnessError::TempDir { what, source })?;
    // SAFETY: geteuid has no preconditions.
    let as_user = unsafe { libc::geteuid() } == 0;
    if as_user {
        give_to_user(dir.path(), user, server)?;
    }
    Ok((dir, as_user))
}

/// Gives `dir` to the system user `user` (uid and gid), who runs `server`.
fn give_to_user(dir: &Path, user: &str, server: &str) -> Result<()> {
    let name = CString::new(user)
        .map_err(|_| HarnessError::InvalidConfig(format!("user name {user:?}")))?;
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at once, before
    // any other call could reuse its static buffer.
    let (uid, gid) = unsafe {
        let entry = libc::getpwnam(name.as_ptr());
        if entry.is_null() {
            return Err(HarnessError::InvalidConfig(format!(
                "running as root, but there is no `{user}` user to run {server} as"
            )));
        }
        ((*entry).pw_uid, (*entry).pw_gid)
    };
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|source| HarnessError::WriteFile {
        path: dir.to_path_buf(),
        source,
    })
}
