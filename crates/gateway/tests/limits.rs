//! The gateway's HTTP limits, checked over real sockets: a body over `max_body` is
//! refused before PHP runs, a head over `max_headers` / `max_header_bytes` or a header
//! too large for FastCGI is a 431 (hyper's or the gateway's, never a 502), and a graceful
//! shutdown finishes what is in flight while refusing new connections.
//!
//! PHP-FPM sits behind a counting relay so a test can tell whether a request reached it.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;

use support::single_tenant::{client, get, raw_exchange, request, send, TestGateway, HOST};
use support::{eventually, within, REQUEST_LIMIT};

/// The status line of a raw HTTP response.
fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[tokio::test]
async fn a_declared_body_over_max_body_is_a_413_before_php_runs() {
    let (_fpm, relay, gateway) = TestGateway::with_relay("max_body = \"1KiB\"").await;
    // Only the head: the answer must not wait for 10 MiB that never come.
    let head = format!(
        "POST /echo_body.php HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 10485760\r\nConnection: close\r\n\r\n"
    );
    let response = raw_exchange(gateway.addr, head.as_bytes()).await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 413 "),
        "{response}"
    );
    assert!(response.contains("413 Payload Too Large"), "{response}");
    assert_eq!(relay.total_connections(), 0, "PHP-FPM was contacted");

    // The relay does count: a body under the limit goes through it.
    let req = request(&gateway, Method::POST, "/echo_body.php")
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(b"small")))
        .expect("valid request");
    let reply = send(&client(), req).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "small")
    );
    assert_eq!(relay.total_connections(), 1);
}

#[tokio::test]
async fn a_chunked_body_over_max_body_is_a_413_before_php_runs() {
    let (_fpm, relay, gateway) = TestGateway::with_relay("max_body = \"1KiB\"").await;
    let chunk = "x".repeat(2000);
    let raw = format!(
        "POST /echo_body.php HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let response = raw_exchange(gateway.addr, raw.as_bytes()).await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 413 "),
        "{response}"
    );
    assert_eq!(relay.total_connections(), 0, "PHP-FPM was contacted");
}

#[tokio::test]
async fn more_headers_than_max_headers_is_a_431_not_a_502() {
    let (_fpm, relay, gateway) = TestGateway::with_relay("max_headers = 20").await;
    let headers: String = (0..30).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    let raw =
        format!("GET /hello.php HTTP/1.1\r\nHost: {HOST}\r\n{headers}Connection: close\r\n\r\n");
    let response = raw_exchange(gateway.addr, raw.as_bytes()).await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 431 "),
        "{response}"
    );
    assert_eq!(relay.total_connections(), 0, "PHP-FPM was contacted");

    // Under the limit is served.
    let reply = get(&client(), &gateway, "/hello.php").await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_head_over_max_header_bytes_is_a_431_not_a_502() {
    let (_fpm, relay, gateway) = TestGateway::with_relay("max_header_bytes = \"16KiB\"").await;
    let raw = format!(
        "GET /hello.php HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(20 * 1024)
    );
    let response = raw_exchange(gateway.addr, raw.as_bytes()).await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 431 "),
        "{response}"
    );
    assert_eq!(relay.total_connections(), 0, "PHP-FPM was contacted");
}

#[tokio::test]
async fn a_header_too_large_for_one_fastcgi_record_is_a_431_not_a_502() {
    // Within the HTTP limit, but over the 64 KiB a FastCGI param can take.
    let (_fpm, relay, gateway) = TestGateway::with_relay("max_header_bytes = \"256KiB\"").await;
    let req = request(&gateway, Method::GET, "/hello.php")
        .header("x-big", "b".repeat(70_000))
        .body(Full::default())
        .expect("valid request");
    let reply = send(&client(), req).await;
    assert_eq!(
        reply.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "{}",
        reply.text()
    );
    assert_eq!(relay.total_connections(), 0, "PHP-FPM was contacted");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    let (_fpm, _relay, mut gateway) = TestGateway::with_relay("").await;
    let addr = gateway.addr;
    let in_flight = {
        let req = request(&gateway, Method::GET, "/sleep.php?ms=2000")
            .body(Full::default())
            .expect("valid request");
        tokio::spawn(async move { send(&client(), req).await })
    };
    assert!(
        eventually(REQUEST_LIMIT, || gateway.open_fpm_connections() == 1).await,
        "the slow request never reached PHP-FPM"
    );

    gateway.shutdown();
    let refused = async {
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => return,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    within(
        Duration::from_secs(5),
        "new connections to be refused",
        refused,
    )
    .await;
    assert!(
        !in_flight.is_finished(),
        "connections were refused only after the in-flight request ended"
    );

    let reply = within(REQUEST_LIMIT, "the in-flight request", in_flight)
        .await
        .expect("client task did not panic");
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "slept 2000")
    );
    gateway.stopped().await;
}
