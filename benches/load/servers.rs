//! The servers under test, each started with its own identical PHP-FPM pool (static, 4
//! workers, TCP loopback) so one server's idle kept connections cannot starve another:
//! the gateway, nginx with and without upstream keep-alive, and Caddy.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use fpm_harness::{fixtures_dir, free_port, Fpm, FpmConfig, Nginx};
use tempfile::TempDir;

/// PHP-FPM workers behind every server (`pm = static`).
pub const FPM_WORKERS: u32 = 4;
/// How long a server may take to accept connections (10,000 tenants take a moment).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server, configured how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The gateway with its shipped defaults (access log on, to a file).
    Gateway,
    /// The gateway with `RUST_LOG=warn`: no access log.
    GatewayQuiet,
    /// The gateway with `worker_threads = 1`: one runtime thread, as nginx has one
    /// worker here.
    GatewayOneThread,
    /// The gateway with tenant A capped at `max_concurrency = 3`: one PHP-FPM worker
    /// always left for the other tenants (fairness scenario only).
    GatewayCapped,
    /// nginx, one worker, `fastcgi_keep_conn on`, upstream `keepalive 4`.
    NginxKeepalive,
    /// nginx, one worker, a new FastCGI connection per request (its default).
    NginxPlain,
    /// Caddy's `php_fastcgi`.
    Caddy,
    /// The gateway compressing with gzip only (level 5), for the compressed-page row.
    GatewayGzip,
    /// nginx keepalive with `gzip on; gzip_comp_level 5`, the same level.
    NginxGzip,
    /// nginx with `sendfile on; tcp_nopush on`, as production configs have it (static
    /// file rows).
    NginxSendfile,
    /// nginx with `sendfile on; tcp_nopush on` and `worker_processes auto` (one per core,
    /// as Debian's `nginx.conf` has it): the peer of the gateway's default of one runtime
    /// thread per core (static file rows).
    NginxSendfileAuto,
    /// The gateway with one upstream of two PHP-FPM servers, half the workers each.
    GatewayTwoServers,
    /// nginx keepalive with an `upstream` of the same two servers.
    NginxTwoServers,
}

impl Kind {
    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Gateway => "gateway",
            Kind::GatewayQuiet => "gateway, access log off",
            Kind::GatewayOneThread => "gateway, worker_threads = 1",
            Kind::GatewayCapped => "gateway, A max_concurrency = 3",
            Kind::NginxKeepalive => "nginx keepalive",
            Kind::NginxPlain => "nginx no keepalive",
            Kind::Caddy => "caddy",
            Kind::GatewayGzip => "gateway, gzip 5",
            Kind::NginxGzip => "nginx keepalive, gzip 5",
            Kind::NginxSendfile => "nginx, sendfile on",
            Kind::NginxSendfileAuto => "nginx, sendfile on, worker_processes auto",
            Kind::GatewayTwoServers => "gateway, upstream of 2 servers × 2 workers",
            Kind::NginxTwoServers => "nginx keepalive, upstream of 2 servers × 2 workers",
        }
    }

    /// A stable identifier for JSON and file names.
    pub fn id(self) -> &'static str {
        match self {
            Kind::Gateway => "gateway",
            Kind::GatewayQuiet => "gateway_quiet",
            Kind::GatewayOneThread => "gateway_one_thread",
            Kind::GatewayCapped => "gateway_capped",
            Kind::NginxKeepalive => "nginx_keepalive",
            Kind::NginxPlain => "nginx_plain",
            Kind::Caddy => "caddy",
            Kind::GatewayGzip => "gateway_gzip",
            Kind::NginxGzip => "nginx_gzip",
            Kind::NginxSendfile => "nginx_sendfile",
            Kind::NginxSendfileAuto => "nginx_sendfile_auto",
            Kind::GatewayTwoServers => "gateway_two_servers",
            Kind::NginxTwoServers => "nginx_two_servers",
        }
    }
}

/// Tenants every gateway config has: the main load goes to `bench.test`, the fairness
/// scenario floods `a.test` and measures `b.test`.
pub const HOSTS: [(&str, &str); 3] = [("bench", "bench.test"), ("a", "a.test"), ("b", "b.test")];

/// A running server and the PHP-FPM pool behind it. Dropping it stops both.
pub struct Server {
    /// Which server.
    pub kind: Kind,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    /// Its own PHP-FPM pool.
    pub fpm: Fpm,
    /// A second pool, for the two-server rows.
    second_fpm: Option<Fpm>,
    process: Process,
    // Last: removed after the processes are gone.
    dir: TempDir,
}

/// The server's process: a child of the bench, or nginx under the harness.
pub enum Process {
    /// The gateway or Caddy.
    Child(Child),
    /// nginx.
    Nginx(Nginx),
}

impl Server {
    /// Starts a fresh PHP-FPM pool and `kind` in front of it, and checks that
    /// `hello.php` answers through it.
    pub fn start(kind: Kind, gateway_bin: &Path) -> Server {
        let server = Self::launch(kind, |upstream, dir| match kind {
            Kind::Gateway
            | Kind::GatewayQuiet
            | Kind::GatewayOneThread
            | Kind::GatewayCapped
            | Kind::GatewayGzip => {
                let port = free_port();
                let tenants = default_tenants(kind == Kind::GatewayCapped);
                let threads = match kind {
                    Kind::GatewayOneThread => "worker_threads = 1\n",
                    Kind::GatewayGzip => "compression = [\"gzip\"]\n",
                    _ => "",
                };
                let config = gateway_config(port, upstream, threads, &tenants);
                let quiet = kind == Kind::GatewayQuiet;
                (port, spawn_gateway(gateway_bin, dir, &config, quiet))
            }
            Kind::NginxKeepalive | Kind::NginxPlain | Kind::NginxGzip => {
                let mut config = nginx_config(upstream, kind != Kind::NginxPlain);
                if kind == Kind::NginxGzip {
                    // The gateway's level and minimum; text/html is always in gzip_types.
                    config.insert_str(0, "gzip on;\ngzip_comp_level 5;\ngzip_min_length 1024;\n");
                }
                let nginx = Nginx::start(&config).expect("cannot start nginx");
                (nginx.port(), Process::Nginx(nginx))
            }
            Kind::Caddy => {
                let port = free_port();
                (port, spawn_caddy(dir, port, upstream))
            }
            Kind::NginxSendfile
            | Kind::NginxSendfileAuto
            | Kind::GatewayTwoServers
            | Kind::NginxTwoServers => {
                panic!("{kind:?} is started by its own constructor")
            }
        });
        server.check_hello("bench.test");
        server
    }

    /// Starts `kind` (the gateway with its default threads or one, or nginx with
    /// `sendfile on; tcp_nopush on` and one worker or one per core) serving static files
    /// from `root`, and checks that `probe` answers 200.
    pub fn start_static(kind: Kind, gateway_bin: &Path, root: &Path, probe: &str) -> Server {
        let server = Self::launch(kind, |upstream, dir| match kind {
            Kind::Gateway | Kind::GatewayOneThread => {
                let port = free_port();
                let threads = if kind == Kind::GatewayOneThread {
                    "worker_threads = 1\n"
                } else {
                    ""
                };
                let config = gateway_config(port, upstream, threads, &default_tenants(false))
                    .replace(
                        &fixtures_dir().display().to_string(),
                        &root.display().to_string(),
                    );
                (port, spawn_gateway(gateway_bin, dir, &config, false))
            }
            Kind::NginxSendfile | Kind::NginxSendfileAuto => {
                let config = format!(
                    "sendfile on;\ntcp_nopush on;\n{}",
                    nginx_config(upstream, true)
                )
                .replace("{{FIXTURES}}", &root.display().to_string());
                let workers = if kind == Kind::NginxSendfileAuto {
                    "auto"
                } else {
                    "1"
                };
                let nginx =
                    Nginx::start_with_workers(&config, workers).expect("cannot start nginx");
                (nginx.port(), Process::Nginx(nginx))
            }
            other => panic!("{other:?} does not serve the static rows"),
        });
        let (status, _) = http_get(server.port, "bench.test", probe)
            .unwrap_or_else(|err| panic!("{}: GET {probe} failed: {err}", kind.label()));
        assert_eq!(
            status,
            200,
            "{}: GET {probe}\n{}",
            kind.label(),
            server.log_tail()
        );
        server
    }

    /// Starts `kind` in front of two PHP-FPM servers of half the workers each: the
    /// gateway with an `[upstreams]` table of both, nginx with an `upstream` of both.
    pub fn start_two_servers(kind: Kind, gateway_bin: &Path) -> Server {
        let second =
            Fpm::start(FpmConfig::new().workers(FPM_WORKERS / 2)).expect("cannot start php-fpm");
        let second_address = second.address().to_upstream_string();
        let half = FPM_WORKERS / 2;
        let mut server = Self::launch_with(
            kind,
            FpmConfig::new().workers(half),
            |upstream, dir| match kind {
                Kind::GatewayTwoServers => {
                    let port = free_port();
                    let mut tenants = format!(
                        "[upstreams.main]\nservers = [\n  \
                         {{ address = \"{upstream}\", max_connections = {half} }},\n  \
                         {{ address = \"{second_address}\", max_connections = {half} }},\n]\n\n\
                         [defaults]\nupstream = \"main\"\n\n"
                    );
                    tenants.push_str(&default_tenants(false));
                    let config = gateway_config(port, upstream, "", &tenants);
                    (port, spawn_gateway(gateway_bin, dir, &config, false))
                }
                Kind::NginxTwoServers => {
                    let config = nginx_config(upstream, true).replace(
                        &format!("    server {upstream};\n"),
                        &format!("    server {upstream};\n    server {second_address};\n"),
                    );
                    let nginx = Nginx::start(&config).expect("cannot start nginx");
                    (nginx.port(), Process::Nginx(nginx))
                }
                other => panic!("{other:?} is no two-server row"),
            },
        );
        server.second_fpm = Some(second);
        server.check_hello("bench.test");
        server
    }

    /// Starts the gateway with a config of `tenants` (name, host, params block) in front
    /// of a fresh PHP-FPM pool.
    pub fn start_gateway_with(gateway_bin: &Path, tenants: &str) -> Server {
        Self::launch(Kind::Gateway, |upstream, dir| {
            let port = free_port();
            let config = gateway_config(port, upstream, "", tenants);
            (port, spawn_gateway(gateway_bin, dir, &config, false))
        })
    }

    /// Starts a fresh PHP-FPM pool and, with `spawn` (given the pool's address and a
    /// scratch directory), the server in front of it; waits until that server accepts.
    pub fn launch(kind: Kind, spawn: impl FnOnce(&str, &Path) -> (u16, Process)) -> Server {
        Self::launch_with(kind, FpmConfig::new().workers(FPM_WORKERS), spawn)
    }

    fn launch_with(
        kind: Kind,
        fpm: FpmConfig,
        spawn: impl FnOnce(&str, &Path) -> (u16, Process),
    ) -> Server {
        let fpm = Fpm::start(fpm).expect("cannot start php-fpm");
        let upstream = fpm.address().to_upstream_string();
        let dir = tempfile::Builder::new()
            .prefix("load-bench-")
            .tempdir()
            .expect("cannot create a temp dir");
        let (port, process) = spawn(&upstream, dir.path());
        let mut server = Server {
            kind,
            port,
            fpm,
            second_fpm: None,
            process,
            dir,
        };
        server.wait_ready();
        server
    }

    /// The pid whose process tree is the server (nginx: the master).
    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Child(child) => child.id(),
            Process::Nginx(nginx) => nginx.master_pid().expect("nginx is running"),
        }
    }

    /// The pid of the PHP-FPM master behind it.
    pub fn fpm_pid(&self) -> u32 {
        self.fpm.master_pid().expect("php-fpm is running")
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Panics unless `GET /hello.php` with `host` answers 200 and the fixture's body.
    pub fn check_hello(&self, host: &str) {
        let (status, body) = http_get(self.port, host, "/hello.php")
            .unwrap_or_else(|err| panic!("{}: GET /hello.php failed: {err}", self.kind.label()));
        assert!(
            status == 200 && body.contains("Hello, World!"),
            "{}: GET /hello.php answered {status}: {body}\n{}",
            self.kind.label(),
            self.log_tail()
        );
    }

    fn wait_ready(&mut self) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Process::Child(child) = &mut self.process {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{} exited at start ({status}):\n{}",
                        self.kind.label(),
                        self.log_tail()
                    );
                }
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen on {addr} after {READY_TIMEOUT:?}:\n{}",
                self.kind.label(),
                self.log_tail()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the server's own log, for error messages.
    fn log_tail(&self) -> String {
        let path = match &self.process {
            Process::Child(_) => log_path(self.dir.path()),
            Process::Nginx(nginx) => nginx.dir().join("error.log"),
        };
        let text = fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Process::Child(child) = &mut self.process {
            let _ = child.kill();
            let _ = child.wait();
        }
        // nginx and php-fpm kill their process groups when dropped.
    }
}

/// A `[tenants.NAME]` table like the demo's: six params of realistic size.
pub fn tenant_table(out: &mut String, name: &str, host: &str) {
    let _ = writeln!(
        out,
        "[tenants.{name}]\n\
         hosts = [\"{host}\"]\n\
         params = {{ DBHOST = \"10.200.16.27\", DBNAME = \"moodle_{name}\", DBUSER = \"moodle\", \
         DBPASS = \"secret-{name}\", WWWROOT = \"https://{host}\", DATAROOT = \"/moodledata/{name}\" }}\n"
    );
}

/// The [`HOSTS`] tenants; with `cap_a`, tenant `a` may hold at most 3 of the 4
/// PHP-FPM connections.
fn default_tenants(cap_a: bool) -> String {
    let mut out = String::new();
    for (name, host) in HOSTS {
        tenant_table(&mut out, name, host);
        if cap_a && name == "a" {
            // Still inside `[tenants.a]`: the next table header comes after it.
            out.insert_str(out.trim_end().len(), "\nmax_concurrency = 3");
        }
    }
    out
}

/// The gateway's `tenants.toml`: shipped defaults except the pool size, which matches
/// PHP-FPM's workers.
pub fn gateway_config(port: u16, upstream: &str, server_extra: &str, tenants: &str) -> String {
    format!(
        "[server]\n\
         listen = \"127.0.0.1:{port}\"\n\
         {server_extra}\n\
         [fastcgi]\n\
         upstream = \"{upstream}\"\n\
         root = \"{root}\"\n\
         max_connections = {FPM_WORKERS}\n\n\
         {tenants}",
        root = fixtures_dir().display(),
    )
}

pub fn spawn_gateway(bin: &Path, dir: &Path, config: &str, quiet: bool) -> Process {
    let config_path = dir.join("tenants.toml");
    fs::write(&config_path, config).expect("cannot write the gateway config");
    let mut command = Command::new(bin);
    command.arg("serve").arg("--config").arg(&config_path);
    if quiet {
        command.env("RUST_LOG", "warn");
    } else {
        command.env_remove("RUST_LOG");
    }
    Process::Child(spawn_logged(command, dir))
}

fn spawn_caddy(dir: &Path, port: u16, upstream: &str) -> Process {
    run_caddy(dir, &format!(":{port}"), "", upstream)
}

/// Caddy serving `site` (`:PORT`, `https://:PORT`) with `php_fastcgi` to `upstream`, and
/// `directives` (whole lines) in the site block.
pub fn run_caddy(dir: &Path, site: &str, directives: &str, upstream: &str) -> Process {
    let caddyfile = dir.join("Caddyfile");
    let config = format!(
        "{{\n\
         \tadmin off\n\
         \tauto_https off\n\
         }}\n\
         {site} {{\n\
         \tbind 127.0.0.1\n\
         {directives}\
         \troot * {root}\n\
         \tphp_fastcgi {upstream}\n\
         }}\n",
        root = fixtures_dir().display(),
    );
    fs::write(&caddyfile, config).expect("cannot write the Caddyfile");
    let mut command = Command::new("caddy");
    command
        .arg("run")
        .arg("--config")
        .arg(&caddyfile)
        .arg("--adapter")
        .arg("caddyfile")
        // Caddy keeps state under $HOME / XDG dirs: keep it in the temp dir.
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"));
    Process::Child(spawn_logged(command, dir))
}

/// Where a spawned server's stdout and stderr go. Not next to the config: the gateway
/// watches its config's directory, and a log written there would wake the watcher on
/// every access-log line (a real cost, but one of placement, not of serving).
fn log_path(dir: &Path) -> PathBuf {
    dir.join("log").join("server.log")
}

/// Spawns `command` in its own process group with stdout and stderr to [`log_path`].
fn spawn_logged(mut command: Command, dir: &Path) -> Child {
    let log_path = log_path(dir);
    fs::create_dir_all(dir.join("log")).expect("cannot create the log directory");
    let log = File::create(&log_path).expect("cannot create the server log");
    let log2 = log.try_clone().expect("cannot duplicate the log handle");
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"))
}

/// nginx as the issue describes it: one worker (the harness's), access log off (the
/// harness's), and with `keepalive` FastCGI connections kept to PHP-FPM.
pub fn nginx_config(upstream: &str, keepalive: bool) -> String {
    let (upstream_block, pass, keep) = if keepalive {
        (
            format!("upstream php_fpm {{\n    server {upstream};\n    keepalive 4;\n}}\n"),
            "php_fpm".to_owned(),
            "fastcgi_keep_conn on;",
        )
    } else {
        (String::new(), upstream.to_owned(), "")
    };
    format!(
        "{upstream_block}\
         server {{\n\
         \x20   listen 127.0.0.1:{{{{PORT}}}} default_server;\n\
         \x20   server_name _;\n\
         \x20   root {{{{FIXTURES}}}};\n\
         \x20   location ~ \\.php$ {{\n\
         \x20       include {{{{FASTCGI_PARAMS}}}};\n\
         \x20       fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n\
         \x20       fastcgi_pass {pass};\n\
         \x20       {keep}\n\
         \x20   }}\n\
         }}\n"
    )
}

/// A one-shot HTTP/1.1 GET (`Connection: close`): status and body (chunk sizes and all;
/// callers only look for a substring).
pub fn http_get(port: u16, host: &str, path: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|err| format!("connect: {err}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|err| err.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|err| format!("write: {err}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|err| format!("read: {err}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}
