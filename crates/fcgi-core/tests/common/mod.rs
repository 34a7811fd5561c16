//! Shared helpers of fcgi-core's integration tests: starting a private PHP-FPM, building
//! requests for the fixture scripts, bounding every wait, and reading process memory.
//!
//! Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use fcgi_core::{Params, Pool, PoolConfig, Request, Response, Upstream};
// Each test file uses only some of the helpers (as `dead_code` above).
#[allow(unused_imports)]
pub use fpm_harness::eventually;
use fpm_harness::{fixtures_dir, Fpm, FpmAddress, FpmConfig};

/// Bound for one ordinary request against a local PHP-FPM: far above what it takes, far
/// below "hung".
pub const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// Starts a private PHP-FPM; blocks for the ~100 ms it takes, which is fine at the start
/// of a test, before anything else runs on its runtime.
pub fn start_fpm(config: FpmConfig) -> Fpm {
    Fpm::start(config).expect("php-fpm starts (is php-fpm installed? see scripts/)")
}

/// The fcgi-core upstream for a harness address.
pub fn upstream(address: &FpmAddress) -> Upstream {
    address
        .to_upstream_string()
        .parse()
        .expect("harness addresses are valid upstreams")
}

/// A pool on `address` with `configure` applied to the defaults.
pub fn pool(address: &FpmAddress, configure: impl FnOnce(&mut PoolConfig)) -> Pool {
    let mut config = PoolConfig::default();
    configure(&mut config);
    Pool::new(upstream(address), config)
}

/// Absolute path of a fixture script.
pub fn script_path(script: &str) -> String {
    fixtures_dir().join(script).display().to_string()
}

/// The CGI environment a web server would send for `GET /script?query`.
pub fn script_params(script: &str, query: &str) -> Params {
    let uri = if query.is_empty() {
        format!("/{script}")
    } else {
        format!("/{script}?{query}")
    };
    let mut params = Params::with_capacity(1024);
    let pairs = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_SOFTWARE", "fcgi-core-tests"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "40000"),
        ("REQUEST_METHOD", "GET"),
    ];
    for (name, value) in pairs {
        params.insert(name, value).expect("small param");
    }
    params
        .insert("DOCUMENT_ROOT", fixtures_dir().display().to_string())
        .expect("small param");
    params
        .insert("SCRIPT_FILENAME", script_path(script))
        .expect("small param");
    params
        .insert("SCRIPT_NAME", format!("/{script}"))
        .expect("small param");
    params.insert("REQUEST_URI", uri).expect("small param");
    params.insert("QUERY_STRING", query).expect("small param");
    params
}

/// `GET /script?query`, no body.
pub fn get(script: &str, query: &str) -> Request {
    Request::new(script_params(script, query))
}

/// The FPM status page as JSON (`pm.status_path = /fpm-status`): FPM matches the path on
/// SCRIPT_NAME and never runs a script for it.
pub fn fpm_status_request() -> Request {
    let mut params = Params::new();
    for (name, value) in fpm_harness::status_page_params("json") {
        params.insert(name, value).expect("small param");
    }
    Request::new(params)
}

/// Awaits `fut`, failing the test (instead of hanging it) after `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Sends through `pool` and reads the whole body, bounded by [`REQUEST_LIMIT`].
pub async fn send_text<B>(
    pool: &Pool,
    request: Request<B>,
) -> Result<(http::StatusCode, String), fcgi_core::Error>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    within(REQUEST_LIMIT, "a pooled request", async {
        let response = pool.send(request).await?;
        text(response).await
    })
    .await
}

/// Status and body (as UTF-8) of a response.
pub async fn text(response: Response) -> Result<(http::StatusCode, String), fcgi_core::Error> {
    let status = response.status();
    let body = response.collect().await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The process's resident memory now and at its peak, in KiB (`/proc/self/status`).
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

impl Memory {
    pub fn now() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
        };
        Self {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        }
    }

    /// Resets the peak to the current RSS (Linux >= 4.0), so the next reading's peak
    /// covers only what happens from now on. Best effort: without it the peak only
    /// over-reports, which errs on the side of failing.
    pub fn reset_peak() {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }

    /// How far the peak since `before` rose above `before`'s resident size, in MiB.
    pub fn peak_growth_mib(before: Memory, after: Memory) -> f64 {
        after.peak_kib.saturating_sub(before.rss_kib) as f64 / 1024.0
    }
}
