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
//! - [`logs`]: a capture of what the gateway logs; [`payload`]: checkable payloads and
//!   this process's memory; [`prometheus`]: a strict reader of `/metrics`.
//!
//! Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

pub mod live;
pub mod logs;
pub mod multi_tenant;
pub mod payload;
pub mod prometheus;
pub mod single_tenant;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use fpm_harness::{Fpm, FpmConfig};
use http::{HeaderMap, StatusCode};

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

/// Polls `check` every 10 ms until it holds (true) or `limit` passes (false).
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
