//! A private PostgreSQL server for one test: its own cluster in a temporary directory,
//! reachable on a Unix socket only, with durability off (`fsync=off`) since the data dies
//! with the test.
//!
//! `initdb` refuses to run as root, so when the test runs as root the cluster directory
//! is given to the `postgres` user and both `initdb` and `postgres` run through
//! `runuser -u postgres --`. [`Postgres::stop`] and [`Postgres::start_again`] take the
//! server down and up on the same data and socket, for outage tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::database;
use crate::error::{HarnessError, Result};
use crate::net::free_port;

/// How long a start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped, between [`Postgres::stop`] and [`Postgres::start_again`])
/// private PostgreSQL server. Dropping it stops the server and removes its files.
#[derive(Debug)]
pub struct Postgres {
    /// `initdb` and `postgres` live here.
    bin_dir: PathBuf,
    /// Holds `data/` (the cluster), the socket and `postgres.log`.
    dir: tempfile::TempDir,
    /// The port: with a Unix socket it only names the socket file `.s.PGSQL.<port>`.
    port: u16,
    /// Whether to run as the `postgres` user (we are root).
    as_postgres: bool,
    /// The server process (or `runuser` in front of it).
    child: Option<Child>,
}

/// Where `initdb` and `postgres` are: the newest `/usr/lib/postgresql/*/bin` (Debian's
/// layout), then the directory of `initdb` on `$PATH`.
pub fn postgres_bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            return Ok(dir);
        }
    }
    Err(HarnessError::InvalidConfig(
        "PostgreSQL not found (looked at /usr/lib/postgresql/*/bin and $PATH for initdb and \
         postgres); run scripts/ensure-php-fpm.sh --with-postgres to install it"
            .to_owned(),
    ))
}

impl Postgres {
    /// Creates a cluster (user `postgres`, trust authentication, socket only) and starts it.
    pub fn start() -> Result<Postgres> {
        let bin_dir = postgres_bin_dir()?;
        let (dir, as_postgres) =
            database::server_dir("pg", "a PostgreSQL cluster", "postgres", "PostgreSQL")?;
        let mut pg = Postgres {
            bin_dir,
            dir,
            port: free_port(),
            as_postgres,
            child: None,
        };
        let data = pg.data_dir();
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let output = initdb.output().map_err(|source| HarnessError::Spawn {
            binary: pg.bin_dir.join("initdb"),
            source,
        })?;
        if !output.status.success() {
            return Err(HarnessError::ExitedEarly {
                binary: pg.bin_dir.join("initdb"),
                status: output.status.to_string(),
                address: data.display().to_string(),
                log_tail: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        pg.start_again()?;
        Ok(pg)
    }

    /// The directory holding the socket (libpq's `host=`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The socket file itself, `<socket_dir>/.s.PGSQL.<port>` (for a relay).
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join(format!(".s.PGSQL.{}", self.port))
    }

    /// The port, which names the socket file.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq connection string for database `postgres` as user `postgres`.
    pub fn conn_string(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.path().display(),
            self.port
        )
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn command(&self, program: &str) -> Command {
        let binary = self.bin_dir.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        }
    }

    /// Starts the server on the existing cluster and waits until it accepts
    /// connections. A no-op when it runs.
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|source| HarnessError::WriteFile {
                path: self.log_path(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| HarnessError::WriteFile {
            path: self.log_path(),
            source,
        })?;
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg("listen_addresses=")
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = command.spawn().map_err(|source| HarnessError::Spawn {
            binary: self.bin_dir.join("postgres"),
            source,
        })?;
        self.child = Some(child);
        let (data, socket, log) = (self.data_dir(), self.socket_path(), self.log_path());
        let waited = database::wait_until_ready(
            &mut self.child,
            || is_ready(&data, &socket),
            &self.bin_dir.join("postgres"),
            &socket,
            &log,
            START_TIMEOUT,
        );
        if waited.is_err() {
            let _ = self.stop();
        }
        waited
    }

    /// The postmaster's pid, from its pid file.
    fn postmaster_pid(&self) -> Option<i32> {
        fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops the server (fast shutdown: sessions are cut, nothing is lost) and waits
    /// for it to exit. The cluster stays for [`start_again`](Self::start_again).
    pub fn stop(&mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        // Signal the postmaster itself: with `runuser` in front, the child is runuser.
        let pid = self.postmaster_pid().unwrap_or(child.id() as i32);
        database::stop_server(child, pid, libc::SIGINT, "SIGINT", START_TIMEOUT)?;
        let deadline = Instant::now() + START_TIMEOUT;
        // The pid file goes last; wait so a restart does not see the old one.
        while self.data_dir().join("postmaster.pid").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Whether `postmaster.pid` in `data` says "ready" and the socket exists.
fn is_ready(data: &Path, socket: &Path) -> bool {
    let pid_file = fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
    pid_file.lines().nth(7).is_some_and(|s| s.trim() == "ready") && socket.exists()
}
