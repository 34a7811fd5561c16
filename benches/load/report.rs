//! The results of a run, and what is made of them: the Markdown report (tables, the
//! targets of issue #6 met or missed), the JSON file and the charts.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::charts::{self, Group};
use crate::env::Machine;
use crate::wrk::WrkReport;

/// One server measured at one concurrency.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Stable identifier (`gateway`, `nginx_keepalive`, ...).
    pub id: String,
    /// Row label.
    pub label: String,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Slowest request, ms.
    pub max_ms: f64,
    /// Requests completed.
    pub requests: u64,
    /// Connect/read/write/timeout errors.
    pub socket_errors: u64,
    /// Answers with status >= 400.
    pub non_2xx: u64,
    /// Server CPU (user + system, whole process tree) per request, µs.
    pub cpu_us_per_req: f64,
    /// The kernel's part of `cpu_us_per_req` (system time), µs.
    pub sys_cpu_us_per_req: f64,
    /// The CPU column is the load-generating client's (PHP-FPM direct), not a server's.
    pub cpu_is_client: bool,
    /// Peak RSS of the server's process tree, MiB (NaN: not measured).
    pub peak_rss_mib: f64,
    /// PHP-FPM's CPU per request, µs: what the server makes the pool spend.
    pub fpm_cpu_us_per_req: f64,
    /// Share of the whole machine busy during the run (0..1), other users included.
    pub machine_busy: f64,
    /// Threads of the server's main process at the end of the run.
    pub threads: u64,
    /// wrk's own report (empty for the direct row).
    pub wrk: WrkReport,
}

impl Row {
    /// Copies the throughput and latency numbers out of `self.wrk`.
    pub fn with_wrk_numbers(mut self) -> Row {
        self.rps = self.wrk.rps;
        self.p50_ms = self.wrk.p50_ms;
        self.p99_ms = self.wrk.p99_ms;
        self.max_ms = self.wrk.max_ms;
        self.requests = self.wrk.requests;
        self.socket_errors = self.wrk.socket_errors;
        self.non_2xx = self.wrk.non_2xx;
        self
    }

    fn failures(&self) -> u64 {
        self.socket_errors + self.non_2xx
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "label": self.label,
            "rps": num(self.rps),
            "p50_ms": num(self.p50_ms),
            "p75_ms": num(self.wrk.p75_ms),
            "p90_ms": num(self.wrk.p90_ms),
            "p99_ms": num(self.p99_ms),
            "max_ms": num(self.max_ms),
            "requests": self.requests,
            "socket_errors": self.socket_errors,
            "timeouts": self.wrk.timeouts,
            "non_2xx": self.non_2xx,
            "cpu_us_per_req": num(self.cpu_us_per_req),
            "sys_cpu_us_per_req": num(self.sys_cpu_us_per_req),
            "cpu_is_client": self.cpu_is_client,
            "peak_rss_mib": num(self.peak_rss_mib),
            "fpm_cpu_us_per_req": num(self.fpm_cpu_us_per_req),
            "machine_busy": num(self.machine_busy),
            "threads": self.threads,
        })
    }
}

/// The gateway's memory with many tenants.
#[derive(Debug, Clone)]
pub struct Memory {
    /// Tenants configured.
    pub tenants: usize,
    /// From spawn to accepting connections.
    pub startup: Duration,
    /// Idle RSS with the 3-tenant config, for comparison.
    pub small_idle_mib: f64,
    /// Idle RSS with `tenants` configured.
    pub idle_mib: f64,
    /// Threads of the gateway.
    pub threads: u64,
    /// Largest RSS sample under 32 connections.
    pub c32_peak_mib: f64,
    /// RSS a few seconds after that load.
    pub after_c32_mib: f64,
    /// Failed requests at 32 connections.
    pub c32_failures: u64,
    /// Largest RSS sample under 1,000 connections.
    pub c1000_peak_mib: f64,
    /// RSS a few seconds after that load.
    pub after_c1000_mib: f64,
    /// Failed requests at 1,000 connections.
    pub c1000_failures: u64,
}

/// One server through the fairness scenario.
#[derive(Debug, Clone)]
pub struct Fairness {
    /// Server identifier.
    pub id: String,
    /// Server label.
    pub label: String,
    /// Tenant B (`hello.php`, 8 connections) alone.
    pub b_base: WrkReport,
    /// Tenant B while A floods.
    pub b_loaded: WrkReport,
    /// Tenant A (`sleep.php?ms=50`, 64 connections).
    pub a: WrkReport,
}

impl Fairness {
    /// B's flooded p99 over its unloaded p99; infinite when B completed nothing at all
    /// under the flood (wrk then reports no latency).
    fn p99_ratio(&self) -> f64 {
        if self.b_loaded.requests == 0 {
            return f64::INFINITY;
        }
        self.b_loaded.p99_ms / self.b_base.p99_ms
    }

    fn rps_share(&self) -> f64 {
        self.b_loaded.rps / self.b_base.rps
    }

    fn failures(&self) -> u64 {
        self.b_base.failures() + self.b_loaded.failures() + self.a.failures()
    }

    /// B's p99 under 5× unloaded, B keeps a third of its req/s, nothing fails.
    fn fair(&self) -> bool {
        self.p99_ratio() < 5.0 && self.rps_share() >= 1.0 / 3.0 && self.failures() == 0
    }
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Results {
    /// The machine.
    pub machine: Machine,
    /// `--quick`.
    pub quick: bool,
    /// Measured runs per server at 32 connections.
    pub rounds: usize,
    /// Length of each measured run.
    pub duration: Duration,
    /// 32 connections.
    pub c32: Vec<Row>,
    /// 1,000 connections.
    pub c1000: Vec<Row>,
    /// 10,000 tenants.
    pub memory: Option<Memory>,
    /// Fairness, per server.
    pub fairness: Vec<Fairness>,
    /// A gzip-compressed 100 KB page, per server.
    pub compressed: Vec<Row>,
    /// Static files: (size label, row), gateway then nginx for each size.
    pub statics: Vec<(String, Row)>,
    /// `hello.php` through one PHP-FPM server and through two, per server.
    pub upstreams: Vec<Row>,
    /// The HTTPS rows, when asked for.
    pub tls: Option<crate::tls::TlsResults>,
    /// The response cache rows, when asked for.
    pub cache: Option<crate::cache::CacheResults>,
    /// 1-minute load average when done.
    pub load_at_end: f64,
}

/// A target of the issue and whether this run met it.
struct Target {
    what: &'static str,
    measured: String,
    met: Option<bool>,
}

impl Results {
    /// Empty results for a run with these settings.
    pub fn new(machine: Machine, quick: bool, rounds: usize, duration: Duration) -> Self {
        Self {
            machine,
            quick,
            rounds,
            duration,
            c32: Vec::new(),
            c1000: Vec::new(),
            memory: None,
            fairness: Vec::new(),
            compressed: Vec::new(),
            statics: Vec::new(),
            upstreams: Vec::new(),
            tls: None,
            cache: None,
            load_at_end: f64::NAN,
        }
    }

    fn row<'a>(rows: &'a [Row], id: &str) -> Option<&'a Row> {
        rows.iter().find(|r| r.id == id)
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let gw = Self::row(&self.c32, "gateway");
        let nginx = Self::row(&self.c32, "nginx_keepalive");
        let direct = Self::row(&self.c32, "php_fpm_direct");
        let ratio = |what: &'static str, a: Option<f64>, b: Option<f64>, ok: fn(f64) -> bool| match (
            a, b,
        ) {
            (Some(a), Some(b)) => Target {
                what,
                measured: format!("{:.2}×", a / b),
                met: Some(ok(a / b)),
            },
            _ => Target {
                what,
                measured: "not measured".to_owned(),
                met: None,
            },
        };
        // nginx runs with its access log off and one worker: say where the quiet and the
        // one-thread gateways stand too.
        let quiet = Self::row(&self.c32, "gateway_quiet");
        let one_thread = Self::row(&self.c32, "gateway_one_thread");
        let with_quiet = |mut target: Target, value: fn(&Row) -> f64| {
            if let (Some(q), Some(n)) = (quiet, nginx) {
                target.measured += &format!(" (access log off: {:.2}×", value(q) / value(n));
                if let Some(o) = one_thread {
                    target.measured +=
                        &format!("; worker_threads = 1: {:.2}×", value(o) / value(n));
                }
                target.measured += ")";
            }
            target
        };
        targets.push(with_quiet(
            ratio(
                "gateway req/s ≥ 1.2× nginx keepalive (32 conns)",
                gw.map(|r| r.rps),
                nginx.map(|r| r.rps),
                |x| x >= 1.2,
            ),
            |r| r.rps,
        ));
        let mut cpu = with_quiet(
            ratio(
                "gateway CPU/req ≤ 0.7× nginx keepalive's",
                gw.map(|r| r.cpu_us_per_req),
                nginx.map(|r| r.cpu_us_per_req),
                |x| x <= 0.7,
            ),
            |r| r.cpu_us_per_req,
        );
        // What bounds this target: the kernel time of the same socket work.
        if let (Some(g), Some(n)) = (gw, nginx) {
            cpu.measured += &format!(
                "; kernel part alone: gateway {:.1} µs, nginx {:.1} µs, against a budget of {:.1} µs",
                g.sys_cpu_us_per_req,
                n.sys_cpu_us_per_req,
                0.7 * n.cpu_us_per_req
            );
        }
        targets.push(cpu);
        targets.push(match gw {
            Some(r) => Target {
                what: "gateway p99 < 25 ms at 32 conns, 4 FPM workers",
                measured: format!("{:.2} ms", r.p99_ms),
                met: Some(r.p99_ms < 25.0),
            },
            None => not_measured("gateway p99 < 25 ms at 32 conns, 4 FPM workers"),
        });
        targets.push(ratio(
            "gateway req/s ≥ 0.85× PHP-FPM direct",
            gw.map(|r| r.rps),
            direct.map(|r| r.rps),
            |x| x >= 0.85,
        ));
        targets.push(match Self::row(&self.c1000, "gateway") {
            Some(r) => Target {
                what: "no failed request at 1,000 conns (gateway)",
                measured: format!(
                    "{} socket errors, {} non-2xx of {} requests",
                    r.socket_errors, r.non_2xx, r.requests
                ),
                met: Some(r.failures() == 0),
            },
            None => not_measured("no failed request at 1,000 conns (gateway)"),
        });
        match &self.memory {
            Some(m) => {
                targets.push(Target {
                    what: "idle RSS < 30 MiB with 10,000 tenants",
                    measured: format!("{:.1} MiB", m.idle_mib),
                    met: Some(m.idle_mib < 30.0),
                });
                let growth = (m.c32_peak_mib - m.idle_mib).max(m.after_c1000_mib - m.idle_mib);
                targets.push(Target {
                    what: "RSS flat under load (peak at 32 conns and RSS after all load within 5 MiB of idle)",
                    measured: format!(
                        "peak {:.1} MiB at 32 conns, {:.1} MiB at 1,000 conns, {:.1} MiB after",
                        m.c32_peak_mib, m.c1000_peak_mib, m.after_c1000_mib
                    ),
                    met: Some(growth < 5.0),
                });
            }
            None => {
                targets.push(not_measured("idle RSS < 30 MiB with 10,000 tenants"));
                targets.push(not_measured("RSS flat under load"));
            }
        }
        targets.push(
            match self.fairness.iter().find(|f| f.id == "gateway") {
                Some(f) => Target {
                    what: "fairness (gateway): B p99 < 5× unloaded, B ≥ 1/3 of unloaded req/s, nothing fails",
                    measured: format!(
                        "p99 {:.2}×, req/s {:.2}×, {} failures",
                        f.p99_ratio(),
                        f.rps_share(),
                        f.failures()
                    ),
                    met: Some(f.fair()),
                },
                None => not_measured("fairness (gateway)"),
            },
        );
        targets
    }

    /// The whole report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Load benchmark: gateway, nginx, Caddy, PHP-FPM direct\n"
        );
        let _ = writeln!(
            out,
            "Machine: {}; 1-min load average at end {:.2}.  ",
            self.machine.line(),
            self.load_at_end
        );
        let versions: Vec<String> = self
            .machine
            .versions
            .iter()
            .map(|(name, v)| format!("{name}: `{v}`"))
            .collect();
        let _ = writeln!(out, "Software: {}.  ", versions.join(", "));
        let _ = writeln!(
            out,
            "Command: `cargo bench -p fcgi-gateway-suite --bench load{}`; {} s per run, \
             {} measured run(s) per server at 32 connections (median by req/s).\n",
            if self.quick { " -- --quick" } else { "" },
            self.duration.as_secs(),
            self.rounds
        );
        let _ = writeln!(
            out,
            "Every server has its own PHP-FPM 8.2 pool (pm = static, 4 workers, TCP loopback) \
             serving the one-line `hello.php`; load from `wrk -t1 -cN -d{}s --latency` on the \
             same 2 cores. Gateway: shipped defaults, `max_connections = 4`, access log ON \
             (text on stderr, to a file outside the config's directory, which the gateway \
             watches); the \"access log off\" row sets `RUST_LOG=warn`, the \"worker_threads = 1\" row sets that in `[server]`. \
             nginx: 1 worker, access_log off, `fastcgi_keep_conn on` + upstream `keepalive 4` \
             (or neither). Caddy: `php_fastcgi`, defaults. CPU = utime+stime of the server's \
             process tree over the run ÷ requests, in parentheses the stime (kernel) part; RSS = VmHWM summed over the tree. PHP-FPM \
             direct is fcgi-core's pool in the bench process: its CPU column is the client's, \
             no RSS.\n",
            self.duration.as_secs()
        );
        if !self.c32.is_empty() {
            let _ = writeln!(out, "## 32 connections\n");
            self.rows_table(&mut out, &self.c32);
        }
        if !self.c1000.is_empty() {
            let _ = writeln!(out, "## 1,000 connections (4 PHP-FPM workers)\n");
            self.rows_table(&mut out, &self.c1000);
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(out, "## Gateway memory with {} tenants\n", m.tenants);
            let _ = writeln!(out, "| state | RSS MiB |\n|---|---:|");
            let _ = writeln!(out, "| 3 tenants, idle | {:.1} |", m.small_idle_mib);
            let _ = writeln!(
                out,
                "| {} tenants, idle (ready {:.2} s after start, {} threads) | {:.1} |",
                m.tenants,
                m.startup.as_secs_f64(),
                m.threads,
                m.idle_mib
            );
            let _ = writeln!(
                out,
                "| peak under 32 connections ({} failed) | {:.1} |",
                m.c32_failures, m.c32_peak_mib
            );
            let _ = writeln!(out, "| after it | {:.1} |", m.after_c32_mib);
            let _ = writeln!(
                out,
                "| peak under 1,000 connections ({} failed) | {:.1} |",
                m.c1000_failures, m.c1000_peak_mib
            );
            let _ = writeln!(out, "| after it | {:.1} |\n", m.after_c1000_mib);
        }
        if !self.compressed.is_empty() {
            let _ = writeln!(
                out,
                "## Compressed 100 KB HTML page (`compress.php`, `Accept-Encoding: gzip`, gzip level 5, 32 connections)\n"
            );
            let _ = writeln!(
                out,
                "| server | req/s | CPU µs/req | bytes/answer on the wire (headers included) | p99 ms | failed |"
            );
            let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
            for row in &self.compressed {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.1} | {:.0} | {:.2} | {} |",
                    row.label,
                    row.rps,
                    row.cpu_us_per_req,
                    row.wrk.bytes_read / row.requests.max(1) as f64,
                    row.p99_ms,
                    row.socket_errors + row.non_2xx
                );
            }
            let _ = writeln!(out);
        }
        if !self.statics.is_empty() {
            self.statics_markdown(&mut out);
        }
        if !self.upstreams.is_empty() {
            let _ = writeln!(
                out,
                "## One upstream server (4 workers) vs two (2 workers each), `hello.php`, 32 connections\n"
            );
            let _ = writeln!(
                out,
                "| server | req/s | p99 ms | CPU µs/req (kernel) | peak RSS MiB | failed |"
            );
            let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
            for row in &self.upstreams {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.2} | {:.1} ({:.1}) | {:.1} | {} |",
                    row.label,
                    row.rps,
                    row.p99_ms,
                    row.cpu_us_per_req,
                    row.sys_cpu_us_per_req,
                    row.peak_rss_mib,
                    row.socket_errors + row.non_2xx
                );
            }
            let _ = writeln!(out);
        }
        if !self.fairness.is_empty() {
            let _ = writeln!(
                out,
                "## Fairness: A floods `sleep.php?ms=50` at 64 conns, B sends `hello.php` at 8\n"
            );
            let _ = writeln!(
                out,
                "| server | B alone req/s | B alone p99 ms | B flooded req/s | B flooded p99 ms | B p99 × | B req/s share | A req/s | A p99 ms | failures | fair? |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
            );
            for f in &self.fairness {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.2} | {:.0} | {} | {} | {:.2} | {:.0} | {:.0} | {} | {} |",
                    f.label,
                    f.b_base.rps,
                    f.b_base.p99_ms,
                    f.b_loaded.rps,
                    if f.b_loaded.requests == 0 {
                        "none completed".to_owned()
                    } else {
                        format!("{:.2}", f.b_loaded.p99_ms)
                    },
                    if f.p99_ratio().is_finite() {
                        format!("{:.1}", f.p99_ratio())
                    } else {
                        "∞".to_owned()
                    },
                    f.rps_share(),
                    f.a.rps,
                    f.a.p99_ms,
                    f.failures(),
                    if f.fair() { "yes" } else { "no" }
                );
            }
            let _ = writeln!(
                out,
                "\nThe gateway rows use the shipped defaults (no per-tenant cap: a freed PHP-FPM \
                 connection goes to the waiting tenant holding the fewest), then tenant A \
                 capped at `max_concurrency = 3`. The target is judged on the defaults.\n"
            );
        }
        if let Some(cache) = &self.cache {
            cache.markdown(&mut out);
        }
        if let Some(tls) = &self.tls {
            tls.markdown(&mut out, &self.c32);
        }
        let _ = writeln!(out, "## Targets (issue #6)\n");
        let _ = writeln!(out, "| target | measured | met? |\n|---|---|---|");
        for t in self.targets() {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            };
            let _ = writeln!(out, "| {} | {} | {} |", t.what, t.measured, verdict);
        }
        out
    }

    fn rows_table(&self, out: &mut String, rows: &[Row]) {
        let nginx = Self::row(rows, "nginx_keepalive").map(|r| r.rps);
        let _ = writeln!(
            out,
            "| server | req/s | p50 ms | p99 ms | max ms | socket errors | non-2xx | CPU µs/req (kernel) | peak RSS MiB | PHP-FPM µs/req | req/s ÷ nginx keepalive |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in rows {
            let cpu = format!(
                "{} ({}){}",
                fixed(r.cpu_us_per_req, 1),
                fixed(r.sys_cpu_us_per_req, 1),
                if r.cpu_is_client { " client" } else { "" }
            );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                fixed(r.rps, 0),
                fixed(r.p50_ms, 2),
                fixed(r.p99_ms, 2),
                fixed(r.max_ms, 1),
                r.socket_errors,
                r.non_2xx,
                cpu,
                fixed(r.peak_rss_mib, 1),
                fixed(r.fpm_cpu_us_per_req, 1),
                nginx.map_or_else(|| "—".to_owned(), |n| format!("{:.2}", r.rps / n)),
            );
        }
        out.push('\n');
    }

    /// Everything as JSON.
    pub fn json(&self) -> Value {
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|t| json!({ "target": t.what, "measured": t.measured, "met": t.met }))
            .collect();
        json!({
            "machine": {
                "nproc": self.machine.nproc,
                "cpu_model": self.machine.cpu_model,
                "kernel": self.machine.kernel,
                "date": self.machine.date,
                "load_at_start": num(self.machine.load_at_start),
                "load_at_end": num(self.load_at_end),
                "versions": self.machine.versions.iter().map(|(n, v)| json!({"name": n, "version": v})).collect::<Vec<_>>(),
            },
            "quick": self.quick,
            "rounds": self.rounds,
            "duration_s": self.duration.as_secs(),
            "c32": self.c32.iter().map(Row::json).collect::<Vec<_>>(),
            "c1000": self.c1000.iter().map(Row::json).collect::<Vec<_>>(),
            "memory": self.memory.as_ref().map(|m| json!({
                "tenants": m.tenants,
                "startup_s": m.startup.as_secs_f64(),
                "small_idle_mib": num(m.small_idle_mib),
                "idle_mib": num(m.idle_mib),
                "threads": m.threads,
                "c32_peak_mib": num(m.c32_peak_mib),
                "after_c32_mib": num(m.after_c32_mib),
                "c32_failures": m.c32_failures,
                "c1000_peak_mib": num(m.c1000_peak_mib),
                "after_c1000_mib": num(m.after_c1000_mib),
                "c1000_failures": m.c1000_failures,
            })),
            "fairness": self.fairness.iter().map(|f| json!({
                "id": f.id,
                "label": f.label,
                "b_alone": wrk_json(&f.b_base),
                "b_flooded": wrk_json(&f.b_loaded),
                "a_flood": wrk_json(&f.a),
                "b_p99_ratio": num(f.p99_ratio()),
                "b_rps_share": num(f.rps_share()),
                "fair": f.fair(),
            })).collect::<Vec<_>>(),
            "compressed": self.compressed.iter().map(|r| json!({
                "id": r.id,
                "label": r.label,
                "rps": num(r.rps),
                "cpu_us_per_req": num(r.cpu_us_per_req),
                "bytes_per_answer": num(r.wrk.bytes_read / r.requests.max(1) as f64),
                "p99_ms": num(r.p99_ms),
            })).collect::<Vec<_>>(),
            "static": self.statics.iter().map(|(size, r)| json!({
                "size": size,
                "id": r.id,
                "label": r.label,
                "rps": num(r.rps),
                "cpu_us_per_req": num(r.cpu_us_per_req),
                "sys_cpu_us_per_req": num(r.sys_cpu_us_per_req),
                "peak_rss_mib": num(r.peak_rss_mib),
                "p99_ms": num(r.p99_ms),
                "failed": r.socket_errors + r.non_2xx,
            })).collect::<Vec<_>>(),
            "upstreams": self.upstreams.iter().map(|r| json!({
                "id": r.id,
                "label": r.label,
                "rps": num(r.rps),
                "cpu_us_per_req": num(r.cpu_us_per_req),
                "p99_ms": num(r.p99_ms),
                "failed": r.socket_errors + r.non_2xx,
            })).collect::<Vec<_>>(),
            "tls": self.tls.as_ref().map(crate::tls::TlsResults::json),
            "cache": self.cache.as_ref().map(crate::cache::CacheResults::json),
            "targets": targets,
        })
    }

    /// The static-file table: each size's gateway rows against nginx's in the same run,
    /// like with like (see [`static_peer_id`]; the targets: ≥ 1.0x nginx's req/s,
    /// ≤ 1.2x its CPU per request).
    fn statics_markdown(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## Static files, 32 connections (nginx: `sendfile on; tcp_nopush on`)\n\n\
             Each row is divided by its like: the gateway's default (a runtime thread per \
             core) by nginx with `worker_processes auto` (a worker per core, Debian's \
             `nginx.conf`), the gateway with `worker_threads = 1` by nginx with one worker.\n"
        );
        let _ = writeln!(
            out,
            "| file | server | req/s | ÷ nginx | CPU µs/req (kernel) | ÷ nginx | peak RSS MiB | p99 ms | failed |"
        );
        let _ = writeln!(
            out,
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for (size, row) in &self.statics {
            let nginx = self
                .statics
                .iter()
                .find(|(s, r)| s == size && Some(&r.id) == static_peer_id(&row.id).as_ref())
                .map(|(_, r)| r);
            let ratio = |ours: f64, theirs: Option<f64>| {
                theirs.map_or_else(|| "–".to_owned(), |t| format!("{:.2}", ours / t))
            };
            let _ = writeln!(
                out,
                "| {size} | {} | {:.0} | {} | {:.1} ({:.1}) | {} | {:.1} | {:.2} | {} |",
                row.label,
                row.rps,
                ratio(row.rps, nginx.map(|n| n.rps)),
                row.cpu_us_per_req,
                row.sys_cpu_us_per_req,
                ratio(row.cpu_us_per_req, nginx.map(|n| n.cpu_us_per_req)),
                row.peak_rss_mib,
                row.p99_ms,
                row.socket_errors + row.non_2xx
            );
        }
        let _ = writeln!(out);
    }

    /// One SVG latency chart per scenario measured, into `dir`.
    pub fn charts(&self, dir: &Path) {
        let rows_groups = |rows: &[Row]| -> Vec<Group> {
            rows.iter()
                .map(|r| Group {
                    label: r.label.replace(" (fcgi-core, no HTTP)", ""),
                    values: vec![r.p50_ms, r.p99_ms],
                })
                .collect()
        };
        if !self.c32.is_empty() {
            charts::latency_bars(
                &dir.join("c32_latency.svg"),
                "hello.php, 32 connections: latency",
                &["p50", "p99"],
                &rows_groups(&self.c32),
            );
        }
        if !self.c1000.is_empty() {
            charts::latency_bars(
                &dir.join("c1000_latency.svg"),
                "hello.php, 1,000 connections: latency",
                &["p50", "p99"],
                &rows_groups(&self.c1000),
            );
        }
        if !self.fairness.is_empty() {
            let groups: Vec<Group> = self
                .fairness
                .iter()
                .flat_map(|f| {
                    [
                        Group {
                            label: format!("{}: B alone", f.label),
                            values: vec![f.b_base.p50_ms, f.b_base.p99_ms],
                        },
                        Group {
                            label: format!("{}: B flooded", f.label),
                            values: vec![f.b_loaded.p50_ms, f.b_loaded.p99_ms],
                        },
                    ]
                })
                .collect();
            charts::latency_bars(
                &dir.join("fairness_latency.svg"),
                "fairness: tenant B's hello.php latency, alone and while A floods",
                &["p50", "p99"],
                &groups,
            );
        }
    }
}

fn not_measured(what: &'static str) -> Target {
    Target {
        what,
        measured: "not measured".to_owned(),
        met: None,
    }
}

fn wrk_json(r: &WrkReport) -> Value {
    json!({
        "rps": num(r.rps),
        "requests": r.requests,
        "p50_ms": num(r.p50_ms),
        "p75_ms": num(r.p75_ms),
        "p90_ms": num(r.p90_ms),
        "p99_ms": num(r.p99_ms),
        "max_ms": num(r.max_ms),
        "socket_errors": r.socket_errors,
        "timeouts": r.timeouts,
        "non_2xx": r.non_2xx,
    })
}

/// A number for JSON: NaN and infinities (not measured) become null.
fn num(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// A table cell: `—` when not measured.
fn fixed(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "—".to_owned()
    }
}

/// The id of the static row that row `id` is divided by, like with like: the gateway's
/// default (a thread per core) by nginx with a worker per core, one gateway thread by one
/// nginx worker, each nginx row by itself. Row ids are `{kind}_{file}`.
fn static_peer_id(id: &str) -> Option<String> {
    const PEERS: [(&str, &str); 4] = [
        ("gateway_one_thread_", "nginx_sendfile_"),
        ("gateway_", "nginx_sendfile_auto_"),
        ("nginx_sendfile_auto_", "nginx_sendfile_auto_"),
        ("nginx_sendfile_", "nginx_sendfile_"),
    ];
    PEERS
        .iter()
        .find_map(|(kind, peer)| id.strip_prefix(kind).map(|file| format!("{peer}{file}")))
}
