//! One tenant on a gateway at `127.0.0.1:0` built from a config snippet, in front of a
//! PHP-FPM (or relay) the test controls, for the failure and limit tests; hyper's pooled
//! client with every wait bounded, and raw sockets for requests a polite client would
//! not send.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use fpm_harness::{fixtures_dir, CountingRelay, Fpm, FpmConfig};
use gateway::config::Config;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{start_fpm, within, Reply, Served, REQUEST_LIMIT};

/// The one tenant of every test gateway.
pub const TENANT: &str = "acme";
/// Its host.
pub const HOST: &str = "acme.test";
/// Its database password: a tenant param that must never reach a log.
pub const DBPASS: &str = "dbpass-7f3a9c-never-logged";

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

/// A gateway serving on a free loopback port until [`TestGateway::shutdown`] or drop;
/// its [`Served`] fields (`addr`, `state`) are reached through it.
pub struct TestGateway(Served);

impl TestGateway {
    /// Binds a gateway for [`config_text`]`(upstream, server, fastcgi)` and serves it on
    /// the current runtime.
    pub async fn start(upstream: &str, server: &str, fastcgi: &str) -> TestGateway {
        let text = config_text(upstream, server, fastcgi);
        let config = Config::parse(&text, "test.toml", fixtures_dir())
            .unwrap_or_else(|err| panic!("test config is valid: {err}\n{text}"));
        TestGateway(Served::bind(config).await)
    }

    /// A private PHP-FPM (2 workers) and a gateway with `server` and `fastcgi` settings
    /// in front of it.
    pub async fn with_fpm(server: &str, fastcgi: &str) -> (Fpm, TestGateway) {
        let fpm = start_fpm(FpmConfig::new().workers(2));
        let gateway =
            TestGateway::start(&fpm.address().to_upstream_string(), server, fastcgi).await;
        (fpm, gateway)
    }

    /// As [`TestGateway::with_fpm`], with a counting relay between the gateway and
    /// PHP-FPM, so a test can tell whether (and on how many connections) a request
    /// reached PHP-FPM.
    pub async fn with_relay(server: &str) -> (Fpm, CountingRelay, TestGateway) {
        let fpm = start_fpm(FpmConfig::new().workers(2));
        let relay = CountingRelay::start(fpm.address().clone()).expect("relay starts");
        let gateway = TestGateway::start(&relay.address().to_upstream_string(), server, "").await;
        (fpm, relay, gateway)
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
        self.0.stop();
    }

    /// Waits (bounded) until `serve` has returned.
    pub async fn stopped(self) {
        self.0.stopped(REQUEST_LIMIT).await;
    }
}

impl std::ops::Deref for TestGateway {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.0
    }
}

/// The HTTP client of the tests.
pub type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// A new client with its own connection pool.
pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
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
