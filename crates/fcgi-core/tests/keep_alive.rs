//! Connection reuse: kept connections carry many requests, idle ones are closed, and
//! workers PHP-FPM recycles (closing their connection) cost no request.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fpm_harness::{CountingRelay, FpmConfig};
use http::StatusCode;

use common::{eventually, get, pool, send_text, start_fpm, within};

#[tokio::test]
async fn a_hundred_sequential_requests_share_one_connection() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let relay = CountingRelay::start(fpm.address().clone()).expect("relay starts");
    let pool = pool(&relay.address(), |_| {});
    for i in 0..100 {
        let (status, body) = send_text(&pool, get("hello.php", ""))
            .await
            .unwrap_or_else(|err| panic!("request {i} failed: {err}"));
        assert_eq!((status, body.as_str()), (StatusCode::OK, "Hello, World!"));
    }
    assert_eq!(relay.total_connections(), 1);
    let stats = pool.stats();
    assert_eq!((stats.open, stats.idle), (1, 1), "{stats:?}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let fpm = start_fpm(FpmConfig::new().workers(1));
    let relay = CountingRelay::start(fpm.address().clone()).expect("relay starts");
    let pool = pool(&relay.address(), |config| {
        config.idle_timeout = Duration::from_millis(200);
    });
    let (status, _) = send_text(&pool, get("hello.php", ""))
        .await
        .expect("hello.php");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pool.stats().idle, 1, "kept after the request");
    assert_eq!(relay.current(), 1);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = pool.stats();
    assert_eq!((stats.open, stats.idle), (0, 0), "{stats:?}");
    assert!(
        relay.wait_for_current(0, Duration::from_secs(1)),
        "the relay still sees {} open connection(s)",
        relay.current()
    );
    // The one worker is free again: a new connection gets it.
    let (status, _) = send_text(&pool, get("hello.php", ""))
        .await
        .expect("hello.php after the idle close");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(relay.total_connections(), 2);
}

/// PHP-FPM closes a worker's connection after its `pm.max_requests`-th request, racing
/// the pool's next use of it: the liveness check catches most, and the rest are replayed
/// once on a fresh connection. No request may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycled_workers_cost_no_request() {
    const REQUESTS: usize = 2_000;
    const TASKS: usize = 32;
    let fpm = start_fpm(FpmConfig::new().workers(4).max_requests(10));
    let relay = CountingRelay::start(fpm.address().clone()).expect("relay starts");
    let pool = pool(&relay.address(), |config| {
        config.max_connections = 4;
    });
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let pool = pool.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                    match send_text(&pool, get("hello.php", "")).await {
                        Ok((StatusCode::OK, body)) if body == "Hello, World!" => {}
                        Ok(other) => failures.push(format!("unexpected answer {other:?}")),
                        Err(err) => failures.push(format!("{err} ({err:?})")),
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for task in tasks {
        let task_failures = within(Duration::from_secs(60), "the request tasks", task)
            .await
            .expect("task did not panic");
        failures.extend(task_failures);
    }
    eprintln!(
        "{REQUESTS} requests in {:?} over {} connections",
        started.elapsed(),
        relay.total_connections()
    );
    assert!(
        failures.is_empty(),
        "{} of {REQUESTS} requests failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Every worker was recycled many times, so connections were really replaced.
    assert!(
        relay.total_connections() >= REQUESTS / 10,
        "only {} connections for {REQUESTS} requests with max_requests = 10",
        relay.total_connections()
    );
    assert!(
        eventually(Duration::from_secs(1), || pool.stats().open <= 4).await,
        "{:?}",
        pool.stats()
    );
}

#[tokio::test]
async fn a_kept_unix_socket_connection_stays_with_one_worker() {
    let fpm = start_fpm(
        FpmConfig::new()
            .workers(3)
            .listen(fpm_harness::Listen::Unix),
    );
    let pool = pool(fpm.address(), |_| {});
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let (status, pid) = send_text(&pool, get("info.php", ""))
            .await
            .expect("info.php");
        assert_eq!(status, StatusCode::OK);
        pids.insert(pid);
    }
    // PHP-FPM gives a connection one worker for as long as it stays open.
    assert_eq!(pids.len(), 1, "served by workers {pids:?}");
    let stats = pool.stats();
    assert_eq!((stats.open, stats.idle), (1, 1), "{stats:?}");
}
