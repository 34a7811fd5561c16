//! A [`TestGateway`] with several tenants that starts a private PHP-FPM and the gateway
//! in-process on `127.0.0.1:0`, and a small HTTP client over real sockets (hyper's
//! connection-level client, so the test decides the exact request target and headers,
//! and raw bytes for what hyper would refuse to send).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fpm_harness::{fixtures_dir, Fpm, FpmConfig, Listen};
use gateway::config::Config;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{start_fpm, within, Reply, Served, REQUEST_LIMIT};

/// The tenants most tests use. Each one carries a `TENANT_ID` param so a test can see
/// which tenant served a request through `/params.php?only=TENANT_ID`.
pub const TENANTS: &str = r#"
[defaults.params]
APP_ENV = "test"
DBHOST = "shared-db"

[tenants.t1]
hosts = ["t1.example", "Mixed.Case.Example"]
params = { TENANT_ID = "t1", DBHOST = "db1", DBPASS = "secret1" }

[tenants.t2]
hosts = ["t2.example"]
params = { TENANT_ID = "t2", DBPASS = "secret2" }

[tenants.wild]
hosts = ["*.example.org"]
params = { TENANT_ID = "wild", DBPASS = "secret-wild" }

[tenants.exact]
hosts = ["www.example.org"]
params = { TENANT_ID = "exact", DBPASS = "secret-exact" }
"#;

/// PHP-FPM plus the gateway in front of it, serving until dropped.
pub struct TestGateway {
    /// Where the gateway listens.
    pub addr: SocketAddr,
    // Dropping it stops the gateway; declared first, so before PHP-FPM goes.
    _served: Served,
    // Kept alive for the gateway's lifetime; killed on drop.
    _fpm: Fpm,
}

impl TestGateway {
    /// The gateway with [`TENANTS`] and default server settings.
    pub async fn start() -> Self {
        Self::with("", TENANTS).await
    }

    /// The gateway with extra `[server]` lines (`max_body = "1MiB"`) and the given
    /// tenants (`[defaults.params]` and `[tenants.*]` tables).
    pub async fn with(server_extra: &str, tenants: &str) -> Self {
        // Blocks for the ~100 ms php-fpm takes to start, before anything else runs.
        let fpm = start_fpm(FpmConfig::new().listen(Listen::Unix).workers(3));
        let root = fixtures_dir();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n\n\
             [fastcgi]\nupstream = {upstream:?}\nroot = {root:?}\nmax_connections = 3\n\
             {tenants}",
            upstream = fpm.address().to_upstream_string(),
            root = root.display().to_string(),
        );
        let config = Config::parse(&text, "tenants.toml", std::env::temp_dir())
            .unwrap_or_else(|err| panic!("test config is valid: {err}\n{text}"));
        let served = Served::bind(config).await;
        TestGateway {
            addr: served.addr,
            _served: served,
            _fpm: fpm,
        }
    }

    /// `GET target` with `Host: host`, read whole.
    pub async fn get(&self, host: &str, target: &str) -> Reply {
        self.send(request("GET", host, target).body(Empty::new()).unwrap())
            .await
    }

    /// Sends `req` on a fresh connection exactly as built (the target as given, no
    /// `Host` added) and reads the whole answer.
    pub async fn send<B>(&self, req: Request<B>) -> Reply
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        send_to(self.addr, req).await
    }

    /// Sends `req` on a fresh connection and returns as soon as the head is in, so the
    /// caller can watch the body arrive.
    pub async fn send_streaming<B>(&self, req: Request<B>) -> Response<Incoming>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        send_streaming_to(self.addr, req).await
    }

    /// Writes `raw` on a fresh connection and reads until the gateway closes it. Send
    /// `Connection: close` (or HTTP/1.0) so it does.
    pub async fn raw(&self, raw: &[u8]) -> RawReply {
        within(REQUEST_LIMIT, "a raw exchange", async {
            let mut stream = TcpStream::connect(self.addr).await.expect("connect");
            stream.write_all(raw).await.expect("write request");
            let mut answer = Vec::new();
            // A reset after the answer (the gateway closing with unread input) still
            // leaves what was read.
            let _ = stream.read_to_end(&mut answer).await;
            RawReply::parse(answer)
        })
        .await
    }

    /// `GET target HTTP/1.1` with `Host: host` as raw bytes, for targets hyper's client
    /// cannot express (backslashes, bare `%`).
    pub async fn raw_get(&self, host: &str, target: &str) -> RawReply {
        let text = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        self.raw(text.as_bytes()).await
    }
}

/// `method target` with `Host: host`, `headers` and no body, sent to `addr` by
/// [`send_to`].
pub async fn send_with_headers(
    addr: SocketAddr,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut builder = request(method, host, target);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send_to(addr, builder.body(Empty::<Bytes>::new()).unwrap()).await
}

/// Sends `req` to `addr` on a fresh HTTP/1.1 connection exactly as built (the target as
/// given, no `Host` added) and reads the whole answer, bounded by [`REQUEST_LIMIT`].
pub async fn send_to<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    send_within(addr, req, REQUEST_LIMIT).await
}

/// [`send_to`] for a request known to take long (an application's installer), bounded
/// by `limit` instead.
pub async fn send_within<B>(addr: SocketAddr, req: Request<B>, limit: Duration) -> Reply
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    within(limit, "a request", async {
        let response = exchange(addr, req).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    })
    .await
}

/// Sends `req` to `addr` on a fresh connection and returns as soon as the head is in.
pub async fn send_streaming_to<B>(addr: SocketAddr, req: Request<B>) -> Response<Incoming>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    within(REQUEST_LIMIT, "a response head", exchange(addr, req)).await
}

/// Sends `req` to `addr` on a fresh connection, unbounded; the callers bound it.
async fn exchange<B>(addr: SocketAddr, req: Request<B>) -> Response<Incoming>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    sender.send_request(req).await.expect("response head")
}

/// A request builder with `method`, `target` (as sent on the request line) and
/// `Host: host`.
pub fn request(method: &str, host: &str, target: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(target)
        .header(http::header::HOST, host)
}

/// A whole body for [`TestGateway::send`].
pub fn full(data: impl Into<Bytes>) -> Full<Bytes> {
    Full::new(data.into())
}

/// An answer read from a raw socket: status, head and whatever followed it.
#[derive(Debug)]
pub struct RawReply {
    /// The status code (0 when the gateway closed without answering).
    pub status: u16,
    /// The status line and headers, as text.
    pub head: String,
    /// Every byte after the blank line ending the head.
    pub body: Vec<u8>,
}

impl RawReply {
    fn parse(answer: Vec<u8>) -> Self {
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(answer.len(), |at| at + 4);
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| head.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        RawReply {
            status,
            head,
            body: answer[split..].to_vec(),
        }
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value (first one, name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}
