//! The gateway served in-process from a config *file* (so the file watcher and the usage
//! flusher run), for the reload and metering tests, and a keep-alive HTTP/1 client
//! connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::config::Config;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::{eventually, Reply, Served, REQUEST_LIMIT, SOON};

/// `value` as a TOML basic string (paths with backslashes or quotes stay intact).
pub fn toml_string(value: impl std::fmt::Display) -> String {
    toml::Value::from(value.to_string()).to_string()
}

/// Replaces `path` the way editors and `gateway tenants` do: a temp file in the same
/// directory renamed over it, so a reload never reads half a file.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).expect("write temp config");
    std::fs::rename(&tmp, path).expect("rename temp config over the config");
}

/// A gateway serving a config file on a free loopback port until
/// [`LiveGateway::shutdown`] or drop; its [`Served`] fields (`addr`, `state`, `reloader`)
/// are reached through it.
pub struct LiveGateway(Served);

impl LiveGateway {
    /// Loads the config at `path` (whose `listen` must be `127.0.0.1:0`), binds it, and
    /// serves it on the current runtime.
    pub async fn start(path: &Path) -> LiveGateway {
        let config = Config::load(path).unwrap_or_else(|err| panic!("test config: {err}"));
        LiveGateway(Served::bind(config).await)
    }

    /// Starts the gateway and returns once its file watcher is proven live (see
    /// [`wait_for_watcher`]): `serve` spawns the watcher, and a change made before it
    /// has installed its watch would be missed.
    pub async fn start_watched(path: &Path, write: impl Fn(&str)) -> LiveGateway {
        let gateway = LiveGateway::start(path).await;
        let text = std::fs::read_to_string(path).expect("read config");
        wait_for_watcher(&gateway, &text, write).await;
        gateway
    }

    /// Whether the served config has a tenant called `name`.
    pub fn has_tenant(&self, name: &str) -> bool {
        self.state.load().registry.tenant(name).is_some()
    }

    /// Stops accepting, lets in-flight requests finish, and waits for `serve` to return
    /// (which includes the usage flusher's last flush).
    pub async fn shutdown(self) {
        self.0.stopped(SOON).await;
    }
}

impl std::ops::Deref for LiveGateway {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.0
    }
}

/// Writes the config with a probe tenant added until the gateway serves it (retrying
/// every 250 ms, in case the watch was not in place yet), then writes `text` back and
/// waits until the probe is gone. Afterwards the watcher, and its SIGHUP handler, are
/// running.
pub async fn wait_for_watcher(gateway: &LiveGateway, text: &str, write: impl Fn(&str)) {
    let deadline = Instant::now() + SOON;
    let with_probe = format!("{text}\n[tenants.watch-probe]\nhosts = [\"watch-probe.test\"]\n");
    loop {
        write(&with_probe);
        if eventually(Duration::from_millis(250), || {
            gateway.has_tenant("watch-probe")
        })
        .await
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the config watcher never picked up a change; last reload error: {:?}",
            gateway.reloader.last_error()
        );
    }
    write(text);
    assert!(
        eventually(SOON, || !gateway.has_tenant("watch-probe")).await,
        "the probe tenant was never removed; last reload error: {:?}",
        gateway.reloader.last_error()
    );
}

/// One HTTP/1.1 keep-alive connection to the gateway, reopened after an error.
pub struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Conn {
    /// A connection to `addr`, opened on first use.
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, sender: None }
    }

    /// `GET path` with `Host: host`, bounded by [`REQUEST_LIMIT`]. An error drops the
    /// connection; the next call opens a new one.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Reply, String> {
        let result = tokio::time::timeout(REQUEST_LIMIT, self.exchange(host, path))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_LIMIT:?}")));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn exchange(&mut self, host: &str, path: &str) -> Result<Reply, String> {
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => self.sender.insert(connect(self.addr).await?),
        };
        sender
            .ready()
            .await
            .map_err(|err| format!("connection closed: {err}"))?;
        let req = Request::get(path)
            .header(http::header::HOST, host)
            .body(Empty::new())
            .expect("valid request");
        let response = sender
            .send_request(req)
            .await
            .map_err(|err| format!("request failed: {err}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|err| format!("body failed: {err}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("handshake: {err}"))?;
    tokio::spawn(async move {
        // Ends when the connection closes; errors surface on the request side.
        let _ = conn.await;
    });
    Ok(sender)
}

/// `GET path` with `Host: host` on a fresh connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    Conn::new(addr)
        .get(host, path)
        .await
        .unwrap_or_else(|err| panic!("GET {host}{path}: {err}"))
}

/// A temp directory for one test: config path and, on request, an app root of its own.
pub struct Scratch {
    /// Kept alive for the test's duration.
    pub dir: tempfile::TempDir,
    /// `DIR/tenants.toml`.
    pub config: PathBuf,
}

impl Scratch {
    /// An empty scratch directory.
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("tenants.toml");
        Scratch { dir, config }
    }

    /// `DIR/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` as the config and starts a gateway on it whose watcher is proven
    /// live; the watcher probe, like the tests' own edits, replaces the file atomically.
    pub async fn serve_watched(&self, text: &str) -> LiveGateway {
        std::fs::write(&self.config, text).expect("write config");
        LiveGateway::start_watched(&self.config, |t| write_atomically(&self.config, t)).await
    }
}
