//! When PHP-FPM is gone, slow or never there: each failure is reported promptly, with the
//! predicate a gateway maps to a status, and the pool recovers once PHP-FPM is back.

mod common;

use std::time::{Duration, Instant};

use fcgi_core::{ClientConfig, Connection, Upstream};
use fpm_harness::{free_port, Fpm, FpmConfig};
use http::StatusCode;

use common::{get, pool, send_text, start_fpm, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_fpm_killed_mid_request_fails_it_promptly_and_the_pool_recovers() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let pool = pool(fpm.address(), |config| {
        config.client.read_timeout = Duration::from_secs(30);
    });
    let in_flight = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let result = send_text(&pool, get("sleep.php", "ms=2000")).await;
            (result, Instant::now())
        })
    };
    assert!(
        common::eventually(Duration::from_secs(2), || pool.stats().open == 1).await,
        "the request never took a connection"
    );
    // Let the request reach its worker.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (mut fpm, killed_at) = tokio::task::spawn_blocking(move || {
        let mut fpm: Fpm = fpm;
        fpm.kill().expect("php-fpm is killed");
        (fpm, Instant::now())
    })
    .await
    .expect("kill did not panic");
    let (result, failed_at) = within(Duration::from_secs(5), "the killed request", in_flight)
        .await
        .expect("task did not panic");
    let err = result.expect_err("the request dies with its worker");
    assert!(err.is_io(), "{err:?}");
    assert!(!err.is_timeout(), "{err:?}");
    let after = failed_at.saturating_duration_since(killed_at);
    assert!(
        after < Duration::from_secs(1),
        "failed {after:?} after the kill"
    );
    assert_eq!(pool.stats().open, 0, "the dead connection was not kept");

    // While PHP-FPM is down, new requests fail to connect rather than hang.
    let err = send_text(&pool, get("hello.php", ""))
        .await
        .expect_err("nothing listens");
    assert!(err.is_connect(), "{err:?}");

    let fpm = tokio::task::spawn_blocking(move || {
        fpm.restart().expect("php-fpm restarts on the same port");
        fpm
    })
    .await
    .expect("restart did not panic");
    let (status, body) = send_text(&pool, get("hello.php", ""))
        .await
        .expect("the same pool works again");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "Hello, World!"));
    drop(fpm);
}

#[tokio::test]
async fn a_silent_server_hits_the_read_timeout() {
    let fpm = start_fpm(FpmConfig::new().workers(1));
    let pool = pool(fpm.address(), |config| {
        config.client.read_timeout = Duration::from_millis(300);
    });
    let started = Instant::now();
    let err = within(
        Duration::from_secs(3),
        "the timed-out request",
        pool.send(get("sleep.php", "ms=2000")),
    )
    .await
    .expect_err("PHP sends nothing for 2 s");
    let waited = started.elapsed();
    assert!(err.is_timeout() && err.is_read_timeout(), "{err:?}");
    assert!(!err.is_connect() && !err.is_overloaded(), "{err:?}");
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(1),
        "timed out after {waited:?}"
    );
    assert_eq!(
        pool.stats().open,
        0,
        "the timed-out connection was not kept"
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    // Nothing listens there (the port was free a moment ago).
    let upstream: Upstream = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("valid upstream");
    let err = within(
        Duration::from_secs(3),
        "connect",
        Connection::connect(&upstream, ClientConfig::default()),
    )
    .await
    .expect_err("refused");
    assert!(err.is_connect() && !err.is_timeout(), "{err:?}");

    let pool = fcgi_core::Pool::new(upstream, Default::default());
    let err = within(
        Duration::from_secs(3),
        "pooled connect",
        pool.send(get("hello.php", "")),
    )
    .await
    .expect_err("refused");
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(
        pool.stats().open,
        0,
        "the failed connect gave its slot back"
    );
}

#[tokio::test]
async fn a_missing_unix_socket_is_a_connect_error() {
    let upstream: Upstream = "unix:/nonexistent/fcgi-core-tests/php-fpm.sock"
        .parse()
        .expect("valid upstream");
    let err = within(
        Duration::from_secs(3),
        "connect",
        Connection::connect(&upstream, ClientConfig::default()),
    )
    .await
    .expect_err("no such socket");
    assert!(err.is_connect() && !err.is_timeout(), "{err:?}");
    assert!(
        err.to_string()
            .contains("/nonexistent/fcgi-core-tests/php-fpm.sock"),
        "the error names the socket: {err}"
    );
}
