//! The pool's bounds: never more connections than its limit, a bounded queue with a
//! timeout beyond it, fair sharing between queue keys, and per-key caps.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fcgi_core::QueueKey;
use fpm_harness::{CountingRelay, FpmConfig};
use http::StatusCode;

use common::{get, pool, send_text, start_fpm, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_use_at_most_max_connections() {
    let fpm = start_fpm(FpmConfig::new().workers(4));
    let relay = CountingRelay::start(fpm.address().clone()).expect("relay starts");
    let pool = pool(&relay.address(), |config| config.max_connections = 4);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { send_text(&pool, get("sleep.php", "ms=20")).await })
        })
        .collect();
    for task in tasks {
        let (status, body) = within(Duration::from_secs(30), "sleep.php tasks", task)
            .await
            .expect("task did not panic")
            .expect("every request succeeds");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "slept 20"));
    }
    assert!(
        relay.max_concurrent() <= 4,
        "{} connections at once",
        relay.max_concurrent()
    );
    // 50 x 20 ms over 4 connections: they were really shared, not one at a time.
    assert_eq!(relay.max_concurrent(), 4);
    assert_eq!(relay.total_connections(), 4);
    assert_eq!(pool.stats().open, 4);
}

#[tokio::test]
async fn a_request_waiting_past_the_queue_timeout_fails_as_overloaded() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let pool = pool(fpm.address(), |config| {
        config.max_connections = 1;
        config.queue_timeout = Duration::from_millis(200);
    });
    let busy = {
        let pool = pool.clone();
        tokio::spawn(async move { send_text(&pool, get("sleep.php", "ms=1000")).await })
    };
    // Let the slow request take the only connection.
    assert!(
        common::eventually(Duration::from_secs(2), || pool.stats().open == 1).await,
        "the slow request never took the connection"
    );
    let started = Instant::now();
    let err = within(Duration::from_secs(2), "the queued request", async {
        pool.send(get("hello.php", "")).await
    })
    .await
    .expect_err("no connection is free within the queue timeout");
    let waited = started.elapsed();
    assert!(err.is_overloaded() && err.is_queue_timeout(), "{err:?}");
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_millis(700),
        "failed after {waited:?}"
    );
    assert_eq!(pool.stats().waiting, 0, "the waiter left the queue");

    let (status, _) = within(Duration::from_secs(5), "the slow request", busy)
        .await
        .expect("task did not panic")
        .expect("the slow request still succeeds");
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_full_queue_rejects_at_once() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    for max_queue in [0, 1] {
        let pool = pool(fpm.address(), |config| {
            config.max_connections = 1;
            config.max_queue = max_queue;
            config.queue_timeout = Duration::from_secs(5);
        });
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move { send_text(&pool, get("sleep.php", "ms=500")).await })
        };
        assert!(
            common::eventually(Duration::from_secs(2), || pool.stats().open == 1).await,
            "the slow request never took the connection"
        );
        // Fill the queue.
        let queued: Vec<_> = (0..max_queue)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { send_text(&pool, get("hello.php", "")).await })
            })
            .collect();
        assert!(
            common::eventually(Duration::from_secs(2), || pool.stats().waiting == max_queue).await,
            "{:?}",
            pool.stats()
        );

        let started = Instant::now();
        let err = within(Duration::from_secs(2), "the rejected request", async {
            pool.send(get("hello.php", "")).await
        })
        .await
        .expect_err("the queue is full");
        assert!(
            err.is_overloaded() && !err.is_queue_timeout() && !err.is_timeout(),
            "max_queue = {max_queue}: {err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "max_queue = {max_queue}: rejected after {:?}",
            started.elapsed()
        );

        for task in std::iter::once(busy).chain(queued) {
            let (status, _) = within(Duration::from_secs(5), "earlier requests", task)
                .await
                .expect("task did not panic")
                .expect("requests admitted before the rejection succeed");
            assert_eq!(status, StatusCode::OK);
        }
    }
}

/// Key "a" floods a two-connection pool with slow requests; key "b" still gets a
/// connection whenever one frees, instead of waiting behind all of "a"'s queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_key_does_not_starve_another() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let pool = pool(fpm.address(), |config| config.max_connections = 2);
    let a = QueueKey::from("a");
    let b = QueueKey::from("b");
    let stop = Arc::new(AtomicBool::new(false));
    let a_done = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let (pool, key, stop, done) = (pool.clone(), a.clone(), stop.clone(), a_done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let request = get("sleep.php", "ms=50").queue(key.clone(), None);
                    send_text(&pool, request).await.expect("a's request");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Let "a" fill both connections and the queue.
    assert!(
        common::eventually(Duration::from_secs(2), || pool.stats().waiting >= 10).await,
        "{:?}",
        pool.stats()
    );

    let window = Duration::from_secs(1);
    let started = Instant::now();
    let mut b_done = 0;
    while started.elapsed() < window {
        let request = get("hello.php", "").queue(b.clone(), None);
        let (status, _) = send_text(&pool, request).await.expect("b's request");
        assert_eq!(status, StatusCode::OK);
        b_done += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        within(Duration::from_secs(10), "a's tasks", task)
            .await
            .expect("a's task did not panic");
    }
    let a_done = a_done.load(Ordering::Relaxed);
    eprintln!("in {window:?}: b {b_done}, a {a_done}");
    // In FIFO order each of b's requests would wait behind ~14 of a's (~350 ms): 3 in a
    // second. Served fairly it waits for one of a's 50-ms requests to end: 20 or more.
    assert!(
        b_done >= 20,
        "b completed only {b_done} requests in {window:?}"
    );
    assert!(a_done >= 10, "a was starved instead: {a_done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_key_never_holds_more_than_its_cap() {
    let fpm = start_fpm(FpmConfig::new().workers(4));
    let pool = pool(fpm.address(), |config| config.max_connections = 4);
    let a = QueueKey::from("a");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (pool, key) = (pool.clone(), a.clone());
            tokio::spawn(async move {
                for _ in 0..3 {
                    let request = get("sleep.php", "ms=20").queue(key.clone(), Some(1));
                    send_text(&pool, request).await.expect("a's request");
                }
            })
        })
        .collect();
    // Another key shows the pool itself had room for more.
    let (status, _) = send_text(&pool, get("hello.php", "").queue("b".into(), None))
        .await
        .expect("b is served while a waits on its cap");
    assert_eq!(status, StatusCode::OK);

    let mut max_seen = 0;
    let mut samples = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while tasks.iter().any(|task| !task.is_finished()) {
        assert!(Instant::now() < deadline, "a's 24 requests did not finish");
        max_seen = max_seen.max(pool.in_use("a"));
        samples += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for task in tasks {
        task.await.expect("a's task did not panic");
    }
    assert!(samples > 50, "only {samples} samples");
    assert_eq!(max_seen, 1, "key a held {max_seen} connections at once");
}

/// Waiters held back by their own key's cap cannot use a free connection, so they must
/// not hold back another key either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_blocked_by_their_cap_do_not_hold_back_other_keys() {
    let fpm = start_fpm(FpmConfig::new().workers(4));
    let pool = pool(fpm.address(), |config| {
        config.max_connections = 4;
        config.queue_timeout = Duration::from_millis(400);
    });
    let a = QueueKey::from("a");
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (pool, key) = (pool.clone(), a.clone());
            tokio::spawn(async move {
                let request = get("sleep.php", "ms=800").queue(key, Some(1));
                send_text(&pool, request).await
            })
        })
        .collect();
    // One of a's requests runs, two wait on a's cap; three connections are free.
    assert!(
        common::eventually(Duration::from_secs(2), || {
            let stats = pool.stats();
            stats.open == 1 && stats.waiting == 2
        })
        .await,
        "{:?}",
        pool.stats()
    );
    let started = Instant::now();
    let (status, _) = send_text(&pool, get("hello.php", "").queue("b".into(), None))
        .await
        .expect("b gets one of the free connections");
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "b waited {:?} with connections free",
        started.elapsed()
    );
    for task in tasks {
        // The two waiting behind a's cap time out; that is the cap working.
        let _ = within(Duration::from_secs(5), "a's requests", task)
            .await
            .expect("a's task did not panic");
    }
}

/// A caller may give up (drop its request future) at any time, even just after the pool
/// handed it a connection: that connection must come back, not leak with the future.
#[tokio::test]
async fn a_wait_cancelled_as_it_is_served_gives_the_connection_back() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let pool = pool(fpm.address(), |config| {
        config.max_connections = 1;
        config.queue_timeout = Duration::from_secs(2);
    });
    let first = within(
        Duration::from_secs(5),
        "first head",
        pool.send(get("sleep.php", "ms=100")),
    )
    .await
    .expect("first request");
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.send(get("hello.php", "")).await.map(drop) })
    };
    assert!(
        common::eventually(Duration::from_secs(2), || pool.stats().waiting == 1).await,
        "{:?}",
        pool.stats()
    );
    // Ending the first body hands its connection to the waiting task, which has not run
    // since (this runtime has one thread and the test does not yield): cancel it now.
    within(Duration::from_secs(5), "first body", first.collect())
        .await
        .expect("first body");
    waiting.abort();
    let cancelled = waiting.await;
    assert!(
        cancelled.as_ref().is_err_and(|e| e.is_cancelled()),
        "the waiter ran before it could be cancelled: {cancelled:?}"
    );

    let stats = pool.stats();
    assert_eq!((stats.waiting, stats.open), (0, 1), "{stats:?}");
    assert_eq!(
        stats.idle, 1,
        "the connection went back to the pool: {stats:?}"
    );
    let (status, _) = send_text(&pool, get("hello.php", ""))
        .await
        .expect("the pool still has its connection");
    assert_eq!(status, StatusCode::OK);
}
