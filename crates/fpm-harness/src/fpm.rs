//! Starting and controlling a private PHP-FPM instance (static pool) for tests.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use tempfile::TempDir;

use crate::error::{HarnessError, Result};
use crate::locate::php_fpm_binary;
use crate::net::{try_free_port, FpmAddress};
use crate::process::{live_children, log_tail, GroupLeader};

/// Lines of log included in startup error messages.
const LOG_TAIL_LINES: usize = 40;
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Which kind of socket the pool listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listen {
    /// A free loopback TCP port (`127.0.0.1:PORT`), chosen at start.
    #[default]
    Tcp,
    /// A Unix socket named `php-fpm.sock` inside the instance's temp dir.
    Unix,
}

/// Configuration of a harness PHP-FPM instance: one `pm = static` pool.
///
/// Defaults: TCP, 4 workers, no `pm.max_requests`, `pm.status_path =
/// /fpm-status`, `ping.path = /fpm-ping` answering `pong`, no `request_terminate_timeout`, `listen.backlog = 511`,
/// `process_control_timeout = 10s`, `php_admin_value[output_buffering] = 0`,
/// `catch_workers_output = yes`, `decorate_workers_output = no`,
/// `clear_env = no`, 10 s readiness timeout.
#[derive(Debug, Clone)]
pub struct FpmConfig {
    listen: Listen,
    workers: u32,
    max_requests: Option<u32>,
    status_path: Option<String>,
    /// `ping.path` and `ping.response`.
    ping: Option<(String, String)>,
    request_terminate_timeout: Option<Duration>,
    listen_backlog: u32,
    process_control_timeout: Duration,
    php_admin_values: Vec<(String, String)>,
    env: Vec<(String, String)>,
    pool_directives: Vec<(String, String)>,
    ready_timeout: Duration,
}

impl Default for FpmConfig {
    fn default() -> Self {
        Self {
            listen: Listen::Tcp,
            workers: 4,
            max_requests: None,
            status_path: Some(crate::STATUS_PATH.to_owned()),
            ping: Some(("/fpm-ping".to_owned(), "pong".to_owned())),
            request_terminate_timeout: None,
            listen_backlog: 511,
            process_control_timeout: Duration::from_secs(10),
            php_admin_values: vec![("output_buffering".to_owned(), "0".to_owned())],
            env: Vec::new(),
            pool_directives: Vec::new(),
            ready_timeout: Duration::from_secs(10),
        }
    }
}

impl FpmConfig {
    /// The default configuration (see the type documentation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Listen on TCP or on a Unix socket.
    pub fn listen(mut self, listen: Listen) -> Self {
        self.listen = listen;
        self
    }

    /// Number of workers (`pm.max_children` of the static pool). Must be >= 1.
    pub fn workers(mut self, workers: u32) -> Self {
        self.workers = workers;
        self
    }

    /// Recycle each worker after this many requests (`pm.max_requests`).
    pub fn max_requests(mut self, max_requests: u32) -> Self {
        self.max_requests = Some(max_requests);
        self
    }

    /// Serve the FPM status page at this path (`pm.status_path`).
    pub fn status_path(mut self, path: impl Into<String>) -> Self {
        self.status_path = Some(path.into());
        self
    }

    /// Do not configure `pm.status_path`.
    pub fn without_status_path(mut self) -> Self {
        self.status_path = None;
        self
    }

    /// Answer FastCGI requests for `path` with `response` (`ping.path`, `ping.response`),
    /// as health checks expect.
    pub fn ping(mut self, path: impl Into<String>, response: impl Into<String>) -> Self {
        self.ping = Some((path.into(), response.into()));
        self
    }

    /// Do not configure `ping.path`.
    pub fn without_ping(mut self) -> Self {
        self.ping = None;
        self
    }

    /// Configured `ping.path` and `ping.response`, if any.
    pub fn configured_ping(&self) -> Option<(&str, &str)> {
        self.ping.as_ref().map(|(p, r)| (p.as_str(), r.as_str()))
    }

    /// Kill a worker whose request runs longer than this
    /// (`request_terminate_timeout`). FPM only accepts whole seconds, so the
    /// value is rounded up to the next second.
    pub fn request_terminate_timeout(mut self, timeout: Duration) -> Self {
        self.request_terminate_timeout = Some(timeout);
        self
    }

    /// Listen backlog (`listen.backlog`).
    pub fn listen_backlog(mut self, backlog: u32) -> Self {
        self.listen_backlog = backlog;
        self
    }

    /// How long a graceful reload/stop lets busy workers finish
    /// (`process_control_timeout`, global section; whole seconds, rounded
    /// up). With FPM's own default of 0 a reload kills in-flight requests
    /// almost immediately, hence the harness default of 10 s.
    pub fn process_control_timeout(mut self, timeout: Duration) -> Self {
        self.process_control_timeout = timeout;
        self
    }

    /// Adds `php_admin_value[name] = value` to the pool (e.g. `memory_limit`,
    /// `128M`). A later value for the same name replaces an earlier one.
    pub fn php_admin_value(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.php_admin_values
            .retain(|(existing, _)| *existing != name);
        self.php_admin_values.push((name, value.into()));
        self
    }

    /// Adds `env[name] = value` to the pool (on top of the inherited
    /// environment, as `clear_env = no`).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Adds an arbitrary `key = value` line to the pool section, e.g.
    /// `("ping.path", "/ping")`. Written after the harness's own directives.
    pub fn pool_directive(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.pool_directives.push((key.into(), value.into()));
        self
    }

    /// How long [`Fpm::start`] and [`Fpm::restart`] wait for the socket to
    /// accept connections.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Number of workers configured.
    pub fn worker_count(&self) -> u32 {
        self.workers
    }

    /// Configured `pm.status_path`, if any.
    pub fn configured_status_path(&self) -> Option<&str> {
        self.status_path.as_deref()
    }

    /// Shorthand for [`Fpm::start`].
    pub fn start(self) -> Result<Fpm> {
        Fpm::start(self)
    }

    fn validate(&self) -> Result<()> {
        if self.workers == 0 {
            return Err(HarnessError::InvalidConfig(
                "php-fpm needs at least one worker".to_owned(),
            ));
        }
        let all_keys = self
            .php_admin_values
            .iter()
            .chain(&self.env)
            .chain(&self.pool_directives)
            .chain(&self.ping);
        for (key, value) in all_keys {
            if key.contains(['\n', '\r', ']', '=']) || value.contains(['\n', '\r']) {
                return Err(HarnessError::InvalidConfig(format!(
                    "php-fpm pool setting {key:?} = {value:?} contains a forbidden character"
                )));
            }
        }
        Ok(())
    }

    fn render_php_fpm_conf(&self, dir: &Path, address: &FpmAddress) -> String {
        let mut conf = String::new();
        let listen = match address {
            FpmAddress::Tcp(addr) => addr.to_string(),
            FpmAddress::Unix(path) => quote(path),
        };
        // Writing to a String cannot fail.
        let _ = write!(
            conf,
            "; Generated by fpm-harness.\n\
             [global]\n\
             pid = {pid}\n\
             error_log = {log}\n\
             log_level = notice\n\
             daemonize = no\n\
             process_control_timeout = {pct}s\n\
             \n\
             [harness]\n\
             listen = {listen}\n\
             listen.backlog = {backlog}\n\
             pm = static\n\
             pm.max_children = {workers}\n\
             pm.max_requests = {max_requests}\n\
             request_terminate_timeout = {rtt}s\n\
             catch_workers_output = yes\n\
             decorate_workers_output = no\n\
             clear_env = no\n",
            pid = quote(&dir.join(PID_FILE)),
            log = quote(&dir.join(LOG_FILE)),
            pct = whole_seconds(self.process_control_timeout),
            backlog = self.listen_backlog,
            workers = self.workers,
            max_requests = self.max_requests.unwrap_or(0),
            rtt = self.request_terminate_timeout.map_or(0, whole_seconds),
        );
        if let Some(path) = &self.status_path {
            let _ = writeln!(conf, "pm.status_path = {path}");
        }
        if let Some((path, response)) = &self.ping {
            let _ = writeln!(conf, "ping.path = {path}");
            let _ = writeln!(conf, "ping.response = {response}");
        }
        for (name, value) in &self.php_admin_values {
            let _ = writeln!(conf, "php_admin_value[{name}] = {value}");
        }
        for (name, value) in &self.env {
            let _ = writeln!(conf, "env[{name}] = {value}");
        }
        for (key, value) in &self.pool_directives {
            let _ = writeln!(conf, "{key} = {value}");
        }
        conf
    }
}

/// php.ini used by every harness instance (`-c`). The distribution's
/// `conf.d` scan directory is still loaded, so extensions stay available.
const PHP_INI: &str = "\
; Generated by fpm-harness.
output_buffering = 0
implicit_flush = Off
zlib.output_compression = Off
; Like Debian's production php.ini: no X-Powered-By, no argv/argc or $_ENV.
expose_php = Off
register_argc_argv = Off
variables_order = \"GPCS\"
display_errors = Off
display_startup_errors = Off
log_errors = On
error_reporting = E_ALL
; 0 = no limit: upload tests stream bodies of many MiB.
post_max_size = 0
upload_max_filesize = 1G
memory_limit = 256M
; Wall-clock limits are request_terminate_timeout's job.
max_execution_time = 0
; Tests may write PHP files at run time.
opcache.revalidate_freq = 0
";

const CONF_FILE: &str = "php-fpm.conf";
const INI_FILE: &str = "php.ini";
const LOG_FILE: &str = "php-fpm.log";
const STDERR_FILE: &str = "php-fpm.stderr";
const PID_FILE: &str = "php-fpm.pid";
const SOCKET_FILE: &str = "php-fpm.sock";

/// A running (or killed, restartable) private PHP-FPM master with a static
/// pool. Dropping it SIGKILLs the master and all workers (its process group).
///
/// Processes are not tied to the test process beyond `Drop`: if the test
/// binary itself is SIGKILLed, the php-fpm group keeps running.
#[derive(Debug)]
pub struct Fpm {
    config: FpmConfig,
    binary: PathBuf,
    address: FpmAddress,
    leader: Option<GroupLeader>,
    // Declared last so the processes are gone before the directory is removed.
    dir: TempDir,
}

impl Fpm {
    /// Starts php-fpm with `config` and waits until its socket accepts
    /// connections and all workers are forked.
    pub fn start(config: FpmConfig) -> Result<Fpm> {
        config.validate()?;
        let binary = php_fpm_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("fpm-harness-")
            .tempdir()
            .map_err(|source| HarnessError::TempDir {
                what: "php-fpm",
                source,
            })?;
        let address = match config.listen {
            Listen::Tcp => {
                let port = try_free_port().map_err(|source| HarnessError::Socket {
                    what: "cannot pick a free loopback port for php-fpm".to_owned(),
                    source,
                })?;
                FpmAddress::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            }
            Listen::Unix => FpmAddress::Unix(dir.path().join(SOCKET_FILE)),
        };
        write_file(
            &dir.path().join(CONF_FILE),
            &config.render_php_fpm_conf(dir.path(), &address),
        )?;
        write_file(&dir.path().join(INI_FILE), PHP_INI)?;

        let mut fpm = Fpm {
            config,
            binary,
            address,
            leader: None,
            dir,
        };
        fpm.spawn_and_wait()?;
        Ok(fpm)
    }

    /// Where the pool listens.
    pub fn address(&self) -> &FpmAddress {
        &self.address
    }

    /// The configuration this instance was started with.
    pub fn config(&self) -> &FpmConfig {
        &self.config
    }

    /// The php-fpm binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The instance's private directory (config, logs, pid file, socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the php-fpm error log (master messages plus, through
    /// `catch_workers_output`, everything workers write to their stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// Current content of the php-fpm error log (all runs of this instance).
    pub fn log_contents(&self) -> Result<String> {
        let path = self.log_path();
        fs::read(&path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|source| HarnessError::ReadFile { path, source })
    }

    /// Polls the error log until it contains `needle`; `false` on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_contents().is_ok_and(|log| log.contains(needle)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Pid of the master process, `None` after [`Fpm::kill`].
    pub fn master_pid(&self) -> Option<u32> {
        self.leader.as_ref().map(GroupLeader::pid)
    }

    /// Pids of the master's live worker processes, sorted; empty when killed.
    pub fn worker_pids(&self) -> Result<Vec<u32>> {
        match self.master_pid() {
            Some(pid) => live_children(pid),
            None => Ok(Vec::new()),
        }
    }

    /// `true` while the master process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.leader.as_mut().map(GroupLeader::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// SIGKILLs the master and all workers (the whole process group) and
    /// reaps the master. The socket stops accepting; a Unix socket file is
    /// left behind, as after a real crash. No-op when already killed.
    pub fn kill(&mut self) -> Result<()> {
        match self.leader.take() {
            Some(leader) => leader.kill_group(),
            None => Ok(()),
        }
    }

    /// Starts php-fpm again with the same configuration on the same address
    /// (killing the current instance first if it still runs) and waits until
    /// it is ready. Fails if another process took the TCP port meanwhile.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn_and_wait()
    }

    /// Sends SIGUSR2 (graceful reload) to the master and returns at once.
    ///
    /// The master asks workers to finish their current request (bounded by
    /// `process_control_timeout`), re-executes itself keeping the same pid
    /// and listen socket, and forks new workers. Use
    /// [`Fpm::reload_and_wait`] to block until that has happened.
    pub fn reload(&self) -> Result<()> {
        self.running_leader()?.signal(libc::SIGUSR2, "SIGUSR2")
    }

    /// [`Fpm::reload`], then waits until none of the previous workers is left
    /// and a full set of new workers is up and the socket accepts.
    pub fn reload_and_wait(&mut self) -> Result<()> {
        let old = self.worker_pids()?;
        self.reload()?;
        self.wait_ready(|current| !current.iter().any(|pid| old.contains(pid)))
    }

    fn running_leader(&self) -> Result<&GroupLeader> {
        self.leader
            .as_ref()
            .ok_or_else(|| HarnessError::NotRunning {
                binary: self.binary.clone(),
            })
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let dir = self.dir.path();
        if let FpmAddress::Unix(path) = &self.address {
            // Left behind by a killed instance; FPM would refuse to bind.
            let _ = fs::remove_file(path);
        }
        let stderr_path = dir.join(STDERR_FILE);
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .map_err(|source| HarnessError::WriteFile {
                path: stderr_path.clone(),
                source,
            })?;
        let stdout = stderr
            .try_clone()
            .map_err(|source| HarnessError::WriteFile {
                path: stderr_path,
                source,
            })?;

        let mut command = Command::new(&self.binary);
        command
            .arg("--nodaemonize")
            .arg("--fpm-config")
            .arg(dir.join(CONF_FILE))
            .arg("--prefix")
            .arg(dir)
            .arg("-c")
            .arg(dir.join(INI_FILE))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        if running_as_root() {
            // FPM refuses to run pools as root without it.
            command.arg("--allow-to-run-as-root");
        }
        let child = command.spawn().map_err(|source| HarnessError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        self.leader = Some(GroupLeader::new(self.binary.clone(), child));
        let result = self.wait_ready(|_| true);
        if result.is_err() {
            // Do not leave a half-started instance behind.
            let _ = self.kill();
        }
        result
    }

    /// Waits until the socket accepts, the pool has all its workers and
    /// `workers_ok` accepts the current worker pids.
    fn wait_ready(&mut self, workers_ok: impl Fn(&[u32]) -> bool) -> Result<()> {
        let timeout = self.config.ready_timeout;
        let deadline = Instant::now() + timeout;
        let wanted = self.config.workers as usize;
        loop {
            let address = self.address.to_upstream_string();
            let dir = self.dir.path();
            crate::process::ensure_running(&mut self.leader, &self.binary, &address, || {
                Self::log_tail_in(dir)
            })?;
            let workers = self.worker_pids()?;
            if workers.len() >= wanted
                && workers_ok(&workers)
                && self.address.connect(POLL_INTERVAL).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::NotReady {
                    binary: self.binary.clone(),
                    address: self.address.to_upstream_string(),
                    timeout_ms: timeout.as_millis(),
                    log_tail: self.log_tail(),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn log_tail(&self) -> String {
        Self::log_tail_in(self.dir.path())
    }

    /// The end of the logs in `dir`: a function of the directory alone, so it can be
    /// called while another field of `self` is borrowed mutably.
    fn log_tail_in(dir: &Path) -> String {
        log_tail(
            &[&dir.join(LOG_FILE), &dir.join(STDERR_FILE)],
            LOG_TAIL_LINES,
        )
    }
}

impl Drop for Fpm {
    fn drop(&mut self) {
        // Nothing sensible can be done with an error while dropping.
        let _ = self.kill();
    }
}

pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) fn write_file(path: &Path, content: &str) -> Result<()> {
    fs::write(path, content).map_err(|source| HarnessError::WriteFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Double-quotes a path for FPM's ini-style configuration.
fn quote(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// Rounds up to whole seconds (FPM's smallest unit).
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_rounds_up_fractions() {
        assert_eq!(whole_seconds(Duration::from_millis(0)), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(2000)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn rendered_pool_is_static_with_configured_workers_and_values() {
        let config = FpmConfig::new()
            .workers(3)
            .max_requests(7)
            .php_admin_value("memory_limit", "64M")
            .php_admin_value("output_buffering", "4096");
        let conf = config.render_php_fpm_conf(
            Path::new("/tmp/x"),
            &FpmAddress::Unix(PathBuf::from("/tmp/x/php-fpm.sock")),
        );
        assert!(conf.contains("pm = static\n"));
        assert!(conf.contains("pm.max_children = 3\n"));
        assert!(conf.contains("pm.max_requests = 7\n"));
        assert!(conf.contains("listen = \"/tmp/x/php-fpm.sock\"\n"));
        assert!(conf.contains("pm.status_path = /fpm-status\n"));
        assert!(conf.contains("ping.path = /fpm-ping\nping.response = pong\n"));
        assert!(conf.contains("php_admin_value[memory_limit] = 64M\n"));
        assert!(conf.contains("php_admin_value[output_buffering] = 4096\n"));
        assert!(!conf.contains("php_admin_value[output_buffering] = 0\n"));
    }

    #[test]
    fn config_with_newline_in_value_is_rejected() {
        let config = FpmConfig::new().php_admin_value("memory_limit", "1\nlisten = x");
        assert!(matches!(
            config.validate(),
            Err(HarnessError::InvalidConfig(_))
        ));
    }

    #[test]
    fn zero_workers_is_rejected() {
        assert!(FpmConfig::new().workers(0).validate().is_err());
    }
}
