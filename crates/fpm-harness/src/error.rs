//! The single error type returned by every fallible harness function.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while locating, starting or controlling the
/// external processes (php-fpm, nginx) and helper sockets of the harness.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No php-fpm binary could be located.
    #[error("php-fpm binary not found (looked at: {searched}); run scripts/ensure-php-fpm.sh to install it")]
    PhpFpmNotFound {
        /// Human-readable list of the places that were searched.
        searched: String,
    },

    /// No nginx binary could be located.
    #[error("nginx binary not found (looked at: {searched}); run scripts/ensure-php-fpm.sh --with-nginx to install it")]
    NginxNotFound {
        /// Human-readable list of the places that were searched.
        searched: String,
    },

    /// MariaDB's server, initialiser or client could not be located.
    #[error("MariaDB not found (looked for {searched}); run scripts/ensure-php-fpm.sh --with-wordpress to install it")]
    MariaDbNotFound {
        /// Human-readable list of what was looked for, and where.
        searched: String,
    },

    /// Debian's WordPress package is not installed.
    #[error("WordPress not found (looked at {searched}); run scripts/ensure-php-fpm.sh --with-wordpress to install it")]
    WordPressNotFound {
        /// Human-readable list of the places that were searched.
        searched: String,
    },

    /// A setup command (a database initialiser, a client) ran and failed.
    #[error("{binary} failed with {status}:\n{output}")]
    CommandFailed {
        /// The command's binary.
        binary: PathBuf,
        /// Exit status as printed by std.
        status: String,
        /// What it printed (stdout, then stderr).
        output: String,
    },

    /// The caller-supplied configuration cannot work.
    #[error("invalid harness configuration: {0}")]
    InvalidConfig(String),

    /// Creating the private temporary directory failed.
    #[error("cannot create a temporary directory for {what}: {source}")]
    TempDir {
        /// What the directory was for.
        what: &'static str,
        /// Underlying I/O error.
        source: io::Error,
    },

    /// Writing a generated file (configuration, ini, ...) failed.
    #[error("cannot write {path}: {source}")]
    WriteFile {
        /// File that could not be written.
        path: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },

    /// Reading a file (log, /proc entry, ...) failed.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// File that could not be read.
        path: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },

    /// The binary could not be spawned at all.
    #[error("cannot spawn {binary}: {source}")]
    Spawn {
        /// Binary that failed to start.
        binary: PathBuf,
        /// Underlying I/O error.
        source: io::Error,
    },

    /// The process exited before its listen socket accepted connections.
    #[error("{binary} exited with {status} before accepting connections on {address}; log tail:\n{log_tail}")]
    ExitedEarly {
        /// Binary that exited.
        binary: PathBuf,
        /// Exit status as printed by std.
        status: String,
        /// Address it was supposed to listen on.
        address: String,
        /// Last lines of its logs.
        log_tail: String,
    },

    /// The process kept running but never accepted a connection in time.
    #[error(
        "{binary} did not become ready on {address} within {timeout_ms} ms; log tail:\n{log_tail}"
    )]
    NotReady {
        /// Binary that was started.
        binary: PathBuf,
        /// Address it was supposed to listen on.
        address: String,
        /// How long we waited.
        timeout_ms: u128,
        /// Last lines of its logs.
        log_tail: String,
    },

    /// Sending a signal failed.
    #[error("cannot send {signal} to {target} {pid}: {source}")]
    Signal {
        /// Signal name, e.g. `SIGUSR2`.
        signal: &'static str,
        /// `"process"` or `"process group"`.
        target: &'static str,
        /// Target pid / pgid.
        pid: i32,
        /// Underlying OS error.
        source: io::Error,
    },

    /// Waiting for (reaping) a child process failed.
    #[error("cannot wait for {binary} (pid {pid}): {source}")]
    Wait {
        /// Binary of the child.
        binary: PathBuf,
        /// Its pid.
        pid: u32,
        /// Underlying I/O error.
        source: io::Error,
    },

    /// A socket operation of the harness itself failed.
    #[error("{what}: {source}")]
    Socket {
        /// What was being attempted, including the address.
        what: String,
        /// Underlying I/O error.
        source: io::Error,
    },

    /// The operation needs a running process, but it is not running.
    #[error("{binary} is not running")]
    NotRunning {
        /// Binary that is not running.
        binary: PathBuf,
    },
}

/// Short alias used throughout the crate.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
