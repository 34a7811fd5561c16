//! Deploying the gateway: the Debian package (built with cargo-deb from the binary this
//! test run built, installed with dpkg, its units checked by `systemd-analyze verify`),
//! the installed binary started by `systemd-socket-activate`, and restarts under load
//! (wrk, 32 connections) that fail no request: by socket activation (this test holds
//! the listening socket, as systemd does) and by the takeover path (no systemd).
//!
//! Each test says why it skips when a tool it needs (cargo-deb, dpkg as root,
//! systemd-socket-activate, systemd-analyze, wrk) is absent;
//! `scripts/ensure-php-fpm.sh --with-deploy` installs them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fpm_harness::{fixtures_dir, Fpm, FpmConfig};

/// The host the test tenant serves.
const HOST: &str = "deploy.test";
/// Restarts under load per path.
const RESTARTS: usize = 20;
/// Bound for a gateway to start or to finish draining on a busy 2-core machine.
const PROCESS_LIMIT: Duration = Duration::from_secs(20);

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why} (scripts/ensure-php-fpm.sh --with-deploy installs it)");
}

/// `name` on PATH (or `~/.cargo/bin` for cargo subcommands), if installed.
fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME").or_else(|| {
        std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo").into_os_string())
    }) {
        dirs.push(Path::new(&home).join("bin"));
    }
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A private PHP-FPM serving the fixture scripts.
fn start_fpm() -> Fpm {
    Fpm::start(FpmConfig::new().workers(4))
        .expect("php-fpm starts (is php-fpm installed? see scripts/ensure-php-fpm.sh)")
}

/// A config serving [`HOST`] from the fixtures through `fpm`, listening on `listen`,
/// with `extra` lines in `[server]`.
fn write_config(dir: &Path, listen: SocketAddr, fpm: &Fpm, extra: &str) -> PathBuf {
    let root = toml::Value::from(fixtures_dir().display().to_string());
    let upstream = toml::Value::from(fpm.address().to_upstream_string());
    let text = format!(
        "[server]\nlisten = \"{listen}\"\ndrain_settle = \"500ms\"\n{extra}\n\n\
         [fastcgi]\nupstream = {upstream}\nroot = {root}\nmax_connections = 4\n\n\
         [tenants.deploy]\nhosts = [\"{HOST}\"]\n"
    );
    let path = dir.join("tenants.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

/// One `GET /hello.php` on a fresh connection: the status line and the body. Retries
/// the connect while nothing listens yet (systemd-socket-activate starting).
fn get_hello(addr: SocketAddr) -> (String, String) {
    let deadline = Instant::now() + PROCESS_LIMIT;
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Err(err)
                if err.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            connected => break connected.expect("connect to the gateway"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("set a read timeout");
    write!(stream, "GET /hello.php HTTP/1.0\r\nHost: {HOST}\r\n\r\n").expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let status = answer.lines().next().unwrap_or_default().to_owned();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The `NOTIFY_SOCKET` the gateways of a test report to, as systemd's would be.
struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket { path, socket }
    }

    /// Waits for `READY=1` from process `pid` (its `MAINPID=`); returns every message
    /// seen meanwhile.
    fn wait_ready(&self, pid: u32) -> Vec<String> {
        let deadline = Instant::now() + PROCESS_LIMIT;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            self.socket
                .set_read_timeout(Some(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ))
                .expect("set a timeout");
            let Ok(n) = self.socket.recv(&mut buf) else {
                break;
            };
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let lines: Vec<&str> = message.lines().collect();
            let ready =
                lines.contains(&"READY=1") && lines.contains(&format!("MAINPID={pid}").as_str());
            seen.push(message);
            if ready {
                return seen;
            }
        }
        panic!("no READY=1 from process {pid} within {PROCESS_LIMIT:?}; got {seen:?}");
    }

    /// Every message that arrives within `window`.
    fn collect(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set a timeout");
            match self.socket.recv(&mut buf) {
                Ok(n) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => break,
            }
        }
        seen
    }
}

/// A gateway process, killed when dropped; its stderr goes to a log file.
struct GatewayProcess {
    child: Child,
    log: PathBuf,
}

impl GatewayProcess {
    /// Starts `binary serve --config config` (plus `args`), reporting to `notify`. With
    /// `listener`, the process gets it as descriptor 3 with `LISTEN_FDS=1` and
    /// `LISTEN_PID` set to its own pid, the way systemd passes a socket.
    fn start(
        binary: &Path,
        config: &Path,
        args: &[&str],
        notify: &NotifySocket,
        listener: Option<&TcpListener>,
        log: PathBuf,
    ) -> GatewayProcess {
        Self::spawn(binary, config, args, notify, listener, log, &[])
    }

    /// [`start`](Self::start) without arguments and with `env` added.
    fn start_with_env(
        binary: &Path,
        config: &Path,
        notify: &NotifySocket,
        listener: Option<&TcpListener>,
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> GatewayProcess {
        Self::spawn(binary, config, &[], notify, listener, log, env)
    }

    fn spawn(
        binary: &Path,
        config: &Path,
        args: &[&str],
        notify: &NotifySocket,
        listener: Option<&TcpListener>,
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> GatewayProcess {
        let stderr = std::fs::File::create(&log).expect("create the log file");
        let mut command = match listener {
            // `$$` is the shell's pid, which `exec` hands to the gateway.
            Some(_) => {
                let mut command = Command::new("/bin/sh");
                command
                    .arg("-c")
                    .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
                    .arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("NOTIFY_SOCKET", &notify.path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(listener) = listener {
            let fd = listener.as_raw_fd();
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if fd == 3 {
                        let flags = libc::fcntl(3, libc::F_GETFD);
                        if libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1 {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(fd, 3) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("start the gateway");
        GatewayProcess { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Waits for the process to exit on its own; panics with its log after the limit.
    fn wait_exit(&mut self) {
        let deadline = Instant::now() + PROCESS_LIMIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for the gateway") {
                assert!(
                    status.success(),
                    "gateway exited with {status}; log:\n{}",
                    self.log_text()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "gateway did not exit within {PROCESS_LIMIT:?}; log:\n{}",
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// wrk's totals.
#[derive(Debug)]
struct WrkTotals {
    requests: u64,
    socket_errors: u64,
    non_2xx_3xx: u64,
    output: String,
}

/// wrk with 32 connections on `/hello.php` at `addr`, until [`Wrk::stop`].
struct Wrk(Child);

impl Wrk {
    fn start(wrk: &Path, addr: SocketAddr) -> Wrk {
        let child = Command::new(wrk)
            .args(["-t2", "-c32", "-d300s", "--timeout", "10s", "-H"])
            .arg(format!("Host: {HOST}"))
            .arg(format!("http://{addr}/hello.php"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wrk");
        Wrk(child)
    }

    /// Stops wrk (SIGINT: it prints its totals) and reads them.
    fn stop(mut self) -> WrkTotals {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGINT) };
        let mut output = String::new();
        if let Some(mut stdout) = self.0.stdout.take() {
            stdout
                .read_to_string(&mut output)
                .expect("read wrk's output");
        }
        let _ = self.0.wait();
        let number_before = |text: &str, marker: &str| -> Option<u64> {
            let at = text.find(marker)?;
            text[..at].split_whitespace().last()?.parse().ok()
        };
        let requests = number_before(&output, " requests in").unwrap_or(0);
        let socket_errors = output
            .lines()
            .find_map(|line| line.trim().strip_prefix("Socket errors:"))
            .map(|counts| {
                counts
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        let non_2xx_3xx = output
            .lines()
            .find_map(|line| line.trim().strip_prefix("Non-2xx or 3xx responses:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        WrkTotals {
            requests,
            socket_errors,
            non_2xx_3xx,
            output,
        }
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How one restart replaces the running gateway.
#[derive(Debug, Clone, Copy)]
enum Restart {
    /// The test holds the listening socket and passes it to every process, as systemd's
    /// socket unit does.
    SocketActivation,
    /// Each new process takes the sockets over from the running one
    /// (`serve --takeover`).
    Takeover,
}

/// Serves `/hello.php` under wrk while the gateway is replaced [`RESTARTS`] times the way
/// `how` says; returns wrk's totals.
fn restarts_under_load(how: Restart, wrk: &Path) -> WrkTotals {
    let fpm = start_fpm();
    let dir = tempfile::tempdir().expect("temp dir");
    let notify = NotifySocket::bind(dir.path());
    let binary = Path::new(env!("CARGO_BIN_EXE_gateway"));
    // Socket activation: the socket is the test's, created once. Takeover: the first
    // gateway binds the address itself.
    let held = TcpListener::bind("127.0.0.1:0").expect("bind a listening socket");
    let addr = held.local_addr().expect("its address");
    let (held, extra) = match how {
        Restart::SocketActivation => (Some(held), String::new()),
        Restart::Takeover => {
            drop(held);
            let socket = toml::Value::from(dir.path().join("takeover.sock").display().to_string());
            (None, format!("takeover_socket = {socket}"))
        }
    };
    let config = write_config(dir.path(), addr, &fpm, &extra);
    let log = |n: usize| dir.path().join(format!("gateway-{n}.log"));
    let mut current = GatewayProcess::start(binary, &config, &[], &notify, held.as_ref(), log(0));
    notify.wait_ready(current.pid());
    let (status, body) = get_hello(addr);
    assert!(
        status.contains(" 200 "),
        "{status}; log:\n{}",
        current.log_text()
    );
    assert_eq!(body, "Hello, World!");

    let load = Wrk::start(wrk, addr);
    std::thread::sleep(Duration::from_millis(500));
    for n in 1..=RESTARTS {
        match how {
            Restart::SocketActivation if n % 2 == 0 => {
                // As `systemctl restart`: stop the old one, then start the new one; new
                // connections wait in the socket's backlog meanwhile.
                current.signal(libc::SIGTERM);
                current.wait_exit();
                current =
                    GatewayProcess::start(binary, &config, &[], &notify, held.as_ref(), log(n));
                notify.wait_ready(current.pid());
            }
            Restart::SocketActivation => {
                // Start the new one on the same socket, then stop the old one.
                let next =
                    GatewayProcess::start(binary, &config, &[], &notify, held.as_ref(), log(n));
                notify.wait_ready(next.pid());
                current.signal(libc::SIGTERM);
                current.wait_exit();
                current = next;
            }
            Restart::Takeover => {
                let next =
                    GatewayProcess::start(binary, &config, &["--takeover"], &notify, None, log(n));
                notify.wait_ready(next.pid());
                // The old one drains and exits by itself.
                current.wait_exit();
                current = next;
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(500));
    let totals = load.stop();
    eprintln!(
        "{how:?}: {RESTARTS} restarts under wrk -t2 -c32: {} requests, {} socket errors, {} non-2xx/3xx\n{}",
        totals.requests, totals.socket_errors, totals.non_2xx_3xx, totals.output
    );
    // The last one still serves.
    let (status, _) = get_hello(addr);
    assert!(
        status.contains(" 200 "),
        "{status}; log:\n{}",
        current.log_text()
    );
    current.signal(libc::SIGTERM);
    current.wait_exit();
    totals
}

fn assert_nothing_failed(totals: &WrkTotals) {
    assert!(totals.requests > 0, "wrk sent nothing:\n{}", totals.output);
    assert_eq!(totals.socket_errors, 0, "{}", totals.output);
    assert_eq!(totals.non_2xx_3xx, 0, "{}", totals.output);
}

#[test]
fn twenty_restarts_by_socket_activation_under_load_fail_no_request() {
    let Some(wrk) = tool("wrk") else {
        return skip("restarts by socket activation", "wrk is not installed");
    };
    let totals = restarts_under_load(Restart::SocketActivation, &wrk);
    assert_nothing_failed(&totals);
}

#[test]
fn twenty_takeovers_without_systemd_under_load_fail_no_request() {
    let Some(wrk) = tool("wrk") else {
        return skip("restarts by takeover", "wrk is not installed");
    };
    let totals = restarts_under_load(Restart::Takeover, &wrk);
    assert_nothing_failed(&totals);
}

#[test]
fn a_takeover_without_a_takeover_socket_in_the_config_is_refused() {
    let fpm = start_fpm();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "127.0.0.1:0".parse().unwrap(), &fpm, "");
    let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["serve", "--takeover", "--config"])
        .arg(&config)
        .env("RUST_LOG", "off")
        .output()
        .expect("run the gateway");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("takeover_socket"), "{stderr}");
}

/// The installed package, purged when dropped (also when the test fails), so the
/// machine is left as it was.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let purge = Command::new("dpkg").args(["--purge", "gateway"]).output();
        if let Ok(output) = purge {
            if !output.status.success() {
                eprintln!(
                    "dpkg --purge gateway: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

#[test]
fn the_deb_installs_a_verified_socket_activated_service_that_serves_php() {
    const TEST: &str = "the .deb package";
    let Some(cargo_deb) = tool("cargo-deb") else {
        return skip(TEST, "cargo-deb is not installed");
    };
    if tool("dpkg").is_none() || !is_root() {
        return skip(TEST, "installing a .deb needs dpkg and root");
    }
    let installed_before = Command::new("dpkg")
        .args(["-s", "gateway"])
        .output()
        .is_ok_and(|output| output.status.success());
    if installed_before {
        return skip(
            TEST,
            "a gateway package is already installed here; not replacing it",
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let deb = dir.path().join("gateway.deb");
    // The binary this test run built: a release build with LTO takes far too long here;
    // shipping builds run plain `cargo deb -p gateway`. cargo-deb takes it from a target
    // directory of its own, where it stands as the release build (packaging the dev
    // profile is deprecated in cargo-deb).
    let target = dir.path().join("target");
    std::fs::create_dir_all(target.join("release")).expect("target dir");
    std::fs::copy(
        env!("CARGO_BIN_EXE_gateway"),
        target.join("release/gateway"),
    )
    .expect("copy the built gateway");
    let built = Command::new(&cargo_deb)
        .args(["-p", "gateway", "--no-build", "--fast", "-o"])
        .arg(&deb)
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo-deb");
    assert!(
        built.status.success(),
        "cargo deb: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    let install = Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .output()
        .expect("run dpkg -i");
    let _installed = Installed;
    assert!(
        install.status.success(),
        "dpkg -i: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    for path in [
        "/usr/bin/gateway",
        "/etc/gateway/tenants.toml",
        "/var/lib/gateway",
        "/usr/lib/systemd/system/gateway.service",
        "/usr/lib/systemd/system/gateway.socket",
    ] {
        assert!(Path::new(path).exists(), "{path} is not installed");
    }
    let conffiles = Command::new("dpkg-query")
        .args(["-W", "-f=${Conffiles}", "gateway"])
        .output()
        .expect("dpkg-query");
    assert!(String::from_utf8_lossy(&conffiles.stdout).contains("/etc/gateway/tenants.toml"));
    let user = Command::new("getent")
        .args(["passwd", "gateway"])
        .output()
        .expect("getent");
    assert!(user.status.success(), "no gateway system user");
    let lib = std::fs::metadata("/var/lib/gateway").expect("/var/lib/gateway");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&lib),
        String::from_utf8_lossy(&user.stdout)
            .split(':')
            .nth(2)
            .and_then(|uid| uid.parse().ok())
            .unwrap_or(u32::MAX),
        "/var/lib/gateway belongs to the gateway user"
    );
    // The example config the package ships is valid.
    let check = Command::new("/usr/bin/gateway")
        .args(["check", "--config", "/etc/gateway/tenants.toml"])
        .output()
        .expect("gateway check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    match tool("systemd-analyze") {
        None => skip("systemd-analyze verify", "systemd-analyze is not installed"),
        Some(analyze) => {
            let verify = Command::new(analyze)
                .args([
                    "verify",
                    "--man=no",
                    "/usr/lib/systemd/system/gateway.socket",
                    "/usr/lib/systemd/system/gateway.service",
                ])
                .output()
                .expect("systemd-analyze verify");
            let stderr = String::from_utf8_lossy(&verify.stderr);
            assert!(verify.status.success(), "systemd-analyze verify: {stderr}");
            assert!(
                !stderr.contains("gateway."),
                "systemd-analyze verify warns: {stderr}"
            );
        }
    }

    let Some(activate) = tool("systemd-socket-activate") else {
        return skip(
            "socket activation",
            "systemd-socket-activate is not installed",
        );
    };
    let fpm = start_fpm();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .expect("a free port");
    let config = write_config(dir.path(), port, &fpm, "");
    let notify = NotifySocket::bind(dir.path());
    let log = dir.path().join("activated.log");
    let mut command = Command::new(activate);
    command
        .arg("-l")
        .arg(port.to_string()) // 127.0.0.1:PORT: the address the config listens on
        // It passes the program only LISTEN_* and these.
        .args(["-E", "NOTIFY_SOCKET", "-E", "RUST_LOG"])
        .args(["/usr/bin/gateway", "serve", "--config"])
        .arg(&config);
    let child = command
        .env("NOTIFY_SOCKET", &notify.path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start systemd-socket-activate");
    let mut activated = GatewayProcess { child, log };
    // It starts the gateway (exec, same process) on the first connection, which waits
    // in the socket's backlog meanwhile.
    let first = std::thread::spawn(move || get_hello(port));
    notify.wait_ready(activated.pid());
    let (status, body) = first.join().expect("the first request");
    assert!(
        status.contains(" 200 "),
        "{status}; log:\n{}",
        activated.log_text()
    );
    assert_eq!(body, "Hello, World!");
    let log_text = activated.log_text();
    assert!(
        log_text.contains("using the inherited listening socket"),
        "{log_text}"
    );
    activated.signal(libc::SIGTERM);
    activated.wait_exit();
}

#[test]
fn systemd_hears_ready_watchdog_reloading_and_stopping_and_a_stray_socket_is_reported() {
    let fpm = start_fpm();
    let dir = tempfile::tempdir().expect("temp dir");
    let notify = NotifySocket::bind(dir.path());
    // The socket passed matches no configured address: the gateway says so and binds
    // its own.
    let stray = TcpListener::bind("127.0.0.1:0").expect("bind a stray socket");
    let listen = TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .expect("a free port");
    let config = write_config(dir.path(), listen, &fpm, "");
    let mut gateway = GatewayProcess::start_with_env(
        Path::new(env!("CARGO_BIN_EXE_gateway")),
        &config,
        &notify,
        Some(&stray),
        dir.path().join("gateway.log"),
        &[("WATCHDOG_USEC", "200000")],
    );
    notify.wait_ready(gateway.pid());
    let (status, _) = get_hello(listen);
    assert!(
        status.contains(" 200 "),
        "{status}; log:\n{}",
        gateway.log_text()
    );
    let log = gateway.log_text();
    assert!(log.contains("matches no listen"), "{log}");

    // WATCHDOG_USEC=200ms: a ping every 100 ms.
    let pings = notify.collect(Duration::from_millis(600));
    let watchdog = pings.iter().filter(|m| m.as_str() == "WATCHDOG=1").count();
    assert!(watchdog >= 2, "{pings:?}");

    gateway.signal(libc::SIGHUP);
    let reload = notify.wait_ready(gateway.pid());
    let reloading = reload
        .iter()
        .find(|m| m.starts_with("RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {reload:?}"));
    let usec: u64 = reloading
        .lines()
        .find_map(|line| line.strip_prefix("MONOTONIC_USEC="))
        .and_then(|usec| usec.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC: {reloading:?}"));
    assert!(usec > 0);

    gateway.signal(libc::SIGTERM);
    gateway.wait_exit();
    let last = notify.collect(Duration::from_millis(200));
    assert!(last.iter().any(|m| m == "STOPPING=1"), "{last:?}");
}
