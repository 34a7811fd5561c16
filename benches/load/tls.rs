//! The HTTPS rows: the gateway, nginx and Caddy serving the same self-signed ECDSA P-256
//! certificate (made with rcgen in a temp dir for the run), measured for
//! - **tls-handshakes**: new TLS connections per second, each a full handshake (the client
//!   below has resumption disabled; wrk and h2load would resume), one `GET /hello.php`
//!   with `Connection: close`, then the close; and the server's CPU per connection;
//! - **tls-h1**: `wrk` over kept HTTPS connections (HTTP/1.1), as the plain c32 row;
//! - **tls-h2**: `h2load` over kept HTTPS connections (HTTP/2 by ALPN, one stream per
//!   connection so that 32 requests are in flight as with wrk); skipped with a message
//!   when h2load (Debian's `nghttp2-client`) is missing.
//!
//! Servers: the gateway (shipped defaults, then access log off), nginx with and without
//! FastCGI keep-alive (the plain rows' configs plus `ssl`, `http2`, the certificate) and
//! Caddy (`tls cert key`). `--only tls` runs all three scenarios; `--only
//! tls-handshakes,tls-h2` picks some.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fpm_harness::{free_port, Nginx};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::report::Row;
use crate::servers::{self, Kind, Process, Server, HOSTS};
use crate::wrk::{WrkReport, WrkRun};
use crate::{Options, CLIENT_TIMEOUT};

/// Connections (handshake client tasks, wrk and h2load clients) in every TLS row.
const CONNECTIONS: usize = 32;

/// The name every client asks for (SNI and Host).
const HOST: &str = "bench.test";

/// Which TLS rows `--only` asks for.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    handshakes: bool,
    h1: bool,
    h2: bool,
}

impl Wanted {
    /// From the bench's options: `tls` means all three.
    pub fn from(options: &Options) -> Option<Wanted> {
        let all = options.wants("tls");
        let wanted = Wanted {
            handshakes: all || options.wants("tls-handshakes"),
            h1: all || options.wants("tls-h1"),
            h2: all || options.wants("tls-h2"),
        };
        (wanted.handshakes || wanted.h1 || wanted.h2).then_some(wanted)
    }
}

/// The TLS rows of one run.
#[derive(Debug, Clone, Default)]
pub struct TlsResults {
    /// Full handshakes: `rps` is handshakes (connections) per second, CPU per connection.
    pub handshakes: Vec<Row>,
    /// HTTP/1.1 over kept connections (wrk).
    pub h1: Vec<Row>,
    /// HTTP/2 over kept connections (h2load); empty when h2load is missing.
    pub h2: Vec<Row>,
    /// Why the HTTP/2 rows are missing, if they are.
    pub h2_skipped: Option<String>,
}

/// The certificate and key every server is given.
pub struct Certificate {
    /// PEM certificate (self-signed, SANs `bench.test`, `localhost`, `127.0.0.1`).
    pub cert: PathBuf,
    /// PEM PKCS#8 key.
    pub key: PathBuf,
    /// The temp dir holding them (and h2load's log).
    dir: TempDir,
}

impl Certificate {
    fn generate() -> Certificate {
        let dir = tempfile::Builder::new()
            .prefix("load-bench-tls-")
            .tempdir()
            .expect("cannot create a temp dir");
        let names: Vec<String> = HOSTS
            .iter()
            .map(|(_, host)| (*host).to_owned())
            .chain(["localhost".to_owned(), "127.0.0.1".to_owned()])
            .collect();
        let made = rcgen::generate_simple_self_signed(names).expect("rcgen makes a certificate");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        fs::write(&cert, made.cert.pem()).expect("cannot write cert.pem");
        fs::write(&key, made.signing_key.serialize_pem()).expect("cannot write key.pem");
        Certificate { cert, key, dir }
    }
}

/// Measures the wanted rows for the gateway (shipped defaults, then with its access log
/// off), nginx (keep-alive to PHP-FPM) and Caddy, each with the same certificate.
pub fn measure(
    wanted: Wanted,
    gateway_bin: &Path,
    options: &Options,
    nginx: bool,
    caddy: bool,
) -> TlsResults {
    let certificate = Certificate::generate();
    let have_h2load = Command::new("h2load")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    let mut results = TlsResults::default();
    if wanted.h2 && !have_h2load {
        let why = "h2load not found, the HTTP/2 rows are skipped \
                   (apt-get install nghttp2-client)";
        eprintln!("load: {why}");
        results.h2_skipped = Some(why.to_owned());
    }
    let mut kinds = vec![Kind::Gateway, Kind::GatewayQuiet];
    if nginx {
        // Both: with upstream keep-alive, nginx holds PHP-FPM workers on idle kept
        // connections and stalls some requests for seconds (see the c32 row's p99).
        kinds.extend([Kind::NginxKeepalive, Kind::NginxPlain]);
    }
    if caddy {
        kinds.push(Kind::Caddy);
    }
    for kind in kinds {
        let server = start(kind, gateway_bin, &certificate);
        if wanted.handshakes {
            eprintln!("load: {} over TLS, full handshakes", kind.label());
            handshakes(&server, options.warmup);
            let row = median(options.rounds, || {
                let row = crate::measure_with(&server, || handshakes(&server, options.duration));
                eprintln!(
                    "load:   {:.0} handshakes/s, {:.1} µs CPU per connection",
                    row.rps, row.cpu_us_per_req
                );
                row
            });
            results.handshakes.push(row);
        }
        if wanted.h1 {
            eprintln!("load: {} over TLS, HTTP/1.1 kept connections", kind.label());
            let run = WrkRun {
                url: format!("https://127.0.0.1:{}/hello.php", server.port),
                host: HOST.to_owned(),
                connections: CONNECTIONS,
                duration: options.duration,
                timeout: CLIENT_TIMEOUT,
                headers: Vec::new(),
            };
            run.warm_up(options.warmup);
            let row = median(options.rounds, || {
                let row = crate::measure_with(&server, || run.run());
                eprintln!(
                    "load:   {:.0} req/s, p99 {:.2} ms, {:.1} µs CPU/req",
                    row.rps, row.p99_ms, row.cpu_us_per_req
                );
                row
            });
            results.h1.push(row);
        }
        if wanted.h2 && have_h2load {
            eprintln!("load: {} over TLS, HTTP/2 kept connections", kind.label());
            let log = certificate.dir.path().join("h2load.log");
            h2load(server.port, options.warmup, &log);
            let row = median(options.rounds, || {
                let row =
                    crate::measure_with(&server, || h2load(server.port, options.duration, &log));
                eprintln!(
                    "load:   {:.0} req/s, p99 {:.2} ms, {:.1} µs CPU/req",
                    row.rps, row.p99_ms, row.cpu_us_per_req
                );
                row
            });
            results.h2.push(row);
        }
    }
    results
}

/// `rounds` measurements; the one with the median rate (as the c32 rows do).
fn median(rounds: usize, mut measure: impl FnMut() -> Row) -> Row {
    let mut rows: Vec<Row> = (0..rounds.max(1)).map(|_| measure()).collect();
    rows.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    rows.swap_remove(rows.len() / 2)
}

/// Starts `kind` with HTTPS only on its measured port and checks `hello.php` over it.
fn start(kind: Kind, gateway_bin: &Path, certificate: &Certificate) -> Server {
    let (cert, key) = (certificate.cert.display(), certificate.key.display());
    let server = Server::launch(kind, |upstream, dir| match kind {
        Kind::Gateway | Kind::GatewayQuiet => {
            let tls_port = free_port();
            let mut tenants = String::new();
            for (name, host) in HOSTS {
                servers::tenant_table(&mut tenants, name, host);
                // Still inside the tenant's table.
                let _ = writeln!(tenants, "tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n");
            }
            // wrk sends the URL's host (127.0.0.1) as SNI, which is no server name.
            tenants.push_str("[tls]\ndefault_tenant = \"bench\"\n");
            let server_extra = format!("tls_listen = \"127.0.0.1:{tls_port}\"\n");
            let config = servers::gateway_config(free_port(), upstream, &server_extra, &tenants);
            let quiet = kind == Kind::GatewayQuiet;
            (
                tls_port,
                servers::spawn_gateway(gateway_bin, dir, &config, quiet),
            )
        }
        Kind::NginxKeepalive | Kind::NginxPlain => {
            let keepalive = kind == Kind::NginxKeepalive;
            let config = servers::nginx_config(upstream, keepalive).replace(
                " default_server;",
                &format!(
                    " ssl http2 default_server;\n    ssl_certificate {cert};\n    \
                     ssl_certificate_key {key};"
                ),
            );
            let nginx = Nginx::start(&config).expect("cannot start nginx");
            (nginx.port(), Process::Nginx(nginx))
        }
        Kind::Caddy => {
            let port = free_port();
            let site = format!("https://:{port}");
            let tls = format!("\ttls {cert} {key}\n");
            (port, servers::run_caddy(dir, &site, &tls, upstream))
        }
        other => panic!("{} has no TLS variant in the bench", other.label()),
    });
    let check = runtime().block_on(one_round(address(&server), Duration::from_secs(10), true));
    assert!(
        check.report.requests == 1,
        "{} over TLS: GET /hello.php failed: {}",
        kind.label(),
        check.first_error.unwrap_or_default()
    );
    server
}

fn address(server: &Server) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, server.port))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
}

/// [`CONNECTIONS`] tasks on one client thread (as wrk -t1), each opening connection
/// after connection for `duration`: TCP connect, full TLS handshake, one GET, close.
/// `rps` is completed connections per second; the latency is the whole connection's.
/// Connections still open at the end are dropped; those open for more than
/// [`STALLED`] by then count as stalled (`timeouts`).
fn handshakes(server: &Server, duration: Duration) -> WrkReport {
    let run = runtime().block_on(one_round(address(server), duration, false));
    if let Some(err) = &run.first_error {
        eprintln!(
            "load:   {} failed connections, the first: {err}",
            run.report.socket_errors
        );
    }
    run.report
}

/// What [`one_round`] measured.
struct Round {
    report: WrkReport,
    first_error: Option<String>,
}

/// A connection still unanswered after this long at the end of a run is stalled.
const STALLED: Duration = Duration::from_secs(1);

/// `once`: one task, one connection (the start-up check).
async fn one_round(addr: SocketAddr, duration: Duration, once: bool) -> Round {
    let connector = TlsConnector::from(Arc::new(client_config()));
    let name = ServerName::try_from(HOST).expect("a valid DNS name");
    let started = Instant::now();
    let deadline = started + duration;
    let tasks = if once { 1 } else { CONNECTIONS };
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (connector, name) = (connector.clone(), name.clone());
        set.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut stalled = 0u64;
            let mut first_error = None;
            while Instant::now() < deadline {
                let began = Instant::now();
                let one = connection(&connector, name.clone(), addr);
                match tokio::time::timeout_at(deadline.into(), one).await {
                    Ok(Ok(())) => latencies.push(began.elapsed().as_secs_f64() * 1000.0),
                    Ok(Err(err)) => {
                        errors += 1;
                        first_error.get_or_insert(err);
                    }
                    Err(_) => {
                        if began.elapsed() > STALLED {
                            stalled += 1;
                        }
                        if once {
                            first_error.get_or_insert_with(|| "no answer".to_owned());
                        }
                    }
                }
                if once {
                    break;
                }
            }
            (latencies, errors, stalled, first_error)
        });
    }
    let mut latencies = Vec::new();
    let mut socket_errors = 0;
    let mut timeouts = 0;
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        let (mut l, e, t, f) = joined.expect("a handshake task panicked");
        latencies.append(&mut l);
        socket_errors += e;
        timeouts += t;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = latencies.len() as u64;
    let mut report = latency_report(latencies);
    report.requests = requests;
    report.rps = requests as f64 / elapsed;
    report.socket_errors = socket_errors;
    report.timeouts = timeouts;
    Round {
        report,
        first_error,
    }
}

/// One connection: TCP, a full handshake, `GET /hello.php` with `Connection: close`, the
/// answer to its end.
async fn connection(
    connector: &TlsConnector,
    name: ServerName<'static>,
    addr: SocketAddr,
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    let _ = tcp.set_nodelay(true);
    let mut tls = tokio::time::timeout(CLIENT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|err| format!("handshake: {err}"))?;
    tls.write_all(
        format!("GET /hello.php HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|err| format!("write: {err}"))?;
    let mut answer = Vec::with_capacity(1024);
    let read = tokio::time::timeout(CLIENT_TIMEOUT, tls.read_to_end(&mut answer))
        .await
        .map_err(|_| "answer timed out".to_owned())?;
    // A server may close without close_notify after a `Connection: close` answer.
    match read {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(err) => return Err(format!("read: {err}")),
    }
    if answer.starts_with(b"HTTP/1.1 200") && contains(&answer, b"Hello, World!") {
        Ok(())
    } else {
        Err(format!(
            "answer: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        ))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// TLS 1.3 (or 1.2), cipher suites in browsers' order (AES-128-GCM first: Chrome's and
/// Firefox's; rustls' own client would put AES-256-GCM-SHA384 first, and the servers
/// follow the client's order), ALPN `http/1.1`, no resumption (every connection a full
/// handshake), and no certificate verification: the client's CPU is not what is
/// measured, and every server shows the same certificate.
fn client_config() -> ClientConfig {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        use rustls::CipherSuite as C;
        match suite.suite() {
            C::TLS13_AES_128_GCM_SHA256 => 0,
            C::TLS13_CHACHA20_POLY1305_SHA256 => 1,
            C::TLS13_AES_256_GCM_SHA384 => 2,
            _ => 3,
        }
    });
    let provider = Arc::new(provider);
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Percentiles (ms) of `latencies`.
fn latency_report(mut latencies: Vec<f64>) -> WrkReport {
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
        latencies[index - 1]
    };
    WrkReport {
        p50_ms: at(0.50),
        p75_ms: at(0.75),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        ..WrkReport::default()
    }
}

/// `h2load` over HTTP/2: [`CONNECTIONS`] clients, one stream each, one thread, for
/// `duration`; SNI and `:authority` are `bench.test`, the TCP connection goes to the
/// server's loopback port. Latencies come from its per-request log.
fn h2load(port: u16, duration: Duration, log: &Path) -> WrkReport {
    let output = Command::new("h2load")
        .arg("-t1")
        .arg(format!("-c{CONNECTIONS}"))
        .arg("-m1")
        .arg(format!("-D{}", duration.as_secs().max(1)))
        .arg(format!("--log-file={}", log.display()))
        .arg(format!("--connect-to=127.0.0.1:{port}"))
        .arg(format!("https://{HOST}:{port}/hello.php"))
        .stdin(Stdio::null())
        .output()
        .expect("cannot run h2load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "h2load failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let log_text = fs::read_to_string(log).unwrap_or_default();
    parse_h2load(&stdout, &log_text)
        .unwrap_or_else(|| panic!("cannot parse h2load's report:\n{stdout}"))
}

/// Reads h2load's summary:
///
/// ```text
/// finished in 2.00s, 12345.50 req/s, 1.23MB/s
/// requests: 24691 total, 24723 started, 24691 done, 24691 succeeded, 0 failed, 0 errored, 0 timeout
/// status codes: 24691 2xx, 0 3xx, 0 4xx, 0 5xx
/// traffic: 2.31MB (2420011) total, ...
/// ```
///
/// and its `--log-file` (start µs, status, duration µs per request, tab-separated).
/// Requests still open when the run ends are in neither; h2load does not say how long
/// they had waited, so a stall shows only as fewer req/s (see the handshake rows).
fn parse_h2load(stdout: &str, log: &str) -> Option<WrkReport> {
    let mut rps = None;
    let mut succeeded = 0;
    let mut failed = 0;
    let mut non_2xx = 0;
    let mut bytes = 0.0;
    for line in stdout.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            rps = rest
                .split(", ")
                .nth(1)?
                .strip_suffix(" req/s")?
                .parse()
                .ok();
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            for part in rest.split(", ") {
                let (n, what) = part.split_once(' ')?;
                let n: u64 = n.parse().ok()?;
                match what {
                    "succeeded" => succeeded = n,
                    "failed" | "errored" | "timeout" => failed += n,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            for part in rest.split(", ") {
                let (n, what) = part.split_once(' ')?;
                if what == "4xx" || what == "5xx" {
                    non_2xx += n.parse::<u64>().ok()?;
                }
            }
        } else if let Some(rest) = line.strip_prefix("traffic: ") {
            // `2.31MB (2420011) total`
            bytes = rest.split_once('(')?.1.split_once(')')?.0.parse().ok()?;
        }
    }
    let latencies: Vec<f64> = log
        .lines()
        .filter_map(|line| line.split('\t').nth(2)?.trim().parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect();
    let mut report = latency_report(latencies);
    report.rps = rps?;
    report.requests = succeeded;
    report.socket_errors = failed;
    report.non_2xx = non_2xx;
    report.bytes_read = bytes;
    Some(report)
}

impl TlsResults {
    /// The TLS section of the Markdown report, with ratios against nginx and Caddy of the
    /// same run, and the targets of issue #12.
    pub fn markdown(&self, out: &mut String, plain_c32: &[Row]) {
        let _ = writeln!(
            out,
            "## HTTPS (same self-signed ECDSA P-256 certificate for every server, TLS 1.3, {CONNECTIONS} connections)\n"
        );
        let _ = writeln!(
            out,
            "nginx: the keep-alive row's config plus `listen ... ssl http2`, `ssl_certificate`; \
             Caddy: `php_fastcgi` with `tls cert key`; the gateway: `tls_listen`, each tenant \
             `tls = {{ cert, key }}`. \"×\" columns: the gateway's value ÷ the other server's \
             value measured in this run.\n"
        );
        if !self.handshakes.is_empty() {
            let _ = writeln!(
                out,
                "### New connections, full handshakes (no resumption; one `GET /hello.php` each, \
                 `Connection: close`)\n\nClient: tokio + rustls in the bench, {CONNECTIONS} \
                 tasks on one thread, `Resumption::disabled()`, ALPN http/1.1, no certificate \
                 verification. CPU is the server's per connection (handshake + request).\n"
            );
            table(
                out,
                &self.handshakes,
                "handshakes/s",
                "CPU µs/conn (kernel)",
                "conn p99 ms",
            );
            let _ = writeln!(
                out,
                "\"stalled\": connections still unanswered after more than 1 s when the run \
                 ended (nginx with FastCGI keep-alive leaves PHP-FPM workers on idle kept \
                 connections, so some requests wait for seconds; such a stall shows in the \
                 kept-connection rows only as fewer req/s).\n"
            );
        }
        if !self.h1.is_empty() {
            let _ = writeln!(
                out,
                "### Kept connections, HTTP/1.1 (`wrk -t1 -c{CONNECTIONS}` over https)\n"
            );
            table(out, &self.h1, "req/s", "CPU µs/req (kernel)", "p99 ms");
        }
        if !self.h2.is_empty() {
            let _ = writeln!(
                out,
                "### Kept connections, HTTP/2 (`h2load -t1 -c{CONNECTIONS} -m1`)\n"
            );
            table(out, &self.h2, "req/s", "CPU µs/req (kernel)", "p99 ms");
        }
        if let Some(why) = &self.h2_skipped {
            let _ = writeln!(out, "HTTP/2 rows: {why}.\n");
        }
        let _ = writeln!(out, "### Targets (issue #12)\n");
        let _ = writeln!(out, "| target | measured | met? |\n|---|---|---|");
        let gw = |rows: &[Row]| rows.iter().find(|r| r.id == "gateway").cloned();
        let nginx = |rows: &[Row]| rows.iter().find(|r| r.id == "nginx_keepalive").cloned();
        // Judged against the faster nginx: with upstream keep-alive its stalled requests
        // hold connections open, which is not TLS work.
        let fastest_nginx = self
            .handshakes
            .iter()
            .filter(|r| r.id.starts_with("nginx"))
            .max_by(|a, b| a.rps.total_cmp(&b.rps));
        if let (Some(g), Some(n)) = (gw(&self.handshakes), fastest_nginx) {
            let ratio = g.rps / n.rps;
            target(
                out,
                "gateway handshakes/s ≥ nginx's",
                format!(
                    "{ratio:.2}× {} (CPU per handshake {:.2}× its)",
                    n.label,
                    g.cpu_us_per_req / n.cpu_us_per_req
                ),
                ratio >= 1.0,
            );
        }
        let plain = match (gw(plain_c32), nginx(plain_c32)) {
            (Some(g), Some(n)) => Some((g.rps / n.rps, g.cpu_us_per_req / n.cpu_us_per_req)),
            _ => None,
        };
        for (what, rows) in [("HTTP/1.1", &self.h1), ("HTTP/2", &self.h2)] {
            let Some(g) = gw(rows) else { continue };
            target(
                out,
                if what == "HTTP/1.1" {
                    "gateway p99 < 25 ms, HTTPS HTTP/1.1"
                } else {
                    "gateway p99 < 25 ms, HTTPS HTTP/2"
                },
                format!("{:.2} ms", g.p99_ms),
                g.p99_ms < 25.0,
            );
            let Some(n) = nginx(rows) else { continue };
            let (rps, cpu) = (g.rps / n.rps, g.cpu_us_per_req / n.cpu_us_per_req);
            let measured = match plain {
                Some((plain_rps, plain_cpu)) => format!(
                    "req/s {rps:.2}×, CPU/req {cpu:.2}× nginx's; plain HTTP in this run: \
                     {plain_rps:.2}×, {plain_cpu:.2}×"
                ),
                None => format!(
                    "req/s {rps:.2}×, CPU/req {cpu:.2}× nginx's (plain c32 not run: add `c32` to \
                     `--only` to compare)"
                ),
            };
            let _ = writeln!(
                out,
                "| gateway ÷ nginx over kept {what} HTTPS, as over plain HTTP | {measured} | {} |",
                match plain {
                    Some((plain_rps, _)) if rps >= plain_rps * 0.95 => "met",
                    Some(_) => "**missed**",
                    None => "see plain row",
                }
            );
        }
        out.push('\n');
    }

    /// The TLS rows as JSON.
    pub fn json(&self) -> Value {
        let rows = |rows: &[Row]| -> Vec<Value> {
            rows.iter()
                .map(|r| {
                    json!({
                        "id": r.id,
                        "label": r.label,
                        "per_second": finite(r.rps),
                        "p50_ms": finite(r.p50_ms),
                        "p99_ms": finite(r.p99_ms),
                        "max_ms": finite(r.max_ms),
                        "count": r.requests,
                        "failed": r.socket_errors + r.non_2xx,
                        "stalled": r.wrk.timeouts,
                        "cpu_us_each": finite(r.cpu_us_per_req),
                        "sys_cpu_us_each": finite(r.sys_cpu_us_per_req),
                        "peak_rss_mib": finite(r.peak_rss_mib),
                    })
                })
                .collect()
        };
        json!({
            "handshakes": rows(&self.handshakes),
            "h1": rows(&self.h1),
            "h2": rows(&self.h2),
            "h2_skipped": self.h2_skipped,
        })
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

fn target(out: &mut String, what: &str, measured: String, met: bool) {
    let _ = writeln!(
        out,
        "| {what} | {measured} | {} |",
        if met { "met" } else { "**missed**" }
    );
}

/// One table: each server's rate, CPU and p99, and the gateway rows' ratios to nginx and
/// Caddy of the same run.
fn table(out: &mut String, rows: &[Row], rate: &str, cpu: &str, p99: &str) {
    let find = |id: &str| rows.iter().find(|r| r.id == id);
    let (nginx, caddy) = (find("nginx_keepalive"), find("caddy"));
    let _ = writeln!(
        out,
        "| server | {rate} | {cpu} | {p99} | p50 ms | failed | stalled (wrk: timed out) | peak RSS MiB | rate ÷ nginx | CPU ÷ nginx | rate ÷ Caddy | CPU ÷ Caddy |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let ratio = |a: f64, b: Option<f64>| b.map_or("—".to_owned(), |b| format!("{:.2}", a / b));
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} ({:.1}) | {:.2} | {:.2} | {} | {} | {:.1} | {} | {} | {} | {} |",
            r.label,
            r.rps,
            r.cpu_us_per_req,
            r.sys_cpu_us_per_req,
            r.p99_ms,
            r.p50_ms,
            r.socket_errors + r.non_2xx,
            r.wrk.timeouts,
            r.peak_rss_mib,
            ratio(r.rps, nginx.map(|n| n.rps)),
            ratio(r.cpu_us_per_req, nginx.map(|n| n.cpu_us_per_req)),
            ratio(r.rps, caddy.map(|c| c.rps)),
            ratio(r.cpu_us_per_req, caddy.map(|c| c.cpu_us_per_req)),
        );
    }
    out.push('\n');
}
