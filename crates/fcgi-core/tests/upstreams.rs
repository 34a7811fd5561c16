//! Several PHP-FPM servers behind one pool: failover when one dies under load (idempotent
//! requests never fail, a POST whose body went out is never sent twice), health checks
//! over PHP-FPM's `ping.path` marking a server down and back up, all servers down failing
//! at once, weights shifting the share, and each server's own bound.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fcgi_core::{
    HealthConfig, Ping, Pool, PoolConfig, Request, ServerConfig, ServerStats, Upstream,
};
use fpm_harness::{CountingRelay, Fpm, FpmAddress, FpmConfig};
use http::StatusCode;
use http_body_util::Full;

use common::{eventually, get, script_params, send_text, start_fpm, upstream, within};

/// Size of each test POST's body.
const POST_LEN: usize = 1000;

/// A harness PHP-FPM writing an access log line (method and URI) per request.
fn start_logged_fpm(workers: u32, log: &Path) -> Fpm {
    start_fpm(
        FpmConfig::new()
            .workers(workers)
            .pool_directive("access.log", log.display().to_string())
            .pool_directive("access.format", "\"%m %r%Q%q\""),
    )
}

fn ping_health(interval_ms: u64) -> HealthConfig {
    HealthConfig {
        ping: Some(Ping {
            path: "/fpm-ping".into(),
            response: "pong".into(),
        }),
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(500),
        fails: 2,
        passes: 2,
    }
}

fn server(address: &FpmAddress, max_connections: usize) -> ServerConfig {
    ServerConfig::new(upstream(address), max_connections)
}

fn stats_of(pool: &Pool, address: &Upstream) -> ServerStats {
    pool.server_stats()
        .into_iter()
        .find(|s| &s.address == address)
        .expect("the server is in the pool")
}

/// `POST /upload.php?id=ID` with a body of [`POST_LEN`] bytes.
fn post(id: usize) -> Request<Full<Bytes>> {
    let mut params = script_params("upload.php", &format!("id={id}"));
    for (name, value) in [
        ("REQUEST_METHOD", "POST".to_string()),
        ("CONTENT_TYPE", "application/octet-stream".to_string()),
        ("CONTENT_LENGTH", POST_LEN.to_string()),
    ] {
        params.insert(name, value).expect("small param");
    }
    Request::new(params).with_body(Full::new(Bytes::from(vec![b'x'; POST_LEN])))
}

/// What the load tasks saw.
#[derive(Default)]
struct Tally {
    get_failures: Vec<String>,
    /// Successful responses per server, with when they came.
    answers: Vec<(Upstream, Instant)>,
    posts_sent: usize,
    post_failures: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_load_fails_no_idempotent_request_and_is_used_again_when_back() {
    let scratch = std::env::temp_dir();
    let name = |server: &str| format!("fcgi-core-upstreams-{}-{server}.log", std::process::id());
    let (log_a, log_b) = (scratch.join(name("a")), scratch.join(name("b")));
    let mut fpm_a = start_logged_fpm(4, &log_a);
    let fpm_b = start_logged_fpm(4, &log_b);
    let (a, b) = (upstream(fpm_a.address()), upstream(fpm_b.address()));
    let health = ping_health(250);
    let pool = Pool::with_servers(
        vec![server(fpm_a.address(), 4), server(fpm_b.address(), 4)],
        PoolConfig::default(),
        health.clone(),
    )
    .expect("a valid pool");

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next_post = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (pool, stop, tally, next_post) =
            (pool.clone(), stop.clone(), tally.clone(), next_post.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if task < 2 {
                    let id = next_post.fetch_add(1, Ordering::Relaxed);
                    let result = within(Duration::from_secs(10), "a POST", async {
                        let response = pool.send(post(id)).await?;
                        let server = response.upstream().clone();
                        Ok::<_, fcgi_core::Error>((server, common::text(response).await?))
                    })
                    .await;
                    let mut tally = tally.lock().unwrap();
                    tally.posts_sent += 1;
                    match result {
                        Ok((server, (status, body))) => {
                            // A replay could only have sent the body empty.
                            assert_eq!(status, StatusCode::OK);
                            assert!(body.contains(&format!("\"bytes\":{POST_LEN}")), "{body}");
                            tally.answers.push((server, Instant::now()));
                        }
                        Err(_) => tally.post_failures += 1,
                    }
                } else {
                    let result = within(Duration::from_secs(10), "a GET", async {
                        let response = pool.send(get("sleep.php", "ms=20")).await?;
                        let server = response.upstream().clone();
                        Ok::<_, fcgi_core::Error>((server, common::text(response).await?))
                    })
                    .await;
                    let mut tally = tally.lock().unwrap();
                    match result {
                        Ok((server, (StatusCode::OK, body))) if body == "slept 20" => {
                            tally.answers.push((server, Instant::now()));
                        }
                        Ok((_, (status, body))) => {
                            tally.get_failures.push(format!("{status} {body}"));
                        }
                        Err(err) => tally.get_failures.push(err.to_string()),
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    fpm_a.kill().expect("php-fpm A killed");
    let killed = Instant::now();
    let down = eventually(Duration::from_secs(5), || !stats_of(&pool, &a).healthy).await;
    assert!(down, "A was never marked down");
    let took = killed.elapsed();
    let bound = health.interval * health.fails;
    assert!(
        took <= bound,
        "A marked down after {took:?}, more than {bound:?}"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| fpm_a.restart()).expect("php-fpm A restarts");
    let up = eventually(Duration::from_secs(5), || stats_of(&pool, &a).healthy).await;
    assert!(up, "A never came back: {:?}", pool.server_stats());
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        within(Duration::from_secs(15), "a load task", task)
            .await
            .expect("load task did not panic");
    }

    let tally = tally.lock().unwrap();
    assert!(
        tally.get_failures.is_empty(),
        "idempotent requests failed: {:?}",
        tally.get_failures
    );
    let on_a_after = tally
        .answers
        .iter()
        .filter(|(server, at)| server == &a && *at > back)
        .count();
    let on_b = tally.answers.iter().filter(|(s, _)| s == &b).count();
    eprintln!(
        "answers: {} (on A after its return {on_a_after}, on B {on_b}); POSTs {} ({} failed); \
         marked down {took:?} after the kill; A: {:?}",
        tally.answers.len(),
        tally.posts_sent,
        tally.post_failures,
        stats_of(&pool, &a),
    );
    assert!(on_a_after > 0, "A was not used again after it came back");
    assert!(on_b > 0);
    let stats = stats_of(&pool, &a);
    assert!(stats.failures > 0 && stats.checks > 0, "{stats:?}");

    // Each POST reached PHP at most once, over both servers.
    drop(pool);
    drop(fpm_a);
    drop(fpm_b);
    let mut runs: HashMap<String, usize> = HashMap::new();
    for log in [&log_a, &log_b] {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| l.starts_with("POST ")) {
            *runs.entry(line.to_string()).or_default() += 1;
        }
    }
    let _ = std::fs::remove_file(&log_a);
    let _ = std::fs::remove_file(&log_b);
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "POSTs run twice: {twice:?}");
    assert!(tally.posts_sent > 0 && runs.len() + tally.post_failures >= tally.posts_sent);
}

#[tokio::test]
async fn a_dead_idle_server_is_marked_down_by_pings_alone_and_back_up_when_it_answers() {
    let mut fpm_a = start_fpm(FpmConfig::new().workers(2));
    let fpm_b = start_fpm(FpmConfig::new().workers(2));
    let a = upstream(fpm_a.address());
    let health = ping_health(200);
    let pool = Pool::with_servers(
        vec![server(fpm_a.address(), 2), server(fpm_b.address(), 2)],
        PoolConfig::default(),
        health.clone(),
    )
    .expect("a valid pool");
    // Pings answered: checks pass, nothing fails.
    assert!(eventually(Duration::from_secs(5), || stats_of(&pool, &a).checks >= 2).await);
    let stats = stats_of(&pool, &a);
    assert!(stats.healthy && stats.checks_failed == 0, "{stats:?}");

    fpm_a.kill().expect("php-fpm A killed");
    let killed = Instant::now();
    // No request goes to it: only the pings can tell.
    let down = eventually(Duration::from_secs(5), || !stats_of(&pool, &a).healthy).await;
    assert!(down, "A was never marked down: {:?}", pool.server_stats());
    let took = killed.elapsed();
    // `fails` rounds, plus up to one round for the kill's phase against the checker's
    // ticks, plus one more for scheduling on a loaded machine.
    let bound = health.interval * (health.fails + 2);
    assert!(took <= bound, "marked down after {took:?}, bound {bound:?}");
    assert_eq!(stats_of(&pool, &a).failures, 0, "no request was sent to it");

    fpm_a.restart().expect("php-fpm A restarts");
    let up = eventually(Duration::from_secs(5), || stats_of(&pool, &a).healthy).await;
    assert!(up, "A never came back");
    let (status, body) = send_text(&pool, get("hello.php", ""))
        .await
        .expect("served");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "Hello, World!"));
}

#[tokio::test]
async fn with_every_server_down_a_request_fails_at_once_with_a_distinct_error() {
    let mut fpm_a = start_fpm(FpmConfig::new().workers(1));
    let mut fpm_b = start_fpm(FpmConfig::new().workers(1));
    let config = PoolConfig {
        queue_timeout: Duration::from_secs(30),
        ..PoolConfig::default()
    };
    // Passive marking only, with a long interval: nothing brings them back meanwhile.
    let health = HealthConfig {
        interval: Duration::from_secs(60),
        ..HealthConfig::default()
    };
    let pool = Pool::with_servers(
        vec![server(fpm_a.address(), 1), server(fpm_b.address(), 1)],
        config,
        health,
    )
    .expect("a valid pool");
    send_text(&pool, get("hello.php", ""))
        .await
        .expect("served while up");
    fpm_a.kill().expect("killed");
    fpm_b.kill().expect("killed");
    // The first request finds both dead (a connect error each) and marks them down.
    let first = within(
        Duration::from_secs(5),
        "first request",
        pool.send(get("hello.php", "")),
    )
    .await
    .expect_err("nothing answers");
    assert!(first.is_connect() || first.is_all_down(), "{first}");
    assert!(pool.server_stats().iter().all(|s| !s.healthy));
    let started = Instant::now();
    let err = within(
        Duration::from_secs(5),
        "request to a dead pool",
        pool.send(get("hello.php", "")),
    )
    .await
    .expect_err("nothing answers");
    assert!(err.is_all_down() && !err.is_overloaded(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it waited instead of failing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_shift_the_share_between_servers() {
    let fpm_a = start_fpm(FpmConfig::new().workers(4));
    let fpm_b = start_fpm(FpmConfig::new().workers(4));
    let (a, b) = (upstream(fpm_a.address()), upstream(fpm_b.address()));
    let mut heavy = server(fpm_b.address(), 4);
    heavy.weight = 3;
    let pool = Pool::with_servers(
        vec![server(fpm_a.address(), 4), heavy],
        PoolConfig::default(),
        HealthConfig::default(),
    )
    .expect("a valid pool");
    let counts = Arc::new(Mutex::new(HashMap::<Upstream, usize>::new()));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (pool, counts) = (pool.clone(), counts.clone());
            tokio::spawn(async move {
                for _ in 0..25 {
                    let response = within(
                        Duration::from_secs(10),
                        "a request",
                        pool.send(get("sleep.php", "ms=5")),
                    )
                    .await
                    .expect("served");
                    let server = response.upstream().clone();
                    common::text(response).await.expect("body");
                    *counts.lock().unwrap().entry(server).or_default() += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        within(Duration::from_secs(30), "a task", task)
            .await
            .expect("no panic");
    }
    let counts = counts.lock().unwrap();
    let (on_a, on_b) = (
        counts.get(&a).copied().unwrap_or(0),
        counts.get(&b).copied().unwrap_or(0),
    );
    assert_eq!(on_a + on_b, 100);
    // Weight 3 against 1: about three quarters; well above half in any case.
    assert!(on_b >= 60 && on_a >= 10, "a {on_a}, b {on_b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_keeps_its_own_bound_under_load() {
    let fpm_a = start_fpm(FpmConfig::new().workers(4));
    let fpm_b = start_fpm(FpmConfig::new().workers(4));
    let relay_a = CountingRelay::start(fpm_a.address().clone()).expect("relay starts");
    let relay_b = CountingRelay::start(fpm_b.address().clone()).expect("relay starts");
    let pool = Pool::with_servers(
        vec![server(&relay_a.address(), 2), server(&relay_b.address(), 3)],
        PoolConfig::default(),
        HealthConfig::default(),
    )
    .expect("a valid pool");
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { send_text(&pool, get("sleep.php", "ms=20")).await })
        })
        .collect();
    for task in tasks {
        let (status, body) = within(Duration::from_secs(30), "a task", task)
            .await
            .expect("no panic")
            .expect("served");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "slept 20"));
    }
    assert_eq!(relay_a.max_concurrent(), 2, "A's bound");
    assert_eq!(relay_b.max_concurrent(), 3, "B's bound");
    assert_eq!(pool.stats().open, 5);
}

#[tokio::test]
async fn a_backup_is_used_only_while_the_primary_is_down() {
    let mut primary = start_fpm(FpmConfig::new().workers(2));
    let backup_fpm = start_fpm(FpmConfig::new().workers(2));
    let (p, b) = (upstream(primary.address()), upstream(backup_fpm.address()));
    let mut backup = server(backup_fpm.address(), 2);
    backup.backup = true;
    let pool = Pool::with_servers(
        vec![server(primary.address(), 2), backup],
        PoolConfig::default(),
        ping_health(200),
    )
    .expect("a valid pool");
    for _ in 0..5 {
        let response = pool.send(get("hello.php", "")).await.expect("served");
        assert_eq!(response.upstream(), &p);
        common::text(response).await.expect("body");
    }
    primary.kill().expect("killed");
    // The first request after the kill fails over to the backup (nothing was sent).
    for _ in 0..5 {
        let response = pool
            .send(get("hello.php", ""))
            .await
            .expect("served by the backup");
        assert_eq!(response.upstream(), &b);
        common::text(response).await.expect("body");
    }
    primary.restart().expect("restarts");
    assert!(eventually(Duration::from_secs(5), || stats_of(&pool, &p).healthy).await);
    let response = pool.send(get("hello.php", "")).await.expect("served");
    assert_eq!(response.upstream(), &p, "back on the primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_busy_on_every_connection_is_not_probed_so_not_marked_down() {
    // One worker each: a ping to a busy server would wait for that worker and time out.
    let fpm_a = start_fpm(FpmConfig::new().workers(1));
    let fpm_b = start_fpm(FpmConfig::new().workers(1));
    let relay_a = CountingRelay::start(fpm_a.address().clone()).expect("relay starts");
    let a = upstream(&relay_a.address());
    let health = HealthConfig {
        timeout: Duration::from_millis(150),
        ..ping_health(100)
    };
    let pool = Pool::with_servers(
        vec![server(&relay_a.address(), 1), server(fpm_b.address(), 1)],
        PoolConfig::default(),
        health,
    )
    .expect("a valid pool");
    let checks_before = stats_of(&pool, &a).checks;
    // Both servers busy for 1.5 s: ten rounds of checks or more meanwhile.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { send_text(&pool, get("sleep.php", "ms=1500")).await })
        })
        .collect();
    assert!(eventually(Duration::from_secs(2), || pool.stats().open == 2).await);
    // A ping sent just before the slot was taken has connected by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let connections = relay_a.total_connections();
    for task in busy {
        let (status, _) = within(Duration::from_secs(10), "a slow request", task)
            .await
            .expect("no panic")
            .expect("served");
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        relay_a.total_connections(),
        connections,
        "A was probed while all its connections were busy"
    );
    let stats = stats_of(&pool, &a);
    assert!(stats.healthy && stats.checks_failed == 0, "{stats:?}");
    // The completed request counts as a passed check at the next round.
    let passed = eventually(Duration::from_secs(2), || {
        stats_of(&pool, &a).checks > checks_before
    })
    .await;
    assert!(passed, "{:?}", pool.server_stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_timing_out_while_the_pool_has_idle_capacity_marks_the_server_down() {
    let fpm_a = start_fpm(FpmConfig::new().workers(1));
    let fpm_b = start_fpm(FpmConfig::new().workers(1));
    let a = upstream(fpm_a.address());
    let health = HealthConfig {
        timeout: Duration::from_millis(150),
        ..ping_health(100)
    };
    let pool = Pool::with_servers(
        vec![server(fpm_a.address(), 1), server(fpm_b.address(), 1)],
        PoolConfig::default(),
        health.clone(),
    )
    .expect("a valid pool");
    // A's only worker is taken by another client: this pool has a free slot for A, yet A
    // cannot answer, which is what a hung server looks like.
    let other = common::pool(fpm_a.address(), |_| {});
    let hog = tokio::spawn(async move { send_text(&other, get("sleep.php", "ms=2500")).await });
    let started = Instant::now();
    let down = eventually(Duration::from_secs(2), || !stats_of(&pool, &a).healthy).await;
    assert!(down, "A was never marked down: {:?}", pool.server_stats());
    let took = started.elapsed();
    let stats = stats_of(&pool, &a);
    assert!(stats.checks_failed >= u64::from(health.fails), "{stats:?}");
    assert_eq!(stats.failures, 0, "no request of this pool failed");
    eprintln!("marked down {took:?} after the worker was taken");
    within(Duration::from_secs(10), "the hog", hog)
        .await
        .expect("no panic")
        .expect("served");
    let up = eventually(Duration::from_secs(3), || stats_of(&pool, &a).healthy).await;
    assert!(up, "A never came back once its worker was free");
}
