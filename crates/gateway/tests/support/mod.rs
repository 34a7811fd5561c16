//! Shared helpers of the gateway's integration tests: what every test file needs (bounded
//! waits, a private PHP-FPM, a whole HTTP answer) here, and one submodule per way of
//! running the gateway.
//!
//! - [`multi_tenant`]: the gateway in-process with several tenants, and a client that
//!   sends requests exactly as built (or as raw bytes) on fresh connections; for routing,
//!   CGI params, responses, static files and hostile requests.
//! - [`single_tenant`]: one tenant in front of a PHP-FPM (or relay) the test controls,
//!   and hyper's pooled client; for failures and limits.
//! - [`live`]: the gateway serving a config *file* (so the watcher and the usage flusher
//!   run), and a keep-alive client connection; for reloads and metering.
//! - [`pebble`]: Let's Encrypt's test CA and its DNS server, for the ACME tests; [`ari`]:
//!   renewal information (RFC 9773) in front of it.
//! - [`tls_client`]: a test CA and an HTTPS client (SNI, ALPN, HTTP/1.1 and HTTP/2).
//! - [`chromium`]: headless Chromium driven over the DevTools protocol, for the dashboard.
//! - [`logs`]: a capture of what the gateway logs; [`payload`]: checkable payloads and
//!   this process's memory; [`prometheus`] (a strict reader of `/metrics`) and
//!   [`eventually`] come from `fpm-harness`, shared with fcgi-core's tests.
//!
//! Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

pub mod ari;
pub mod chromium;
pub mod live;
pub mod logs;
pub mod multi_tenant;
pub mod payload;
pub mod pebble;
pub mod single_tenant;
pub mod tls_client;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
// Each test file uses only some of the helpers (as `dead_code` above).
#[allow(unused_imports)]
pub use fpm_harness::{eventually, prometheus};
use fpm_harness::{Fpm, FpmConfig};
use gateway::config::Config;
use gateway::reload::Reloader;
use gateway::snapshot::SharedState;
use gateway::Gateway;
use http::{HeaderMap, StatusCode};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Bound for one ordinary request against a local PHP-FPM: far above what it takes on a
/// busy 2-core machine, far below "hung".
pub const REQUEST_LIMIT: Duration = Duration::from_secs(15);

/// Bound for anything that is expected to happen "soon" (a reload, a flush): generous,
/// because the machine may be busy compiling; tests that promise a latency assert it
/// separately.
pub const SOON: Duration = Duration::from_secs(10);

/// Starts a private PHP-FPM. Blocks for the ~100 ms it takes, which is fine at the start
/// of a test, before anything else runs on its runtime.
pub fn start_fpm(config: FpmConfig) -> Fpm {
    Fpm::start(config)
        .expect("php-fpm starts (is php-fpm installed? see scripts/ensure-php-fpm.sh)")
}

/// Awaits `fut`, failing the test (instead of hanging it) after `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// An answer, its body read to the end.
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
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, failing the test with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "expected JSON ({err}), got {} {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// A header's value as text (the first, when repeated); `None` when absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }
}

/// The answer's `Cache-Status` (RFC 9211), or "" without one.
pub fn cache_status(reply: &Reply) -> &str {
    reply.header("cache-status").unwrap_or("")
}

/// Whether the response cache answered (fresh or stale), per `Cache-Status`.
pub fn is_hit(reply: &Reply) -> bool {
    cache_status(reply).contains("; hit")
}

/// The gateway for a config whose `listen` is `127.0.0.1:0`, bound and served on the
/// current runtime until [`Served::stop`], [`Served::stopped`] or drop. Every harness
/// below runs the gateway through it.
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The admin API's address, when the config has one.
    pub admin: Option<SocketAddr>,
    /// The TLS listeners' addresses (none without `tls_listen`).
    pub tls: Vec<SocketAddr>,
    /// Current snapshot and telemetry, to look at the pool and the registry.
    pub state: Arc<SharedState>,
    /// The reloader `serve` runs the file watcher with.
    pub reloader: Arc<Reloader>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Served {
    /// Binds a gateway for `config` and serves it on the current runtime.
    pub async fn bind(config: Config) -> Served {
        let gateway = Gateway::bind(config).await.expect("gateway binds port 0");
        let addr = gateway.local_addrs()[0];
        let admin = gateway.admin_addr();
        let tls = gateway.tls_addrs();
        let state = gateway.state().clone();
        let reloader = gateway.reloader().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(async {
            let _ = stopped.await;
        }));
        Served {
            addr,
            admin,
            tls,
            state,
            reloader,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts a graceful shutdown: stop accepting, finish in-flight requests.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops, and waits up to `limit` for `serve` to return (which includes the usage
    /// flusher's last flush).
    pub async fn stopped(mut self, limit: Duration) {
        self.stop();
        let task = self.task.take().expect("serve task is there until stopped");
        within(limit, "the gateway to stop", task)
            .await
            .expect("serve did not panic");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // Stops the accept loops; the runtime ending with the test takes the rest.
        self.stop();
    }
}
