//! Clients that attack by being slow or silent, against a real PHP-FPM: uploads that
//! trickle in never hold a PHP-FPM worker (the body is read whole first, and cut with a
//! 408 after `body_timeout`), a connection that sends nothing is closed after
//! `header_timeout`, an idle keep-alive connection keeps `keepalive_timeout`, and over
//! `max_connections` a new connection is closed at once. Large uploads arrive intact
//! whether buffered or streamed, and a client that vanishes mid-upload leaves no
//! temporary file and no busy PHP-FPM connection behind.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fpm_harness::{fixtures_dir, Crc32, Fpm, FpmAddress, FpmConfig};
use gateway::config::Config;
use http::StatusCode;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::logs::LogCapture;
use support::multi_tenant::{request, send_to};
use support::payload::pattern;
use support::{eventually, start_fpm, within, Served, REQUEST_LIMIT, SOON};

/// Two tenants; `beta` streams request bodies instead of reading them whole first.
const TENANTS: &str = r#"
[tenants.alpha]
hosts = ["alpha.test"]

[tenants.beta]
hosts = ["beta.test"]
request_buffering = false
"#;

/// A PHP-FPM with `workers` workers and the gateway in front of it, with extra `[server]`
/// and `[fastcgi]` lines.
async fn start(workers: u32, server: &str, fastcgi: &str) -> (Fpm, Served) {
    let fpm = start_fpm(FpmConfig::new().workers(workers));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n\
         [fastcgi]\nupstream = {upstream:?}\nroot = {root:?}\n{fastcgi}\n{TENANTS}",
        upstream = fpm.address().to_upstream_string(),
        root = fixtures_dir().display().to_string(),
    );
    let config = Config::parse(&text, "tenants.toml", std::env::temp_dir())
        .unwrap_or_else(|err| panic!("test config is valid: {err}\n{text}"));
    let served = Served::bind(config).await;
    (fpm, served)
}

/// PHP-FPM connections the gateway has leased out right now.
fn busy_fpm_connections(served: &Served) -> usize {
    let stats = served.state.load().pool.stats();
    stats.open - stats.idle
}

/// The request URIs of PHP-FPM workers busy with anything but this status request, from
/// PHP-FPM's own status page (`pm.status_path = /fpm-status`, asked over FastCGI directly).
async fn busy_fpm_workers(fpm: &Fpm) -> Vec<String> {
    let upstream = match fpm.address() {
        FpmAddress::Tcp(addr) => fcgi_core::Upstream::Tcp(addr.to_string()),
        FpmAddress::Unix(path) => fcgi_core::Upstream::Unix(path.clone()),
    };
    let pool = fcgi_core::Pool::new(upstream, fcgi_core::PoolConfig::default());
    let mut params = fcgi_core::Params::new();
    for (name, value) in fpm_harness::status_page_params("json&full") {
        params.insert(name, value).expect("small param");
    }
    let body = within(REQUEST_LIMIT, "the PHP-FPM status page", async {
        let response = pool
            .send(fcgi_core::Request::new(params))
            .await
            .expect("status page");
        let (_, _, body) = response.into_parts();
        body.collect().await.expect("status body").to_bytes()
    })
    .await;
    let status: serde_json::Value = serde_json::from_slice(&body).expect("status JSON");
    status["processes"]
        .as_array()
        .expect("processes in the full status")
        .iter()
        // A worker keeping a FastCGI connection open between requests shows "Finishing", or
        // "Reading headers" of a request it has no URI for yet; one reading a request's
        // body shows "Getting request information".
        .filter(|process| process["state"] != "Idle" && process["state"] != "Finishing")
        .map(|process| process["request uri"].as_str().unwrap_or("-").to_owned())
        .filter(|uri| uri != "-" && !uri.starts_with(fpm_harness::STATUS_PATH))
        .collect()
}

/// Opens a connection and sends a POST head declaring `declared` body bytes, then
/// `sent` of them.
async fn start_upload(addr: SocketAddr, host: &str, declared: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /echo_body.php HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream
        .write_all(&pattern(0, sent))
        .await
        .expect("send part of the body");
    stream
}

/// Reads until the peer closes (a reset counts as a close), returning what came.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
#[ignore = "slow end-to-end (timeouts); scripts/test.sh runs it"]
async fn slow_uploaders_hold_no_php_fpm_worker_and_are_cut_with_408_after_body_timeout() {
    // Four pool connections and five workers: the fifth answers the status page.
    let (fpm, served) = start(5, "body_timeout = \"3s\"", "max_connections = 4").await;
    let started = Instant::now();
    let mut uploads = Vec::new();
    for _ in 0..4 {
        uploads.push(start_upload(served.addr, "alpha.test", 100_000, 10).await);
    }
    // Give the uploads time to take pool connections, were they going to.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let req = request("GET", "beta.test", "/hello.php")
        .body(Empty::<Bytes>::new())
        .expect("valid request");
    let reply = within(
        Duration::from_secs(1),
        "another tenant's request while four uploads stall",
        send_to(served.addr, req),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(busy_fpm_connections(&served), 0);
    assert_eq!(busy_fpm_workers(&fpm).await, Vec::<String>::new());

    for mut upload in uploads {
        let answer = within(REQUEST_LIMIT, "the 408", read_until_closed(&mut upload)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2900),
        "cut after {waited:?}"
    );
    assert_eq!(busy_fpm_workers(&fpm).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_stalled_streamed_upload_is_cut_with_408_after_body_timeout() {
    let (fpm, served) = start(3, "body_timeout = \"2s\"", "").await;
    let mut upload = start_upload(served.addr, "beta.test", 100_000, 10).await;
    // Streamed: it does hold a PHP-FPM connection, which is what the setting costs.
    assert!(
        eventually(SOON, || busy_fpm_connections(&served) == 1).await,
        "the streamed upload never reached PHP-FPM"
    );
    assert_eq!(busy_fpm_workers(&fpm).await, ["/echo_body.php"]);
    let answer = within(REQUEST_LIMIT, "the 408", read_until_closed(&mut upload)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        eventually(SOON, || busy_fpm_connections(&served) == 0).await,
        "the PHP-FPM connection stayed busy"
    );
}

/// Posts `body` to `/upload.php` and checks PHP saw exactly `expected` bytes.
async fn assert_upload_intact(
    addr: SocketAddr,
    host: &str,
    body: impl hyper::body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static,
    expected: &[u8],
) {
    let req = request("POST", host, "/upload.php")
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .expect("valid request");
    let reply = send_to(addr, req).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut crc = Crc32::default();
    crc.update(expected);
    let json = reply.json();
    assert_eq!(json["bytes"], expected.len(), "{host}");
    assert_eq!(json["crc32"], crc.hex(), "{host}");
}

#[tokio::test]
async fn a_5_mib_upload_arrives_intact_with_and_without_request_buffering() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let server = format!(
        "temp_dir = {:?}\nmax_body = \"8MiB\"",
        scratch.path().display().to_string()
    );
    let (_fpm, served) = start(2, &server, "").await;
    let payload = pattern(0, 5 << 20);
    for host in ["alpha.test", "beta.test"] {
        let body = Full::new(payload.clone()).map_err(|never| match never {});
        assert_upload_intact(served.addr, host, body, &payload).await;
    }
    // Chunked, so read whole whatever the tenant says (PHP-FPM needs a length).
    for host in ["alpha.test", "beta.test"] {
        let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = payload
            .chunks(100_000)
            .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
            .collect();
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        assert_upload_intact(served.addr, host, body, &payload).await;
    }
    assert_eq!(served.state.load().spool_usage.bytes(), 0);
}

/// Descriptors of this process (the gateway runs in it) open on files in `dir`; an
/// anonymous temporary file shows as `DIR/#NNN (deleted)`.
fn open_files_in(dir: &Path) -> usize {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with(&prefix))
        .count()
}

#[tokio::test]
async fn a_client_vanishing_mid_upload_leaves_no_temp_file_and_no_busy_fpm_connection() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let server = format!("temp_dir = {:?}", scratch.path().display().to_string());
    let (_fpm, served) = start(2, &server, "").await;
    for host in ["alpha.test", "beta.test"] {
        let upload = start_upload(served.addr, host, 1 << 20, 300 << 10).await;
        if host == "alpha.test" {
            // Buffered: the body goes to a temporary file in temp_dir, not to PHP-FPM.
            assert!(
                eventually(SOON, || open_files_in(scratch.path()) == 1).await,
                "the upload was not spooled to {}",
                scratch.path().display()
            );
            assert!(served.state.load().spool_usage.bytes() >= 1 << 20);
            assert_eq!(busy_fpm_connections(&served), 0);
        } else {
            assert!(
                eventually(SOON, || busy_fpm_connections(&served) == 1).await,
                "the streamed upload never reached PHP-FPM"
            );
        }
        drop(upload);
        assert!(
            eventually(SOON, || open_files_in(scratch.path()) == 0
                && busy_fpm_connections(&served) == 0)
            .await,
            "{host}: {} temp files open, {} PHP-FPM connections busy",
            open_files_in(scratch.path()),
            busy_fpm_connections(&served)
        );
        assert_eq!(served.state.load().spool_usage.bytes(), 0);
        let left: Vec<_> = std::fs::read_dir(scratch.path())
            .expect("temp dir")
            .collect();
        assert!(left.is_empty(), "files left in temp_dir: {left:?}");
    }
}

#[tokio::test]
#[ignore = "slow end-to-end (timeouts); scripts/test.sh runs it"]
async fn silent_connections_are_closed_within_header_timeout_while_a_client_is_served() {
    let (_fpm, served) = start(
        2,
        "header_timeout = \"2s\"\nkeepalive_timeout = \"60s\"",
        "",
    )
    .await;
    let mut watchers = Vec::new();
    for _ in 0..500 {
        let mut stream = TcpStream::connect(served.addr).await.expect("connect");
        let opened = Instant::now();
        watchers.push(tokio::spawn(async move {
            read_until_closed(&mut stream).await;
            opened.elapsed()
        }));
    }
    let req = request("GET", "alpha.test", "/hello.php")
        .body(Empty::<Bytes>::new())
        .expect("valid request");
    let reply = send_to(served.addr, req).await;
    assert_eq!(reply.status, StatusCode::OK);

    for watcher in watchers {
        let open_for = within(REQUEST_LIMIT, "a silent connection to close", watcher)
            .await
            .expect("watcher task");
        assert!(
            open_for >= Duration::from_millis(1900) && open_for <= Duration::from_secs(3),
            "a silent connection was closed after {open_for:?}"
        );
    }
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_at_header_timeout() {
    let (_fpm, served) = start(2, "header_timeout = \"2s\"", "").await;
    let mut stream = TcpStream::connect(served.addr).await.expect("connect");
    let opened = Instant::now();
    let head = b"GET /hello.php HTTP/1.1\r\nHost: alpha.test\r\nX-Slow: ";
    stream.write_all(head).await.expect("write");
    let trickle = async {
        loop {
            if stream.write_all(b"a").await.is_err() {
                return;
            }
            let mut probe = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut probe)).await {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => panic!("the gateway answered an incomplete head"),
                Err(_) => {}
            }
        }
    };
    within(REQUEST_LIMIT, "the trickled head to be cut", trickle).await;
    let open_for = opened.elapsed();
    assert!(
        open_for >= Duration::from_millis(1900) && open_for <= Duration::from_secs(3),
        "cut after {open_for:?}"
    );
}

/// A keep-alive HTTP/1 connection and a task that reports when the gateway closes it.
async fn keep_alive_connection(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<Instant>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let closed = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    (sender, closed)
}

async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
) -> StatusCode {
    within(REQUEST_LIMIT, "a keep-alive request", async {
        sender.ready().await.expect("connection open");
        let req = request("GET", host, "/hello.php")
            .body(Empty::new())
            .expect("valid request");
        let response = sender.send_request(req).await.expect("response");
        let status = response.status();
        response.into_body().collect().await.expect("body");
        status
    })
    .await
}

#[tokio::test]
async fn an_idle_keep_alive_connection_keeps_keepalive_timeout_not_header_timeout() {
    let (_fpm, served) = start(2, "header_timeout = \"1s\"\nkeepalive_timeout = \"2s\"", "").await;
    let (mut sender, closed) = keep_alive_connection(served.addr).await;
    assert_eq!(get_on(&mut sender, "alpha.test").await, StatusCode::OK);
    // Idle past header_timeout, within keepalive_timeout: still open.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get_on(&mut sender, "alpha.test").await, StatusCode::OK);
    let idle_from = Instant::now();
    let closed_at = within(REQUEST_LIMIT, "the idle connection to close", closed)
        .await
        .expect("connection task");
    let idle_for = closed_at - idle_from;
    assert!(
        idle_for >= Duration::from_millis(1900) && idle_for <= Duration::from_secs(3),
        "idle connection closed after {idle_for:?}"
    );
}

#[tokio::test]
async fn over_max_connections_a_new_connection_is_closed_at_once_and_the_others_are_served() {
    let logs = LogCapture::default();
    let _capture = logs.install_text();
    let (_fpm, served) = start(2, "max_connections = 3", "").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (mut sender, closed) = keep_alive_connection(served.addr).await;
        assert_eq!(get_on(&mut sender, "alpha.test").await, StatusCode::OK);
        held.push((sender, closed));
    }

    let mut over = TcpStream::connect(served.addr).await.expect("connect");
    let refused = within(
        Duration::from_secs(2),
        "the connection over the limit to be closed",
        read_until_closed(&mut over),
    )
    .await;
    assert!(refused.is_empty(), "{}", String::from_utf8_lossy(&refused));
    let lines = logs.lines();
    assert!(
        lines
            .iter()
            .any(|line| line.contains("connection limit reached")),
        "{lines:#?}"
    );

    for (sender, _) in &mut held {
        assert_eq!(get_on(sender, "beta.test").await, StatusCode::OK);
    }
    // Once one closes, a new connection is served again.
    let (sender, closed) = held.pop().expect("three held");
    drop(sender);
    within(REQUEST_LIMIT, "a held connection to close", closed)
        .await
        .expect("connection task");
    let served_again = async {
        loop {
            let (mut sender, _closed) = keep_alive_connection(served.addr).await;
            if sender.ready().await.is_ok() {
                let req = request("GET", "alpha.test", "/hello.php")
                    .body(Empty::new())
                    .expect("valid request");
                if let Ok(response) = sender.send_request(req).await {
                    return response.status();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let status = within(SOON, "a connection under the limit again", served_again).await;
    assert_eq!(status, StatusCode::OK);
}
