//! End-to-end benchmark against a real PHP-FPM (static pool of 4 workers on TCP, serving
//! `hello.php`): fcgi-core's `Pool` side by side with the `fastcgi-client` crate in its
//! short-connection and keep-alive modes, all at 32 concurrent tasks.
//!
//! A plain `main` (no criterion): every row sends the same number of requests, split evenly
//! between the tasks; each task times each request from just before sending it to the end
//! of its body. Printed: requests/s, latency percentiles, allocations per request (counting
//! allocator), then fcgi-core's ratios to each peer, as Markdown.
//!
//! Run: `cargo bench -p fcgi-core --bench roundtrip`
//! Knobs (environment): `ROUNDTRIP_REQUESTS` (20000 per row and round), `ROUNDTRIP_TASKS`
//! (32), `ROUNDTRIP_ROUNDS` (5; the round with the median requests/s is reported),
//! `ROUNDTRIP_THREADS` (tokio workers; default one per core), `ROUNDTRIP_ONLY` (`pool`,
//! `short` or `keepalive`: run one row alone, for profiling), `ROUNDTRIP_RATE` (5000: the
//! open-loop rows' total requests/s), `ROUNDTRIP_OPEN_REQUESTS` (10000 per open-loop row).
//! Without `--bench` (as `cargo test --benches` runs it) it only does a short smoke run.
//!
//! Each client runs twice: closed loop (every task sends as fast as it is answered) for
//! throughput, then open loop (a fixed total rate, latency from each request's scheduled
//! time, as wrk2 measures) for latency. The closed loop flatters a client that starves some
//! of its tasks: a stuck task sends nothing, so its wait is counted once instead of for
//! every request it should have sent. fastcgi-client's keep-alive mode is such a client:
//! 4 of its 32 connections pin PHP-FPM's 4 workers and the other 28 wait in the listen
//! backlog.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fcgi_core::{Params, Pool, PoolConfig, Request, Upstream};
use fpm_harness::{fixtures_dir, Fpm, FpmAddress, FpmConfig, Listen};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::CountingAlloc = counting_alloc::CountingAlloc;

const EXPECTED_BODY: &[u8] = b"Hello, World!";
/// The pool's limit: one connection per PHP-FPM worker.
const POOL_SIZE: usize = 4;

/// The params every client sends (the same set for all, built anew for each request).
fn cgi_params(script: &'static str, root: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_FILENAME", script),
        ("SCRIPT_NAME", "/hello.php"),
        ("REQUEST_URI", "/hello.php"),
        ("DOCUMENT_URI", "/hello.php"),
        ("DOCUMENT_ROOT", root),
        ("QUERY_STRING", ""),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "fcgi-bench"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "54321"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "localhost"),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("HTTP_HOST", "localhost"),
        ("HTTP_USER_AGENT", "fcgi-bench/1.0"),
        ("HTTP_ACCEPT", "*/*"),
    ]
}

/// Bridges tokio's IO traits to the `futures-io` ones `fastcgi-client` is written against
/// (what `tokio_util::compat` does; saves turning on a feature for one bench).
struct FuturesIo(TcpStream);

impl fastcgi_client::io::AsyncRead for FuturesIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut read = tokio::io::ReadBuf::new(buf);
        match Pin::new(&mut self.0).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(read.filled().len())),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl fastcgi_client::io::AsyncWrite for FuturesIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A connection for `fastcgi-client`, with Nagle off as fcgi-core sets it (the crate
/// writes each record in several small writes, which Nagle would delay).
async fn connect(addr: SocketAddr) -> FuturesIo {
    let stream = TcpStream::connect(addr).await.expect("connect to PHP-FPM");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    FuturesIo(stream)
}

fn fastcgi_client_params(cgi: &[(&'static str, &'static str)]) -> fastcgi_client::Params<'static> {
    cgi.iter().fold(
        fastcgi_client::Params::default(),
        |params, &(name, value)| params.custom(name, value),
    )
}

fn check_stdout(stdout: Option<Vec<u8>>) {
    let stdout = stdout.expect("a response");
    assert!(
        stdout.ends_with(EXPECTED_BODY),
        "unexpected response {stdout:?}"
    );
}

/// The clients compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// fcgi-core `Pool` with at most [`POOL_SIZE`] connections, shared by all tasks.
    FcgiCorePool,
    /// fastcgi-client, a new connection for every request.
    ShortConnection,
    /// fastcgi-client keep-alive, one connection per task (more than PHP-FPM has workers:
    /// the extra connections wait in its listen backlog until a worker is free).
    KeepAlivePerTask,
}

impl Client {
    fn key(self) -> &'static str {
        match self {
            Client::FcgiCorePool => "pool",
            Client::ShortConnection => "short",
            Client::KeepAlivePerTask => "keepalive",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Client::FcgiCorePool => "fcgi-core Pool (max 4)",
            Client::ShortConnection => "fastcgi-client short connection",
            Client::KeepAlivePerTask => "fastcgi-client keep-alive, 1 conn/task",
        }
    }
}

/// One row's measurements.
struct Run {
    requests: usize,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    /// The longest any task waited for its first response: how long the least lucky
    /// client was starved.
    slowest_first: Duration,
    allocations_per_request: f64,
}

impl Run {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, q: f64) -> Duration {
        let rank = (self.latencies.len() as f64 * q).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    fn mean(&self) -> Duration {
        self.latencies.iter().sum::<Duration>() / self.latencies.len() as u32
    }
}

/// One request of a task, ready to be sent again and again.
type RequestFn = Box<dyn FnMut() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// How the tasks pace their requests.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// Closed loop: each task sends its next request as soon as the last one ends, and
    /// a request is timed from when it is sent. A client that is stuck sends nothing, so
    /// its wait shows up once, not for every request it should have sent ("coordinated
    /// omission").
    Closed,
    /// Open loop, as wrk2 measures: the tasks together send `rate` requests per second on
    /// a fixed schedule, and a request that could not be sent on time (its task was still
    /// waiting for an earlier one) is timed from when it was due.
    Open { rate: f64 },
}

/// Starts `tasks` tasks; each sets itself up with `setup` (untimed, but its allocations
/// count), then sends `per_task` requests one after the other, timing each.
async fn drive<F, Fut>(load: Load, tasks: usize, per_task: usize, setup: F) -> Run
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = RequestFn> + Send + 'static,
{
    let before = counting_alloc::snapshot();
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let setup = setup(task);
        // Each task's own schedule: one request every `interval`, the tasks spread evenly.
        let schedule = match load {
            Load::Closed => None,
            Load::Open { rate } => {
                let interval = Duration::from_secs_f64(tasks as f64 / rate);
                Some((start + interval * task as u32 / tasks as u32, interval))
            }
        };
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            let mut request = setup.await;
            for k in 0..per_task {
                let due = schedule.map(|(first, interval)| first + interval * k as u32);
                let behind = match due {
                    Some(due) if Instant::now() < due => {
                        tokio::time::sleep_until(due.into()).await;
                        false
                    }
                    Some(_) => true,
                    None => false,
                };
                let sent = Instant::now();
                request().await;
                // On schedule, the timer's own lateness (up to 1 ms) is the bench's, not
                // the client's: time from the send. Behind schedule: from when it was due.
                let from = match due {
                    Some(due) if behind => due,
                    _ => sent,
                };
                latencies.push(from.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(tasks * per_task);
    let mut slowest_first = Duration::ZERO;
    for handle in handles {
        let task_latencies = handle.await.expect("bench task panicked");
        slowest_first = slowest_first.max(task_latencies[0]);
        latencies.extend(task_latencies);
    }
    let elapsed = start.elapsed();
    let requests = latencies.len();
    let (allocations_per_request, _) =
        counting_alloc::snapshot().per_op_since(before, requests as u64);
    latencies.sort_unstable();
    Run {
        requests,
        elapsed,
        latencies,
        slowest_first,
        allocations_per_request,
    }
}

async fn run(
    client: Client,
    load: Load,
    addr: SocketAddr,
    upstream: &Upstream,
    cgi: Arc<Vec<(&'static str, &'static str)>>,
    tasks: usize,
    per_task: usize,
) -> Run {
    match client {
        Client::FcgiCorePool => {
            let pool = Pool::new(
                upstream.clone(),
                PoolConfig {
                    max_connections: POOL_SIZE,
                    ..PoolConfig::default()
                },
            );
            drive(load, tasks, per_task, move |_| {
                let (pool, cgi) = (pool.clone(), cgi.clone());
                async move {
                    Box::new(move || {
                        let (pool, cgi) = (pool.clone(), cgi.clone());
                        Box::pin(async move {
                            let mut params = Params::with_capacity(1024);
                            for (name, value) in cgi.iter() {
                                params.insert(name, value).expect("small pair");
                            }
                            let response = pool.send(Request::new(params)).await.expect("send");
                            let body = response.collect().await.expect("body");
                            assert_eq!(&body[..], EXPECTED_BODY);
                        }) as Pin<Box<dyn Future<Output = ()> + Send>>
                    }) as RequestFn
                }
            })
            .await
        }
        Client::ShortConnection => {
            drive(load, tasks, per_task, move |_| {
                let cgi = cgi.clone();
                async move {
                    Box::new(move || {
                        let cgi = cgi.clone();
                        Box::pin(async move {
                            let client = fastcgi_client::Client::new(connect(addr).await);
                            let request = fastcgi_client::Request::new(
                                fastcgi_client_params(&cgi),
                                fastcgi_client::io::empty(),
                            );
                            let response = client.execute_once(request).await.expect("execute");
                            check_stdout(response.stdout);
                        }) as Pin<Box<dyn Future<Output = ()> + Send>>
                    }) as RequestFn
                }
            })
            .await
        }
        Client::KeepAlivePerTask => {
            drive(load, tasks, per_task, move |_| {
                let cgi = cgi.clone();
                async move {
                    // Connecting completes at once (the kernel's backlog accepts it), but a
                    // worker serves it only once a connection ahead of it closes.
                    let client = Arc::new(tokio::sync::Mutex::new(
                        fastcgi_client::Client::new_keep_alive(connect(addr).await),
                    ));
                    Box::new(move || {
                        let (client, cgi) = (client.clone(), cgi.clone());
                        Box::pin(async move {
                            let mut client = client.lock().await;
                            let request = fastcgi_client::Request::new(
                                fastcgi_client_params(&cgi),
                                fastcgi_client::io::empty(),
                            );
                            let response = client.execute(request).await.expect("execute");
                            check_stdout(response.stdout);
                        }) as Pin<Box<dyn Future<Output = ()> + Send>>
                    }) as RequestFn
                }
            })
            .await
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let requests = env_usize("ROUNDTRIP_REQUESTS", if full { 20_000 } else { 320 });
    let tasks = env_usize("ROUNDTRIP_TASKS", 32);
    let rounds = env_usize("ROUNDTRIP_ROUNDS", if full { 5 } else { 1 }).max(1);
    let per_task = (requests / tasks).max(1);

    let fpm = Fpm::start(FpmConfig::new().listen(Listen::Tcp).workers(4)).expect("start PHP-FPM");
    let FpmAddress::Tcp(addr) = fpm.address().clone() else {
        unreachable!("asked for TCP")
    };
    let upstream: Upstream = fpm
        .address()
        .to_upstream_string()
        .parse()
        .expect("upstream");
    let script: &'static str = Box::leak(
        fixtures_dir()
            .join("hello.php")
            .to_string_lossy()
            .into_owned()
            .into_boxed_str(),
    );
    let root: &'static str = Box::leak(
        fixtures_dir()
            .to_string_lossy()
            .into_owned()
            .into_boxed_str(),
    );
    let cgi = Arc::new(cgi_params(script, root));

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Ok(threads) = std::env::var("ROUNDTRIP_THREADS") {
        runtime.worker_threads(threads.parse().expect("ROUNDTRIP_THREADS"));
    }
    let runtime = runtime.enable_all().build().expect("tokio runtime");

    let clients: Vec<Client> = [
        Client::FcgiCorePool,
        Client::ShortConnection,
        Client::KeepAlivePerTask,
    ]
    .into_iter()
    .filter(|c| std::env::var("ROUNDTRIP_ONLY").map_or(true, |only| c.key() == only))
    .collect();
    let open_rate = env_usize("ROUNDTRIP_RATE", 5_000) as f64;
    let open_per_task =
        (env_usize("ROUNDTRIP_OPEN_REQUESTS", if full { 10_000 } else { 320 }) / tasks).max(1);
    let (closed, open): (Vec<Run>, Vec<Run>) = runtime.block_on(async {
        // Warm PHP-FPM's workers (and opcache, when enabled) before measuring.
        for client in [Client::FcgiCorePool, Client::ShortConnection] {
            run(
                client,
                Load::Closed,
                addr,
                &upstream,
                cgi.clone(),
                tasks,
                20,
            )
            .await;
        }
        let mut by_client: Vec<Vec<Run>> = clients.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            // Rotate the order so no client always runs first (or right after another).
            for k in 0..clients.len() {
                let i = (k + round) % clients.len();
                let r = run(
                    clients[i],
                    Load::Closed,
                    addr,
                    &upstream,
                    cgi.clone(),
                    tasks,
                    per_task,
                )
                .await;
                eprintln!(
                    "round {round}: {:<40} {:>9.0} req/s  p50 {}  p99 {}",
                    clients[i].label(),
                    r.rps(),
                    ms(r.percentile(0.50)),
                    ms(r.percentile(0.99)),
                );
                by_client[i].push(r);
            }
        }
        let closed = by_client
            .into_iter()
            .map(|mut runs| {
                runs.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
                runs.swap_remove(runs.len() / 2)
            })
            .collect();
        // One open-loop round per client: the rate is fixed, so the rounds would only
        // differ by noise, and the keep-alive row takes as long as its starved tasks wait.
        let mut open = Vec::with_capacity(clients.len());
        for &client in &clients {
            let load = Load::Open { rate: open_rate };
            let r = run(
                client,
                load,
                addr,
                &upstream,
                cgi.clone(),
                tasks,
                open_per_task,
            )
            .await;
            eprintln!(
                "open loop at {open_rate:.0} req/s: {:<40} p50 {}  p99 {}  max {}",
                client.label(),
                ms(r.percentile(0.50)),
                ms(r.percentile(0.99)),
                ms(*r.latencies.last().expect("requests")),
            );
            open.push(r);
        }
        (closed, open)
    });
    drop(fpm);

    println!();
    println!("PHP-FPM: static pool, 4 workers, TCP, hello.php; {tasks} concurrent tasks.");
    println!();
    println!(
        "Closed loop (each task sends its next request when the last one ends; latency from \
         the send): {} requests per row, median of {rounds} round(s) by requests/s.",
        per_task * tasks
    );
    print_tables(&clients, &closed);
    println!();
    println!(
        "Open loop at {open_rate:.0} requests/s in all (each task on a fixed schedule; a \
         request sent late because its task was still waiting is timed from when it was \
         due, as wrk2 does): {} requests per row. Requests/s here is the rate achieved.",
        open_per_task * tasks
    );
    print_tables(&clients, &open);
}

/// The rows of `results`, then fcgi-core's ratios to each peer, as Markdown.
fn print_tables(clients: &[Client], results: &[Run]) {
    println!();
    println!(
        "| client | req/s | mean | p50 | p99 | p99.9 | max | slowest 1st response | allocs/req |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (client, r) in clients.iter().zip(results) {
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.1} |",
            client.label(),
            r.rps(),
            ms(r.mean()),
            ms(r.percentile(0.50)),
            ms(r.percentile(0.99)),
            ms(r.percentile(0.999)),
            ms(*r.latencies.last().expect("requests")),
            ms(r.slowest_first),
            r.allocations_per_request,
        );
    }
    let Some(ours) = results
        .first()
        .filter(|_| clients[0] == Client::FcgiCorePool && clients.len() > 1)
    else {
        return;
    };
    println!();
    println!(
        "| fcgi-core / peer | req/s (higher is better) | p50 (lower is better) | p99 | p99.9 \
         | allocs/req (lower is better) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (client, peer) in clients.iter().zip(results).skip(1) {
        let ratio = |a: Duration, b: Duration| times(a.as_secs_f64() / b.as_secs_f64());
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            client.label(),
            times(ours.rps() / peer.rps()),
            ratio(ours.percentile(0.50), peer.percentile(0.50)),
            ratio(ours.percentile(0.99), peer.percentile(0.99)),
            ratio(ours.percentile(0.999), peer.percentile(0.999)),
            times(ours.allocations_per_request / peer.allocations_per_request),
        );
    }
}

/// A ratio, with enough digits that a tiny one does not print as zero.
fn times(ratio: f64) -> String {
    if ratio < 0.01 {
        format!("{ratio:.5}x")
    } else {
        format!("{ratio:.2}x")
    }
}
