//! A private MariaDB server for one test (Debian's `mariadb-server`): its own data
//! directory in a temporary directory, reachable on a Unix socket there only
//! (`skip-networking`), with durability off since the data dies with the test.
//!
//! `mariadbd` refuses to run as root, so when the test runs as root the directory is given
//! to the `mysql` user and both `mariadb-install-db` and `mariadbd` get `--user=mysql`
//! (the server drops to that user itself, so it stays our direct child and a signal to it
//! reaches the server). `root@localhost` has an empty password on this private server;
//! [`MariaDb::create_database`] adds a database and its own user for each tenant.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::database;
use crate::error::{HarnessError, Result};

/// How long a start (or a clean shutdown) may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The socket's file name in the server's directory.
const SOCKET_FILE: &str = "mariadb.sock";

/// The error log's file name in the server's directory.
const LOG_FILE: &str = "mariadb.log";

/// Where the three MariaDB programs the harness runs are.
#[derive(Debug, Clone)]
pub struct MariaDbBinaries {
    /// The server, `mariadbd` (or `mysqld` on older systems).
    pub server: PathBuf,
    /// The data directory initialiser, `mariadb-install-db` (or `mysql_install_db`).
    pub install_db: PathBuf,
    /// The command-line client, `mariadb` (or `mysql`), for the setup statements.
    pub client: PathBuf,
}

/// Finds `mariadbd`, `mariadb-install-db` and `mariadb` in `/usr/sbin`, `/usr/bin`
/// (Debian's layout) and `$PATH`, each also under its older `mysql` name.
pub fn mariadb_binaries() -> Result<MariaDbBinaries> {
    let mut dirs = vec![PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            dirs.iter()
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
    };
    match (
        find(&["mariadbd", "mysqld"]),
        find(&["mariadb-install-db", "mysql_install_db"]),
        find(&["mariadb", "mysql"]),
    ) {
        (Some(server), Some(install_db), Some(client)) => Ok(MariaDbBinaries {
            server,
            install_db,
            client,
        }),
        _ => Err(HarnessError::MariaDbNotFound {
            searched: "mariadbd, mariadb-install-db and mariadb (or their mysql names) in \
                       /usr/sbin, /usr/bin and $PATH"
                .to_owned(),
        }),
    }
}

/// A running private MariaDB server. Dropping it shuts the server down cleanly and
/// removes its files.
#[derive(Debug)]
pub struct MariaDb {
    /// The programs it was started with.
    binaries: MariaDbBinaries,
    /// Holds `data/`, the socket and the error log.
    dir: tempfile::TempDir,
    /// `Some("mysql")` when we are root: the server and its files belong to that user.
    run_as: Option<&'static str>,
    /// The server process.
    child: Option<Child>,
}

impl MariaDb {
    /// Initialises a data directory and starts the server on it, waiting until it
    /// accepts connections on its socket.
    pub fn start() -> Result<MariaDb> {
        let binaries = mariadb_binaries()?;
        let (dir, as_mysql) =
            database::server_dir("mariadb", "a MariaDB server", "mysql", "MariaDB")?;
        // Readable for all, so a PHP-FPM running as another user reaches the socket.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).map_err(|source| {
            HarnessError::WriteFile {
                path: dir.path().to_path_buf(),
                source,
            }
        })?;
        let run_as = as_mysql.then_some("mysql");
        let mut db = MariaDb {
            binaries,
            dir,
            run_as,
            child: None,
        };
        db.install()?;
        db.spawn()?;
        Ok(db)
    }

    /// The server's Unix socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join(SOCKET_FILE)
    }

    /// The host as PHP's `mysqli` (and WordPress's `DB_HOST`) takes it for this socket:
    /// `localhost:/path/to/socket`.
    pub fn php_host(&self) -> String {
        format!("localhost:{}", self.socket_path().display())
    }

    /// The server's error log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// Creates database `name` and user `user`@`localhost` with `password`, allowed
    /// everything on that database only. Names are letters, digits and `_`; the password
    /// has no quote or backslash (the statements are built as text).
    pub fn create_database(&self, name: &str, user: &str, password: &str) -> Result<()> {
        let plain =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain(name) || !plain(user) || password.contains(['\'', '\\', '\0']) {
            return Err(HarnessError::InvalidConfig(format!(
                "MariaDB database {name:?} / user {user:?}: names are letters, digits and _, \
                 and the password has no quote or backslash"
            )));
        }
        self.sql(&format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4; \
             CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'; \
             GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'localhost';"
        ))
    }

    /// Runs `statements` as `root` through the command-line client.
    pub fn sql(&self, statements: &str) -> Result<()> {
        let mut client = Command::new(&self.binaries.client);
        client
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket_path().display()))
            .args(["--user=root", "--batch", "--execute"])
            .arg(statements)
            .stdin(Stdio::null());
        run(&mut client, &self.binaries.client)
    }

    /// Stops the server (SIGTERM: a clean shutdown) and waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id() as libc::pid_t;
        database::stop_server(child, pid, libc::SIGTERM, "SIGTERM", START_TIMEOUT)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `mariadb-install-db`: the system tables, `root@localhost` with an empty password,
    /// no test database.
    fn install(&self) -> Result<()> {
        let mut install = Command::new(&self.binaries.install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .stdin(Stdio::null());
        if let Some(user) = self.run_as {
            install.arg(format!("--user={user}"));
        }
        run(&mut install, &self.binaries.install_db)
    }

    /// Starts `mariadbd` and waits for its socket to answer with a greeting.
    fn spawn(&mut self) -> Result<()> {
        let mut server = Command::new(&self.binaries.server);
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!("--socket={}", self.socket_path().display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mariadb.pid").display()
            ))
            .arg(format!("--log-error={}", self.log_path().display()))
            .args([
                "--skip-networking",
                "--skip-name-resolve",
                "--skip-log-bin",
                // Small and fast: the data dies with the test.
                "--innodb-buffer-pool-size=32M",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-doublewrite=0",
                // Containers often refuse io_setup/io_uring.
                "--innodb-use-native-aio=0",
                "--max-connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = self.run_as {
            server.arg(format!("--user={user}"));
        }
        let child = server.spawn().map_err(|source| HarnessError::Spawn {
            binary: self.binaries.server.clone(),
            source,
        })?;
        self.child = Some(child);
        let (socket, log) = (self.socket_path(), self.log_path());
        let waited = database::wait_until_ready(
            &mut self.child,
            || greets(&socket),
            &self.binaries.server,
            &socket,
            &log,
            START_TIMEOUT,
        );
        if waited.is_err() {
            let _ = self.stop();
        }
        waited
    }
}

/// Whether `socket` accepts a connection and the server sends its first packet.
fn greets(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).is_ok()
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Runs a setup command to its end; a failure carries what it printed.
fn run(command: &mut Command, binary: &Path) -> Result<()> {
    let output = command.output().map_err(|source| HarnessError::Spawn {
        binary: binary.to_path_buf(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(HarnessError::CommandFailed {
        binary: binary.to_path_buf(),
        status: output.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}
