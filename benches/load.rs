//! Load benchmark: the gateway side by side with nginx (with and without FastCGI
//! keep-alive), Caddy and "PHP-FPM direct" (fcgi-core's pool driven from this process, no
//! HTTP), each in front of its own identical PHP-FPM pool, loaded by wrk.
//!
//! ```text
//! cargo bench -p fcgi-gateway-suite --bench load              # full run (~8 minutes)
//! cargo bench -p fcgi-gateway-suite --bench load -- --quick   # smoke run (~1.5 minutes)
//! ```
//!
//! Options after `--`: `--quick` (short runs, results in `benches/results/quick/`),
//! `--rounds N` (measured runs per server at 32 connections and in the HTTPS rows, median
//! by req/s; default 3),
//! `--duration SECS` (per run; default 10),
//! `--only c32,c1000,memory,fairness,compressed,static,upstreams,tls,cache`
//! (compressed: a 100 KB page with `Accept-Encoding: gzip`, gateway vs nginx at gzip
//! level 5: CPU per request and bytes on the wire; static: 4 KB, 300 KB and 20 MB files,
//! gateway vs nginx with `sendfile on; tcp_nopush on`; upstreams: `hello.php` through an
//! upstream of two PHP-FPM servers of 2 workers each, gateway and nginx; tls: the HTTPS
//! rows, or some of them with `tls-handshakes`, `tls-h1`, `tls-h2`, see `load/tls.rs`;
//! HTTP/2 needs h2load, `apt-get install nghttp2-client`; cache: `cached.php`, 20 ms of PHP
//! marked `public, max-age=10`, through the gateway's response cache, nginx's
//! `fastcgi_cache` with `fastcgi_cache_lock on` and the gateway without cache, then 1,000
//! connections on one key expiring every second, counting PHP's runs, see `load/cache.rs`).
//! `GATEWAY_BIN` picks a gateway binary; otherwise `cargo build --release -p gateway` runs
//! first. It installs nothing: it needs wrk and php-fpm, and skips nginx or Caddy rows when
//! they are missing (`apt-get install wrk nginx-light caddy`, or
//! `scripts/ensure-php-fpm.sh --with-nginx --with-bench`). The machine should be quiet:
//! every process shares the same cores.
//!
//! Scenarios (all `hello.php` unless said otherwise; servers use their shipped defaults,
//! the gateway's access log included):
//! - **c32**: `wrk -t1 -c32 -d10s --latency` against each server, plus PHP-FPM direct at
//!   32 concurrent tasks. CPU per request is utime+stime of the server's process tree
//!   (nginx: master and worker) over the run, with the stime (kernel) part beside it; peak RSS is VmHWM summed over that tree.
//! - **c1000**: the same with 1,000 connections: requests queue, none may fail.
//! - **memory**: the gateway's RSS idle with 10,000 tenants configured, then under load.
//! - **fairness**: tenant A floods `sleep.php?ms=50` at 64 connections while tenant B
//!   sends `hello.php` at 8; B's latency and throughput against its unloaded baseline,
//!   through the gateway (shipped defaults, then with A capped at `max_concurrency = 3`)
//!   and through nginx.
//!
//! Prints a Markdown report and writes it to `benches/results/latest.md`, with
//! `latest.json` and one SVG latency chart per scenario. `cargo test` does not run it:
//! without cargo bench's `--bench` argument it only says how to.
//!
//! Code map: `load/env.rs` (tools, gateway binary, machine), `load/servers.rs` (starting
//! each server and its PHP-FPM), `load/wrk.rs` (running and parsing wrk),
//! `load/procstat.rs` (CPU and memory from /proc), `load/fpm_direct.rs` (the direct row),
//! `load/report.rs` (tables, targets, JSON), `load/charts.rs` (SVG), `load/tls.rs` (the
//! HTTPS rows: certificate, TLS configs, handshake client, h2load).

#[path = "load/cache.rs"]
mod cache;
#[path = "load/charts.rs"]
mod charts;
#[path = "load/env.rs"]
mod env;
#[path = "load/fpm_direct.rs"]
mod fpm_direct;
#[path = "load/procstat.rs"]
mod procstat;
#[path = "load/report.rs"]
mod report;
#[path = "load/servers.rs"]
mod servers;
#[path = "load/tls.rs"]
mod tls;
#[path = "load/wrk.rs"]
mod wrk;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use report::{Fairness, Memory, Results, Row};
use servers::{Kind, Server};
use wrk::{WrkReport, WrkRun};

/// How the run was asked for.
#[derive(Debug, Clone)]
struct Options {
    quick: bool,
    rounds: usize,
    duration: Duration,
    warmup: Duration,
    only: Option<Vec<String>>,
}

impl Options {
    fn parse() -> Option<Options> {
        let mut args = std::env::args().skip(1);
        let mut bench = false;
        let mut quick = false;
        let mut rounds = None;
        let mut duration = None;
        let mut only = None;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--bench" => bench = true,
                "--quick" => quick = true,
                "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()),
                "--duration" => duration = args.next().and_then(|v| v.parse().ok()),
                "--only" => {
                    only = args
                        .next()
                        .map(|v| v.split(',').map(str::to_owned).collect())
                }
                other => eprintln!("load: ignoring unknown argument {other:?}"),
            }
        }
        if !bench {
            return None;
        }
        Some(Options {
            quick,
            rounds: rounds.unwrap_or(if quick { 1 } else { 3 }).max(1),
            duration: Duration::from_secs(duration.unwrap_or(if quick { 2 } else { 10 })),
            warmup: Duration::from_secs(if quick { 1 } else { 2 }),
            only,
        })
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == scenario))
    }
}

/// The clients' timeout: longer than the gateway's queue timeout (30 s), so a request
/// waiting its turn is measured, not counted as an error.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(31);

fn main() {
    let Some(options) = Options::parse() else {
        println!("load: skipped; run it with `cargo bench -p fcgi-gateway-suite --bench load`");
        return;
    };
    raise_fd_limit();
    let tools = env::check_tools();
    let gateway_bin = env::gateway_binary();
    let machine = env::Machine::describe(&gateway_bin, &tools);
    eprintln!("load: {}", machine.line());
    if machine.load_at_start > 1.0 {
        eprintln!(
            "load: warning: load average {:.2}; other processes share the cores, \
             numbers will be noisy",
            machine.load_at_start
        );
    }

    let mut kinds = vec![Kind::Gateway, Kind::GatewayQuiet, Kind::GatewayOneThread];
    if tools.nginx {
        kinds.extend([Kind::NginxKeepalive, Kind::NginxPlain]);
    }
    if tools.caddy {
        kinds.push(Kind::Caddy);
    }

    let mut results = Results::new(machine, options.quick, options.rounds, options.duration);
    if options.wants("c32") {
        for &kind in &kinds {
            results.c32.push(measure_server(
                kind,
                &gateway_bin,
                32,
                &options,
                options.rounds,
            ));
        }
        results.c32.push(measure_direct(32, &options));
    }
    if options.wants("c1000") {
        for &kind in kinds.iter().filter(|k| **k != Kind::GatewayQuiet) {
            results
                .c1000
                .push(measure_server(kind, &gateway_bin, 1000, &options, 1));
        }
    }
    if options.wants("memory") {
        results.memory = Some(measure_memory(&gateway_bin, &options));
    }
    if options.wants("fairness") {
        for kind in [Kind::Gateway, Kind::GatewayCapped] {
            results
                .fairness
                .push(measure_fairness(kind, &gateway_bin, &options));
        }
        if tools.nginx {
            results.fairness.push(measure_fairness(
                Kind::NginxKeepalive,
                &gateway_bin,
                &options,
            ));
        }
    }
    if options.wants("static") {
        let root = static_root();
        for (size, name) in STATIC_FILES {
            // Like with like: the gateway's default (a runtime thread per core) against
            // nginx with a worker per core, one thread against one worker.
            let mut kinds = vec![Kind::Gateway];
            if tools.nginx {
                kinds.push(Kind::NginxSendfileAuto);
            }
            kinds.push(Kind::GatewayOneThread);
            if tools.nginx {
                kinds.push(Kind::NginxSendfile);
            }
            for kind in kinds {
                eprintln!("load: {} on a {size} file", kind.label());
                let server = Server::start_static(kind, &gateway_bin, root.path(), name);
                let mut row = measure_started(&server, name, &options, options.rounds);
                row.id = format!(
                    "{}_{}",
                    row.id,
                    name.trim_start_matches('/').replace('.', "_")
                );
                row.label = format!("{}, {size} file", row.label);
                results.statics.push((size.to_owned(), row));
            }
        }
    }
    if options.wants("upstreams") {
        let mut kinds = vec![Kind::Gateway, Kind::GatewayTwoServers];
        if tools.nginx {
            kinds.extend([Kind::NginxKeepalive, Kind::NginxTwoServers]);
        }
        for kind in kinds {
            eprintln!("load: {} at 32 connections", kind.label());
            let server = match kind {
                Kind::GatewayTwoServers | Kind::NginxTwoServers => {
                    Server::start_two_servers(kind, &gateway_bin)
                }
                _ => Server::start(kind, &gateway_bin),
            };
            results.upstreams.push(measure_started(
                &server,
                "/hello.php",
                &options,
                options.rounds,
            ));
        }
    }
    if options.wants("compressed") {
        let mut compressed = vec![Kind::GatewayGzip];
        if tools.nginx {
            compressed.push(Kind::NginxGzip);
        }
        for kind in compressed {
            results
                .compressed
                .push(measure_compressed(kind, &gateway_bin, &options));
        }
    }
    if options.wants("cache") {
        results.cache = Some(cache::measure(&gateway_bin, &options, tools.nginx));
    }
    if let Some(wanted) = tls::Wanted::from(&options) {
        results.tls = Some(tls::measure(
            wanted,
            &gateway_bin,
            &options,
            tools.nginx,
            tools.caddy,
        ));
    }
    results.load_at_end = procstat::load_average();

    let dir = results_dir(options.quick);
    let markdown = results.markdown();
    println!("{markdown}");
    std::fs::create_dir_all(&dir).expect("cannot create the results directory");
    std::fs::write(dir.join("latest.md"), &markdown).expect("cannot write latest.md");
    let json = serde_json::to_string_pretty(&results.json()).expect("results serialise");
    std::fs::write(dir.join("latest.json"), json + "\n").expect("cannot write latest.json");
    results.charts(&dir);
    eprintln!("load: wrote {}", dir.display());
}

fn results_dir(quick: bool) -> PathBuf {
    let dir = env::workspace_root().join("benches").join("results");
    if quick {
        dir.join("quick")
    } else {
        dir
    }
}

/// wrk at 1,000 connections needs more descriptors than the usual soft limit; children
/// (wrk, the servers) inherit the raised limit.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The static rows' files: (label, path under the root).
const STATIC_FILES: [(&str, &str); 3] = [
    ("4 KB", "/4k.bin"),
    ("300 KB", "/300k.bin"),
    ("20 MB", "/20m.bin"),
];

/// A document root with the static rows' files (random bytes: nothing compresses them).
fn static_root() -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("load-static-")
        .tempdir()
        .expect("cannot create the static root");
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for (size, name) in [
        (4096, "4k.bin"),
        (300 * 1024, "300k.bin"),
        (20 << 20, "20m.bin"),
    ] {
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(root.path().join(name), bytes).expect("cannot write a static file");
    }
    // The servers' start check asks for hello.php.
    std::fs::copy(
        fpm_harness::fixtures_dir().join("hello.php"),
        root.path().join("hello.php"),
    )
    .expect("cannot copy hello.php");
    root
}

/// Warms `server` up on `path` and measures `rounds` runs of wrk at 32 connections;
/// returns the run with the median req/s.
fn measure_started(server: &Server, path: &str, options: &Options, rounds: usize) -> Row {
    let run = WrkRun {
        url: server.url(path),
        host: "bench.test".to_owned(),
        connections: 32,
        duration: options.duration,
        timeout: CLIENT_TIMEOUT,
        headers: Vec::new(),
    };
    run.warm_up(options.warmup);
    let mut rows: Vec<Row> = (0..rounds)
        .map(|_| {
            let row = measure_once(server, &run);
            eprintln!(
                "load:   {:.0} req/s, p99 {:.2} ms, {:.1} µs CPU/req, peak RSS {:.1} MiB",
                row.rps, row.p99_ms, row.cpu_us_per_req, row.peak_rss_mib
            );
            row
        })
        .collect();
    rows.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    rows.swap_remove(rows.len() / 2)
}

/// Starts `kind`, warms it up, and measures `rounds` runs of wrk at `connections`;
/// returns the run with the median req/s.
fn measure_server(
    kind: Kind,
    gateway_bin: &Path,
    connections: usize,
    options: &Options,
    rounds: usize,
) -> Row {
    eprintln!("load: {} at {connections} connections", kind.label());
    let server = Server::start(kind, gateway_bin);
    let run = WrkRun {
        url: server.url("/hello.php"),
        host: "bench.test".to_owned(),
        connections,
        duration: options.duration,
        timeout: CLIENT_TIMEOUT,
        headers: Vec::new(),
    };
    WrkRun {
        connections: 32,
        duration: options.warmup,
        ..run.clone()
    }
    .run();
    let mut rows: Vec<Row> = (0..rounds)
        .map(|_| {
            let row = measure_once(&server, &run);
            eprintln!(
                "load:   {:.0} req/s, p99 {:.2} ms, {:.1} µs CPU/req",
                row.rps, row.p99_ms, row.cpu_us_per_req
            );
            row
        })
        .collect();
    rows.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    rows.swap_remove(rows.len() / 2)
}

fn measure_once(server: &Server, run: &WrkRun) -> Row {
    measure_with(server, || run.run())
}

/// Runs `load` (a client that reports like wrk) against `server`, with the server's and
/// its PHP-FPM's CPU over the run.
fn measure_with(server: &Server, load: impl FnOnce() -> WrkReport) -> Row {
    let (pid, fpm_pid) = (server.pid(), server.fpm_pid());
    let cpu = procstat::cpu_time(pid);
    let fpm_cpu = procstat::cpu_time(fpm_pid);
    let machine = procstat::MachineCpu::now();
    let report = load();
    let machine_busy = procstat::MachineCpu::now().busy_since(machine);
    let cpu_after = procstat::cpu_time(pid);
    let (cpu, sys_cpu) = (cpu_after.since(cpu), cpu_after.system_since(cpu));
    let fpm_cpu = procstat::cpu_time(fpm_pid).since(fpm_cpu);
    let per_request = |d: Duration| d.as_secs_f64() * 1e6 / report.requests.max(1) as f64;
    Row {
        id: server.kind.id().to_owned(),
        label: server.kind.label().to_owned(),
        cpu_us_per_req: per_request(cpu),
        sys_cpu_us_per_req: per_request(sys_cpu),
        cpu_is_client: false,
        peak_rss_mib: mib(procstat::peak_rss(pid)),
        fpm_cpu_us_per_req: per_request(fpm_cpu),
        machine_busy,
        threads: procstat::threads(pid),
        wrk: report,
        ..Row::default()
    }
    .with_wrk_numbers()
}

/// A 100 KB HTML page (`compress.php`) asked for with `Accept-Encoding: gzip` at 32
/// connections: the server's CPU per request and the bytes per answer on the wire.
fn measure_compressed(kind: Kind, gateway_bin: &Path, options: &Options) -> Row {
    eprintln!("load: {} on a gzip-compressed 100 KB page", kind.label());
    let server = Server::start(kind, gateway_bin);
    measure_gzip_asked(&server, "/compress.php?size=100000", options)
}

/// `path` asked for with `Accept-Encoding: gzip` at 32 connections, warmed up, then
/// `options.rounds` runs: the median by req/s (each run prints its bytes per answer).
fn measure_gzip_asked(server: &Server, path: &str, options: &Options) -> Row {
    let run = WrkRun {
        url: server.url(path),
        host: "bench.test".to_owned(),
        connections: 32,
        duration: options.duration,
        timeout: CLIENT_TIMEOUT,
        headers: vec!["Accept-Encoding: gzip".to_owned()],
    };
    run.warm_up(options.warmup);
    let mut rows: Vec<Row> = (0..options.rounds)
        .map(|_| {
            let row = measure_once(server, &run);
            eprintln!(
                "load:   {:.0} req/s, {:.1} µs CPU/req, {:.0} bytes/answer",
                row.rps,
                row.cpu_us_per_req,
                row.wrk.bytes_read / row.requests.max(1) as f64
            );
            row
        })
        .collect();
    rows.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    rows.swap_remove(rows.len() / 2)
}

/// The "PHP-FPM direct" row: fcgi-core's pool in this process, its own PHP-FPM pool.
fn measure_direct(connections: usize, options: &Options) -> Row {
    eprintln!("load: php-fpm direct at {connections} tasks");
    let fpm = fpm_harness::Fpm::start(fpm_harness::FpmConfig::new().workers(servers::FPM_WORKERS))
        .expect("cannot start php-fpm");
    let fpm_pid = fpm.master_pid().expect("php-fpm is running");
    let upstream = fpm.address().to_upstream_string();
    let mut rows: Vec<Row> = (0..options.rounds)
        .map(|round| {
            let machine = procstat::MachineCpu::now();
            // Only the first round needs a warm-up.
            let warmup = if round == 0 {
                options.warmup
            } else {
                Duration::from_millis(100)
            };
            let direct = fpm_direct::run(&upstream, fpm_pid, connections, warmup, options.duration);
            let machine_busy = procstat::MachineCpu::now().busy_since(machine);
            let per_request = |d: Duration| d.as_secs_f64() * 1e6 / direct.requests.max(1) as f64;
            eprintln!(
                "load:   {:.0} req/s, p99 {:.2} ms",
                direct.rps, direct.p99_ms
            );
            Row {
                id: "php_fpm_direct".to_owned(),
                label: "PHP-FPM direct (fcgi-core, no HTTP)".to_owned(),
                rps: direct.rps,
                p50_ms: direct.p50_ms,
                p99_ms: direct.p99_ms,
                max_ms: direct.max_ms,
                requests: direct.requests,
                socket_errors: direct.failures,
                non_2xx: 0,
                cpu_us_per_req: per_request(direct.cpu),
                sys_cpu_us_per_req: per_request(direct.sys_cpu),
                cpu_is_client: true,
                peak_rss_mib: f64::NAN,
                fpm_cpu_us_per_req: per_request(direct.fpm_cpu),
                machine_busy,
                threads: 0,
                wrk: WrkReport::default(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    rows.swap_remove(rows.len() / 2)
}

/// The gateway with 10,000 tenants: startup time, idle RSS, RSS under load and after.
fn measure_memory(gateway_bin: &Path, options: &Options) -> Memory {
    const TENANTS: usize = 10_000;
    eprintln!("load: memory, 3 tenants then {TENANTS} tenants");
    let settle = if options.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    let small = {
        let mut tenants = String::new();
        for (name, host) in servers::HOSTS {
            servers::tenant_table(&mut tenants, name, host);
        }
        let server = Server::start_gateway_with(gateway_bin, &tenants);
        server.check_hello("bench.test");
        thread::sleep(settle);
        mib(procstat::rss(server.pid()))
    };

    let mut tenants = String::with_capacity(TENANTS * 260);
    for i in 0..TENANTS {
        servers::tenant_table(
            &mut tenants,
            &format!("t{i:05}"),
            &format!("t{i:05}.tenants.test"),
        );
    }
    let started = Instant::now();
    let server = Server::start_gateway_with(gateway_bin, &tenants);
    let startup = started.elapsed();
    let host = format!("t{:05}.tenants.test", TENANTS / 2);
    server.check_hello(&host);
    thread::sleep(settle);
    let pid = server.pid();
    let idle = mib(procstat::rss(pid));
    let threads = procstat::threads(pid);

    let load = |connections: usize| -> (f64, f64, WrkReport) {
        let run = WrkRun {
            url: server.url("/hello.php"),
            host: host.clone(),
            connections,
            duration: options.duration,
            timeout: CLIENT_TIMEOUT,
            headers: Vec::new(),
        };
        let (peak, report) = with_rss_sampler(pid, || run.run());
        thread::sleep(settle);
        (peak, mib(procstat::rss(pid)), report)
    };
    let (c32_peak, after_c32, c32) = load(32);
    let (c1000_peak, after_c1000, c1000) = load(1000);
    Memory {
        tenants: TENANTS,
        startup,
        small_idle_mib: small,
        idle_mib: idle,
        threads,
        c32_peak_mib: c32_peak,
        after_c32_mib: after_c32,
        c32_failures: c32.failures(),
        c1000_peak_mib: c1000_peak,
        after_c1000_mib: after_c1000,
        c1000_failures: c1000.failures(),
    }
}

/// Runs `f` while sampling `pid`'s RSS every 100 ms; returns the largest sample (MiB).
fn with_rss_sampler<T>(pid: u32, f: impl FnOnce() -> T) -> (f64, T) {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(procstat::rss(pid));
                thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    let value = f();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("the RSS sampler panicked");
    (mib(peak), value)
}

/// Tenant B alone, then tenant B while tenant A floods slow requests.
fn measure_fairness(kind: Kind, gateway_bin: &Path, options: &Options) -> Fairness {
    eprintln!("load: fairness through {}", kind.label());
    let server = Server::start(kind, gateway_bin);
    let b = WrkRun {
        url: server.url("/hello.php"),
        host: "b.test".to_owned(),
        connections: 8,
        duration: options.duration,
        timeout: CLIENT_TIMEOUT,
        headers: Vec::new(),
    };
    b.warm_up(options.warmup);
    let b_base = b.run();
    // A starts first and outlasts B, so B is measured against a full flood throughout.
    let a = WrkRun {
        url: server.url("/sleep.php?ms=50"),
        host: "a.test".to_owned(),
        connections: 64,
        duration: options.duration + Duration::from_secs(3),
        timeout: CLIENT_TIMEOUT,
        headers: Vec::new(),
    };
    let a_child = a.spawn();
    thread::sleep(Duration::from_secs(1));
    let b_loaded = b.run();
    let a_report = wrk::wait(a_child, &a.url);
    eprintln!(
        "load:   B alone {:.0} req/s p99 {:.2} ms; B under flood {:.0} req/s p99 {:.2} ms",
        b_base.rps, b_base.p99_ms, b_loaded.rps, b_loaded.p99_ms
    );
    Fairness {
        id: kind.id().to_owned(),
        label: kind.label().to_owned(),
        b_base,
        b_loaded,
        a: a_report,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
