//! The "PHP-FPM direct" row: this process drives PHP-FPM straight through fcgi-core's
//! `Pool` (4 connections, like the gateway's) at the same concurrency as wrk, with no HTTP
//! in between: the ceiling the gateway is measured against.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fcgi_core::{Params, Pool, PoolConfig, Request, Upstream};
use http_body_util::BodyExt;

use crate::procstat;
use crate::servers::FPM_WORKERS;

/// What one direct run measured.
#[derive(Debug, Clone, Default)]
pub struct DirectReport {
    /// Completed requests.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// Requests that failed or answered something other than the fixture.
    pub failures: u64,
    /// CPU time this process (the client) used.
    pub cpu: Duration,
    /// The kernel's part of `cpu`.
    pub sys_cpu: Duration,
    /// CPU time the PHP-FPM pool used.
    pub fpm_cpu: Duration,
}

/// The params the gateway sends for `GET /hello.php` with `Host: bench.test` (CGI
/// variables, then the tenant's params), so PHP does the same work for both rows.
fn params(script: &str, root: &str) -> Params {
    let pairs: [(&str, &str); 26] = [
        ("SCRIPT_FILENAME", script),
        ("SCRIPT_NAME", "/hello.php"),
        ("REQUEST_URI", "/hello.php"),
        ("DOCUMENT_URI", "/hello.php"),
        ("DOCUMENT_ROOT", root),
        ("QUERY_STRING", ""),
        ("REQUEST_METHOD", "GET"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "fcgi-gateway"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "54321"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", "8080"),
        ("SERVER_NAME", "bench.test"),
        ("REQUEST_SCHEME", "http"),
        ("REDIRECT_STATUS", "200"),
        ("HTTP_HOST", "bench.test"),
        ("DBHOST", "10.200.16.27"),
        ("DBNAME", "moodle_bench"),
        ("DBUSER", "moodle"),
        ("DBPASS", "secret-bench"),
        ("WWWROOT", "https://bench.test"),
        ("DATAROOT", "/moodledata/bench"),
    ];
    let mut params = Params::with_capacity(1024);
    for (name, value) in pairs {
        params
            .insert(name, value)
            .expect("bench params fit in a record");
    }
    params
}

/// Sends `hello.php` requests from `connections` tasks for `duration` (after `warmup`),
/// each task one request at a time, and measures them.
pub fn run(
    upstream: &str,
    fpm_pid: u32,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> DirectReport {
    let upstream: Upstream = upstream.parse().expect("a valid upstream address");
    let root = fpm_harness::fixtures_dir();
    let script = root.join("hello.php");
    let root = root.display().to_string();
    let script = script.display().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime");
    runtime.block_on(async move {
        let pool = Pool::new(
            upstream,
            PoolConfig {
                max_connections: FPM_WORKERS as usize,
                ..PoolConfig::default()
            },
        );
        // Warm-up: connections opened, opcache filled; not measured.
        drive(&pool, &script, &root, connections, warmup).await;
        let cpu_before = procstat::own_cpu_time(std::process::id());
        let fpm_before = procstat::cpu_time(fpm_pid);
        let started = Instant::now();
        let (mut latencies, failures) = drive(&pool, &script, &root, connections, duration).await;
        let elapsed = started.elapsed();
        let cpu_after = procstat::own_cpu_time(std::process::id());
        let (cpu, sys_cpu) = (
            cpu_after.since(cpu_before),
            cpu_after.system_since(cpu_before),
        );
        let fpm_cpu = procstat::cpu_time(fpm_pid).since(fpm_before);
        latencies.sort_unstable();
        let percentile = |q: f64| -> f64 {
            if latencies.is_empty() {
                return f64::NAN;
            }
            let rank = (latencies.len() as f64 * q).ceil() as usize;
            f64::from(latencies[rank.clamp(1, latencies.len()) - 1]) / 1000.0
        };
        DirectReport {
            requests: latencies.len() as u64,
            rps: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: percentile(0.50),
            p99_ms: percentile(0.99),
            max_ms: percentile(1.0),
            failures,
            cpu,
            sys_cpu,
            fpm_cpu,
        }
    })
}

/// Runs the tasks until `duration` is over: latencies (µs) of the successful requests and
/// the number of failures.
async fn drive(
    pool: &Pool,
    script: &str,
    root: &str,
    connections: usize,
    duration: Duration,
) -> (Vec<u32>, u64) {
    let deadline = Instant::now() + duration;
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let pool = pool.clone();
        let (script, root) = (script.to_owned(), root.to_owned());
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(64 * 1024);
            while Instant::now() < deadline {
                let start = Instant::now();
                match send(&pool, &script, &root).await {
                    Ok(()) => latencies
                        .push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX)),
                    Err(err) => {
                        if failures.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("php-fpm direct: first failure: {err}");
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a load task panicked"));
    }
    (all, failures.load(Ordering::Relaxed))
}

/// One request, its params built anew as a server would, its body read to the end.
async fn send(pool: &Pool, script: &str, root: &str) -> Result<(), String> {
    let response = pool
        .send(Request::new(params(script, root)))
        .await
        .map_err(|err| err.to_string())?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| err.to_string())?
        .to_bytes();
    if body.as_ref() != b"Hello, World!" {
        return Err(format!("unexpected body {body:?}"));
    }
    Ok(())
}
