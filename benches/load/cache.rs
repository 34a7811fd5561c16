//! The response cache rows (`--only cache`): `cached.php` (20 ms of PHP, `Cache-Control:
//! public, max-age=10`) through the gateway with its cache, nginx with `fastcgi_cache`
//! (same TTL, `fastcgi_cache_lock on`) and the gateway without cache, at 32 connections;
//! then a stampede: 1,000 connections on one key whose TTL (1 s) expires again and again,
//! counting how often PHP ran against the number of TTLs the run spanned; and browser
//! hits: a 58 KB page asked for with `Accept-Encoding: gzip`, the gateway's cache (which
//! keeps the page compressed) against nginx's `fastcgi_cache` with `gzip on` at the same
//! level.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use fpm_harness::{free_port, Nginx};
use serde_json::{json, Value};

use crate::report::Row;
use crate::servers::{gateway_config, nginx_config, spawn_gateway, Kind, Process, Server};
use crate::wrk::WrkRun;
use crate::{measure_started, Options, CLIENT_TIMEOUT};

/// The page: 20 ms of PHP, cacheable for 10 s.
const PAGE: &str = "/cached.php?ms=20&ttl=10";

/// The browser rows' page: the same, 2,000 lines (58 KB, a WordPress home page's size).
const BROWSER_PAGE: &str = "/cached.php?ms=20&ttl=10&lines=2000";

/// The stampede's key: cacheable for 1 s, so it expires every second of the run.
const STAMPEDE_TTL_SECS: u64 = 1;

/// Connections of the stampede.
const STAMPEDE_CONNECTIONS: usize = 1000;

/// Which server a cache row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheServer {
    /// The gateway with `[cache] memory = "64MiB"` and every tenant cached.
    GatewayCached,
    /// nginx keepalive with `fastcgi_cache` and `fastcgi_cache_lock on`.
    NginxCached,
    /// The gateway with its shipped defaults (no cache).
    GatewayUncached,
    /// nginx keepalive with `fastcgi_cache` + lock and `gzip on; gzip_comp_level 5` (the
    /// gateway's gzip level), for the browser rows.
    NginxCachedGzip,
}

impl CacheServer {
    fn id(self) -> &'static str {
        match self {
            CacheServer::GatewayCached => "gateway_cache",
            CacheServer::NginxCached => "nginx_fastcgi_cache",
            CacheServer::GatewayUncached => "gateway_no_cache",
            CacheServer::NginxCachedGzip => "nginx_fastcgi_cache_gzip",
        }
    }

    fn label(self) -> &'static str {
        match self {
            CacheServer::GatewayCached => "gateway, response cache",
            CacheServer::NginxCached => "nginx keepalive, fastcgi_cache + lock",
            CacheServer::GatewayUncached => "gateway, no cache",
            CacheServer::NginxCachedGzip => "nginx keepalive, fastcgi_cache + lock, gzip 5",
        }
    }

    fn start(self, gateway_bin: &Path) -> Server {
        Server::launch(self.kind(), |upstream, dir| match self {
            CacheServer::GatewayCached | CacheServer::GatewayUncached => {
                let port = free_port();
                let mut tenants = String::new();
                if self == CacheServer::GatewayCached {
                    tenants.push_str(
                        "[cache]\nmemory = \"64MiB\"\n\n[defaults.cache]\nenabled = true\n\n",
                    );
                }
                for (name, host) in crate::servers::HOSTS {
                    crate::servers::tenant_table(&mut tenants, name, host);
                }
                let config = gateway_config(port, upstream, "", &tenants);
                (port, spawn_gateway(gateway_bin, dir, &config, false))
            }
            CacheServer::NginxCached | CacheServer::NginxCachedGzip => {
                let cache_dir = dir.join("fastcgi_cache");
                let gzip = if self == CacheServer::NginxCachedGzip {
                    "gzip on;\ngzip_comp_level 5;\ngzip_min_length 1024;\n"
                } else {
                    ""
                };
                let config = format!(
                    "{gzip}fastcgi_cache_path {} levels=1:2 keys_zone=bench:10m max_size=64m;\n{}",
                    cache_dir.display(),
                    nginx_config(upstream, true)
                )
                .replace(
                    "fastcgi_pass php_fpm;",
                    "fastcgi_pass php_fpm;\n        fastcgi_cache bench;\n        \
                     fastcgi_cache_key $scheme$host$request_uri;\n        \
                     fastcgi_cache_lock on;\n        \
                     add_header X-Cache-Status $upstream_cache_status;",
                );
                let nginx = Nginx::start(&config).expect("cannot start nginx");
                (nginx.port(), Process::Nginx(nginx))
            }
        })
    }

    fn kind(self) -> Kind {
        match self {
            CacheServer::NginxCached | CacheServer::NginxCachedGzip => Kind::NginxKeepalive,
            CacheServer::GatewayCached | CacheServer::GatewayUncached => Kind::Gateway,
        }
    }
}

/// One stampede run: how often PHP ran under 1,000 connections on one key.
#[derive(Debug, Clone)]
pub struct Stampede {
    /// Row label.
    pub label: String,
    /// Requests completed.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Failed requests (socket errors and error statuses).
    pub failures: u64,
    /// How often PHP ran.
    pub php_runs: u64,
    /// TTL periods the run spanned: PHP should run about once per period.
    pub ttl_periods: u64,
}

/// The cache rows of a run.
#[derive(Debug, Clone, Default)]
pub struct CacheResults {
    /// 32 connections on `cached.php`, per server.
    pub rows: Vec<Row>,
    /// The stampede, per cached server.
    pub stampedes: Vec<Stampede>,
    /// Browser hits (`Accept-Encoding: gzip`, 58 KB page), per cached server.
    pub browser: Vec<Row>,
}

/// Measures every cache row; nginx rows only when nginx is installed.
pub fn measure(gateway_bin: &Path, options: &Options, nginx: bool) -> CacheResults {
    let mut servers = vec![CacheServer::GatewayCached];
    if nginx {
        servers.push(CacheServer::NginxCached);
    }
    servers.push(CacheServer::GatewayUncached);
    let mut results = CacheResults::default();
    for which in &servers {
        eprintln!("load: {} on {PAGE} at 32 connections", which.label());
        let server = which.start(gateway_bin);
        let mut row = measure_started(&server, PAGE, options, options.rounds);
        row.id = which.id().to_owned();
        row.label = which.label().to_owned();
        results.rows.push(row);
    }
    let mut browsers = vec![CacheServer::GatewayCached];
    if nginx {
        browsers.push(CacheServer::NginxCachedGzip);
    }
    for which in browsers {
        eprintln!(
            "load: {} on {BROWSER_PAGE} with Accept-Encoding: gzip",
            which.label()
        );
        let server = which.start(gateway_bin);
        let mut row = crate::measure_gzip_asked(&server, BROWSER_PAGE, options);
        row.id = which.id().to_owned();
        row.label = which.label().to_owned();
        results.browser.push(row);
    }
    for which in servers
        .into_iter()
        .filter(|s| *s != CacheServer::GatewayUncached)
    {
        eprintln!(
            "load: {} stampede at {STAMPEDE_CONNECTIONS} connections",
            which.label()
        );
        let server = which.start(gateway_bin);
        results.stampedes.push(stampede(which, &server, options));
    }
    results
}

/// 1,000 connections on one key with a 1 s TTL for the run's duration; PHP's runs are
/// counted by the page itself.
fn stampede(which: CacheServer, server: &Server, options: &Options) -> Stampede {
    let name = format!("stampede-{}-{}", which.id(), std::process::id());
    let counter = format!("/tmp/fcgi-cached-runs-{name}");
    let _ = std::fs::remove_file(&counter);
    let run = WrkRun {
        url: server.url(&format!(
            "/cached.php?ms=20&ttl={STAMPEDE_TTL_SECS}&runs={name}"
        )),
        host: "bench.test".to_owned(),
        connections: STAMPEDE_CONNECTIONS,
        duration: options.duration,
        timeout: CLIENT_TIMEOUT,
        headers: Vec::new(),
    };
    let started = Instant::now();
    let report = run.run();
    let elapsed = started.elapsed();
    let php_runs = std::fs::read_to_string(&counter)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0);
    let _ = std::fs::remove_file(&counter);
    let ttl = Duration::from_secs(STAMPEDE_TTL_SECS);
    Stampede {
        label: which.label().to_owned(),
        requests: report.requests,
        rps: report.rps,
        p99_ms: report.p99_ms,
        failures: report.failures(),
        php_runs,
        ttl_periods: elapsed.as_secs_f64().div_euclid(ttl.as_secs_f64()) as u64 + 1,
    }
}

impl CacheResults {
    /// The Markdown section, with the targets.
    pub fn markdown(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## Response cache: `cached.php` (20 ms of PHP, `public, max-age=10`), 32 connections\n"
        );
        let _ = writeln!(
            out,
            "| server | req/s | p50 ms | p99 ms | failed | CPU µs/req (kernel) | PHP-FPM µs/req |\n\
             |---|---:|---:|---:|---:|---:|---:|"
        );
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.2} | {:.2} | {} | {:.1} ({:.1}) | {:.1} |",
                row.label,
                row.rps,
                row.p50_ms,
                row.p99_ms,
                row.socket_errors + row.non_2xx,
                row.cpu_us_per_req,
                row.sys_cpu_us_per_req,
                row.fpm_cpu_us_per_req
            );
        }
        let gateway = self.rows.iter().find(|r| r.id == "gateway_cache");
        let nginx = self.rows.iter().find(|r| r.id == "nginx_fastcgi_cache");
        if let (Some(gw), Some(nginx)) = (gateway, nginx) {
            let ratio = gw.rps / nginx.rps;
            let _ = writeln!(
                out,
                "\nTargets: hits ≥ 1.2× nginx fastcgi_cache's req/s: {ratio:.2}× ({}); CPU per \
                 request ≤ nginx's: {:.1} vs {:.1} µs ({}); p99 under 5 ms: {:.2} ms ({}).",
                met(ratio >= 1.2),
                gw.cpu_us_per_req,
                nginx.cpu_us_per_req,
                met(gw.cpu_us_per_req <= nginx.cpu_us_per_req),
                gw.p99_ms,
                met(gw.p99_ms < 5.0)
            );
        }
        if !self.stampedes.is_empty() {
            let _ = writeln!(
                out,
                "\n### Stampede: {STAMPEDE_CONNECTIONS} connections on one key, TTL {STAMPEDE_TTL_SECS} s\n\n\
                 | server | req/s | p99 ms | failed | PHP runs | TTL periods | once per TTL |\n\
                 |---|---:|---:|---:|---:|---:|---|"
            );
            for s in &self.stampedes {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.2} | {} | {} | {} | {} |",
                    s.label,
                    s.rps,
                    s.p99_ms,
                    s.failures,
                    s.php_runs,
                    s.ttl_periods,
                    met(s.php_runs <= s.ttl_periods)
                );
            }
        }
        if !self.browser.is_empty() {
            let _ = writeln!(
                out,
                "\n### Browser hits: a 58 KB page with `Accept-Encoding: gzip`, 32 connections\n\n\
                 The gateway keeps a stored page compressed; nginx's `fastcgi_cache` keeps it as \
                 PHP sent it and `gzip on` (level 5, the gateway's) compresses every hit.\n\n\
                 | server | req/s | ÷ nginx | p99 ms | failed | CPU µs/req (kernel) | ÷ nginx | bytes/answer |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|"
            );
            let nginx = self.browser.iter().find(|r| r.id.starts_with("nginx"));
            for row in &self.browser {
                let ratio = |ours: f64, theirs: Option<f64>| {
                    theirs.map_or_else(|| "–".to_owned(), |t| format!("{:.2}", ours / t))
                };
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {} | {:.2} | {} | {:.1} ({:.1}) | {} | {:.0} |",
                    row.label,
                    row.rps,
                    ratio(row.rps, nginx.map(|n| n.rps)),
                    row.p99_ms,
                    row.socket_errors + row.non_2xx,
                    row.cpu_us_per_req,
                    row.sys_cpu_us_per_req,
                    ratio(row.cpu_us_per_req, nginx.map(|n| n.cpu_us_per_req)),
                    row.wrk.bytes_read / row.requests.max(1) as f64
                );
            }
        }
        out.push('\n');
    }

    /// The JSON object.
    pub fn json(&self) -> Value {
        json!({
            "rows": self.rows.iter().map(|r| json!({
                "id": r.id,
                "label": r.label,
                "rps": r.rps,
                "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms,
                "failures": r.socket_errors + r.non_2xx,
                "cpu_us_per_req": r.cpu_us_per_req,
                "fpm_cpu_us_per_req": r.fpm_cpu_us_per_req,
            })).collect::<Vec<_>>(),
            "stampedes": self.stampedes.iter().map(|s| json!({
                "label": s.label,
                "requests": s.requests,
                "rps": s.rps,
                "p99_ms": s.p99_ms,
                "failures": s.failures,
                "php_runs": s.php_runs,
                "ttl_periods": s.ttl_periods,
            })).collect::<Vec<_>>(),
            "browser": self.browser.iter().map(|r| json!({
                "id": r.id,
                "label": r.label,
                "rps": r.rps,
                "p99_ms": r.p99_ms,
                "failures": r.socket_errors + r.non_2xx,
                "cpu_us_per_req": r.cpu_us_per_req,
                "bytes_per_answer": r.wrk.bytes_read / r.requests.max(1) as f64,
            })).collect::<Vec<_>>(),
        })
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}
