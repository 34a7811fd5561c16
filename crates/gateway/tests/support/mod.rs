//! Shared helpers of the gateway's failure and limit tests (`failures.rs`, `limits.rs`):
//! a private PHP-FPM, a gateway on `127.0.0.1:0` built from a config snippet, an HTTP
//! client whose every wait is bounded, raw sockets for requests a polite client would
//! not send, and a capture of the gateway's `tracing` output.
//!
//! Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fpm_harness::{fixtures_dir, Fpm, FpmConfig};
use gateway::config::Config;
use gateway::snapshot::SharedState;
use gateway::Gateway;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The one tenant of every test gateway.
pub const TENANT: &str = "acme";
/// Its host.
pub const HOST: &str = "acme.test";
/// Its database password: a tenant param that must never reach a log.
pub const DBPASS: &str = "dbpass-7f3a9c-never-logged";

/// Bound for one ordinary request against a local PHP-FPM: far above what it takes, far
/// below "hung".
pub const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// Starts a private PHP-FPM; blocks for the ~100 ms it takes, which is fine at the start
/// of a test, before anything else runs on its runtime.
pub fn start_fpm(config: FpmConfig) -> Fpm {
    Fpm::start(config).expect("php-fpm starts (is php-fpm installed? see scripts/)")
}

/// A `tenants.toml` for one tenant ([`TENANT`] on [`HOST`]) on the fixture scripts, with
/// `server` and `fastcgi` lines added to those tables.
pub fn config_text(upstream: &str, server: &str, fastcgi: &str) -> String {
    let root = toml::Value::from(fixtures_dir().display().to_string());
    let upstream = toml::Value::from(upstream);
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n\
         [fastcgi]\nupstream = {upstream}\nroot = {root}\n{fastcgi}\n\n\
         [defaults.params]\nAPP_ENV = \"test\"\n\n\
         [tenants.{TENANT}]\nhosts = [\"{HOST}\"]\n\
         params = {{ DBNAME = \"acme_db\", DBPASS = \"{DBPASS}\" }}\n"
    )
}

/// A gateway serving on a free loopback port until [`TestGateway::shutdown`] or drop.
pub struct TestGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state, to look at the pool while requests run.
    pub state: Arc<SharedState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestGateway {
    /// Binds a gateway for [`config_text`]`(upstream, server, fastcgi)` and serves it on
    /// the current runtime.
    pub async fn start(upstream: &str, server: &str, fastcgi: &str) -> TestGateway {
        let text = config_text(upstream, server, fastcgi);
        let config = Config::parse(&text, "test.toml", fixtures_dir())
            .unwrap_or_else(|err| panic!("test config is valid: {err}\n{text}"));
        let gateway = Gateway::bind(config).await.expect("gateway binds port 0");
        let addr = gateway.local_addrs()[0];
        let state = gateway.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(async {
            let _ = rx.await;
        }));
        TestGateway {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// PHP-FPM connections the gateway holds right now (idle, leased or opening).
    pub fn open_fpm_connections(&self) -> usize {
        self.state.load().pool.stats().open
    }

    /// Starts a graceful shutdown: stop accepting, finish in-flight requests.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits (bounded) until `serve` has returned.
    pub async fn stopped(mut self) {
        self.shutdown();
        let task = self.task.take().expect("serve task is there until stopped");
        within(REQUEST_LIMIT, "the gateway to stop", task)
            .await
            .expect("serve did not panic");
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        // Stops the accept loops; the runtime ending with the test takes the rest.
        self.shutdown();
    }
}

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Polls `check` every 10 ms until it holds; `false` if it never did within `limit`.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The HTTP client of the tests.
pub type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// A new client with its own connection pool.
pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text, `""` when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A request for `path` on the test tenant's host.
pub fn request(gateway: &TestGateway, method: Method, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(gateway.url(path))
        .header(http::header::HOST, HOST)
}

/// Sends `req` and returns the response head, bounded by [`REQUEST_LIMIT`].
pub async fn send_head(client: &Client, req: Request<Full<Bytes>>) -> http::Response<Incoming> {
    let what = format!("{} {}", req.method(), req.uri());
    within(REQUEST_LIMIT, &what, client.request(req))
        .await
        .unwrap_or_else(|err| panic!("{what}: {err:?}"))
}

/// Sends `req` and reads the whole response, bounded by [`REQUEST_LIMIT`].
pub async fn send(client: &Client, req: Request<Full<Bytes>>) -> Reply {
    let what = format!("{} {}", req.method(), req.uri());
    let response = send_head(client, req).await;
    let (parts, body) = response.into_parts();
    let body = within(REQUEST_LIMIT, &what, body.collect())
        .await
        .unwrap_or_else(|err| panic!("{what}: reading the body: {err:?}"))
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `GET path` on the test tenant's host.
pub async fn get(client: &Client, gateway: &TestGateway, path: &str) -> Reply {
    let req = request(gateway, Method::GET, path)
        .body(Full::default())
        .expect("valid request");
    send(client, req).await
}

/// Writes `raw` on a new connection and returns everything the server sends until it
/// closes (a reset after some data counts as a close: a server that answers before
/// reading the whole request resets when it closes), bounded by [`REQUEST_LIMIT`].
pub async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(raw).await?;
        let mut received = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(err)
                    if err.kind() == io::ErrorKind::ConnectionReset && !received.is_empty() =>
                {
                    break
                }
                Err(err) => return Err(err),
            }
        }
        Ok::<_, io::Error>(String::from_utf8_lossy(&received).into_owned())
    };
    within(REQUEST_LIMIT, "raw exchange", exchange)
        .await
        .expect("the raw exchange gets an answer")
}

/// Everything the gateway logs on one thread while installed, as the formatted lines the
/// operator would read. Cheap to clone; clones share the buffer.
///
/// One global subscriber (installed on first use) formats every event twice, as text and
/// as JSON, and hands each line to the capture installed on the emitting thread, if any.
/// Per-test scoped subscribers (`tracing::subscriber::set_default`) would be simpler, but
/// tracing caches per call site whether anyone listens: a call site first reached on a
/// thread without a subscriber, while another test installs one, can stay muted for good.
/// With a single subscriber that always listens, there is nothing to race.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

/// Which rendering a capture wants.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

thread_local! {
    static THREAD_CAPTURE: std::cell::RefCell<Option<(LogFormat, LogCapture)>> =
        const { std::cell::RefCell::new(None) };
}

/// Uninstalls a capture when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        THREAD_CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

impl LogCapture {
    /// Captures, as text, every event (down to TRACE) emitted on this thread until the
    /// guard drops. Tests that use it run on a current-thread runtime, so the gateway's
    /// tasks, which are spawned onto that runtime, log on this thread too.
    pub fn install_text(&self) -> CaptureGuard {
        self.install(LogFormat::Text)
    }

    /// As [`LogCapture::install_text`], in the JSON format of `gateway::logging::init(true)`.
    pub fn install_json(&self) -> CaptureGuard {
        self.install(LogFormat::Json)
    }

    fn install(&self, format: LogFormat) -> CaptureGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let subscriber = tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(ThreadWriter(LogFormat::Text)),
                )
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_writer(ThreadWriter(LogFormat::Json)),
                )
                .with(tracing_subscriber::filter::LevelFilter::TRACE);
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the test binary");
        });
        THREAD_CAPTURE.with(|capture| *capture.borrow_mut() = Some((format, self.clone())));
        CaptureGuard(())
    }

    /// The captured lines so far.
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hands a formatted line to the emitting thread's capture of its format, or drops it.
struct ThreadWriter(LogFormat);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadWriter {
    type Writer = Box<dyn io::Write>;

    fn make_writer(&'a self) -> Self::Writer {
        let capture = THREAD_CAPTURE.with(|capture| match &*capture.borrow() {
            Some((format, capture)) if *format == self.0 => Some(capture.clone()),
            _ => None,
        });
        match capture {
            Some(capture) => Box::new(capture),
            None => Box::new(io::sink()),
        }
    }
}
