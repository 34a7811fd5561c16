//! What PHP answers, as the client gets it: status and headers mapped from CGI, headers
//! the gateway removes or sets, HEAD, and bodies streamed both ways without being held
//! in memory.

mod support;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fpm_harness::Crc32;
use futures_util::stream;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use support::multi_tenant::{full, request, TestGateway};
use support::payload::pattern;
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn a_php_status_header_sets_the_response_status() {
    let gw = TestGateway::start().await;
    let reply = gw.get("t1.example", "/status.php?code=404").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.text(), "status 404");
    assert_eq!(reply.header("x-test"), Some("yes"));

    let reply = gw.get("t1.example", "/status.php?code=503").await;
    assert_eq!(reply.status, 503);
}

#[tokio::test]
async fn a_php_location_is_a_302_redirect() {
    let gw = TestGateway::start().await;
    let reply = gw.get("t1.example", "/redirect.php").await;
    assert_eq!(reply.status, 302);
    assert_eq!(reply.header("location"), Some("/elsewhere"));
}

#[tokio::test]
async fn two_set_cookie_headers_stay_apart() {
    let gw = TestGateway::start().await;
    let reply = gw.get("t1.example", "/status.php").await;
    assert_eq!(reply.status, 200);
    let cookies: Vec<_> = reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
}

#[tokio::test]
async fn responses_say_server_fcgi_gateway_and_never_x_powered_by() {
    let gw = TestGateway::start().await;
    for (host, target) in [
        ("t1.example", "/params.php"),
        ("t1.example", "/status.php?code=500"),
        ("t1.example", "/static/hello.txt"),
        ("t1.example", "/.env"),
        ("nobody.test", "/"),
    ] {
        let reply = gw.get(host, target).await;
        assert_eq!(reply.header("server"), Some("fcgi-gateway"), "{target}");
        assert!(reply.header("x-powered-by").is_none(), "{target}");
    }
}

#[tokio::test]
async fn head_to_a_php_page_has_headers_and_no_body() {
    let gw = TestGateway::start().await;
    let reply = gw
        .raw(b"HEAD /status.php?code=201 HTTP/1.1\r\nHost: t1.example\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(reply.status, 201, "{}", reply.head);
    assert_eq!(reply.header("x-test"), Some("yes"));
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        reply.body.is_empty(),
        "HEAD sent a body: {:?}",
        reply.text()
    );

    // The connection (and the PHP-FPM one behind it) is still good for a GET.
    let reply = gw.get("t1.example", "/status.php?code=201").await;
    assert_eq!(reply.text(), "status 201");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_one_by_one_as_php_flushes() {
    let gw = TestGateway::start().await;
    let response = gw
        .send_streaming(
            request("GET", "t1.example", "/sse.php?count=5&interval_ms=150")
                .body(Empty::new())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    within(Duration::from_secs(10), "the event stream", async {
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("event stream frame");
            if let Some(data) = frame.data_ref() {
                if !data.is_empty() {
                    arrivals.push(Instant::now());
                    text.push_str(std::str::from_utf8(data).unwrap());
                }
            }
        }
    })
    .await;
    for i in 0..5 {
        assert!(text.contains(&format!("id: {i}\nevent: tick\ndata: tick {i}\n\n")));
    }
    let spread = *arrivals.last().unwrap() - arrivals[0];
    // PHP sleeps 150 ms after each of 5 events: buffered, they would all come at once.
    assert!(
        arrivals.len() >= 3 && spread >= Duration::from_millis(300),
        "{} chunks over {spread:?}",
        arrivals.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_download_streams_in_bounded_memory() {
    let gw = TestGateway::start().await;
    let rss_before = support::payload::current_rss();
    let response = gw
        .send_streaming(
            request("GET", "t1.example", "/download.php?mib=200")
                .body(Empty::new())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        (200 * MIB).to_string().as_str()
    );
    let mut body = response.into_body();
    let mut received: u64 = 0;
    within(Duration::from_secs(45), "the 200 MiB download", async {
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("download frame");
            if let Some(data) = frame.data_ref() {
                // Byte k is (k % 65536) % 251: spot-check each chunk's first byte.
                if let Some(&first) = data.first() {
                    assert_eq!(u64::from(first), (received % 65536) % 251, "at {received}");
                }
                received += data.len() as u64;
            }
        }
    })
    .await;
    assert_eq!(received, 200 * MIB);
    let growth = support::payload::peak_rss().saturating_sub(rss_before);
    // The gateway runs in this process: this bounds it and the client together.
    assert!(
        growth < 48 * MIB,
        "peak RSS grew by {} MiB for a 200 MiB download",
        growth / MIB
    );
}

/// `len` pattern bytes as a stream of 64 KiB frames, made as they are sent.
fn pattern_stream(
    len: u64,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
    const CHUNK: u64 = 64 * 1024;
    let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
        let from = i * CHUNK;
        Ok(Frame::data(pattern(from, (len - from).min(CHUNK) as usize)))
    });
    StreamBody::new(stream::iter(chunks))
}

fn pattern_crc(len: u64) -> String {
    let mut crc = Crc32::default();
    let mut from = 0;
    while from < len {
        let n = (len - from).min(MIB);
        crc.update(&pattern(from, n as usize));
        from += n;
    }
    crc.hex()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mib_upload_with_content_length_streams_to_php() {
    let gw = TestGateway::start().await;
    let len = 20 * MIB;
    let crc = pattern_crc(len);
    let rss_before = support::payload::current_rss();
    let reply = gw
        .send(
            request("POST", "t1.example", "/upload.php")
                .header("content-type", "application/octet-stream")
                .header("content-length", len)
                .body(pattern_stream(len))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let report = reply.json();
    assert_eq!(report["bytes"], len);
    assert_eq!(report["crc32"], crc);
    let growth = support::payload::peak_rss().saturating_sub(rss_before);
    // Held whole anywhere on the way (client body, gateway, FastCGI stdin), it would
    // take 20 MiB at least.
    assert!(
        growth < 16 * MIB,
        "peak RSS grew by {} MiB for a 20 MiB upload",
        growth / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_is_spooled_and_arrives_whole_with_its_length() {
    let gw = TestGateway::start().await;
    // Past the in-memory limit, so the spool goes through a file.
    let len = 3 * MIB + 12_345;
    let reply = gw
        .send(
            request("POST", "t1.example", "/upload.php")
                .header("content-type", "application/octet-stream")
                .body(pattern_stream(len))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let report = reply.json();
    assert_eq!(report["bytes"], len);
    assert_eq!(report["crc32"], pattern_crc(len));

    let len = 300_000;
    let reply = gw
        .send(
            request("POST", "t1.example", "/params.php?only=CONTENT_LENGTH")
                .header("content-type", "application/octet-stream")
                .body(pattern_stream(len))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), len.to_string());
}

#[tokio::test]
async fn a_declared_body_over_max_body_is_413() {
    let gw = TestGateway::with("max_body = \"1MiB\"", support::multi_tenant::TENANTS).await;
    let raw = format!(
        "POST /upload.php HTTP/1.1\r\nHost: t1.example\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\npartial",
        2 * MIB
    );
    let reply = gw.raw(raw.as_bytes()).await;
    assert_eq!(reply.status, 413, "{}", reply.head);

    // At the limit is fine.
    let reply = gw
        .send(
            request("POST", "t1.example", "/upload.php")
                .header("content-type", "application/octet-stream")
                .body(full(pattern(0, MIB as usize)))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["bytes"], MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_max_body_is_413() {
    let gw = TestGateway::with("max_body = \"1MiB\"", support::multi_tenant::TENANTS).await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // Written alongside reading: the gateway answers once it has read past the limit and
    // then stops reading, so the rest may never be taken.
    let writer = tokio::spawn(async move {
        let head = "POST /upload.php HTTP/1.1\r\nHost: t1.example\r\n\
                    Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\
                    Connection: close\r\n\r\n";
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..24 {
            write.write_all(b"10000\r\n").await?;
            write.write_all(&chunk).await?;
            write.write_all(b"\r\n").await?;
        }
        write.write_all(b"0\r\n\r\n").await
    });
    let mut answer = Vec::new();
    within(support::REQUEST_LIMIT, "the 413", async {
        let _ = read.read_to_end(&mut answer).await;
    })
    .await;
    writer.abort();
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

/// Answers without a body (HEAD, 204, 304, `Content-Length: 0`) are never read by hyper;
/// PHP-FPM's END_REQUEST after them must still be read, or each one costs a PHP-FPM
/// connection (and a worker's accept) instead of returning it to the pool.
#[tokio::test]
async fn bodiless_answers_leave_the_php_fpm_connection_reusable() {
    use http::{Method, StatusCode};
    use http_body_util::Full;
    use support::single_tenant::{self, client, send};

    let (_fpm, relay, gateway) = single_tenant::TestGateway::with_relay("").await;
    let client = client();
    let cases = [
        (Method::GET, "/hello.php", StatusCode::OK),
        (Method::HEAD, "/hello.php", StatusCode::OK),
        (Method::GET, "/status.php?code=204", StatusCode::NO_CONTENT),
        (
            Method::GET,
            "/status.php?code=304",
            StatusCode::NOT_MODIFIED,
        ),
        (Method::GET, "/status.php?empty=1", StatusCode::OK),
        (Method::GET, "/hello.php", StatusCode::OK),
    ];
    for (method, path, status) in cases {
        let req = single_tenant::request(&gateway, method.clone(), path)
            .body(Full::default())
            .expect("valid request");
        let reply = send(&client, req).await;
        assert_eq!(reply.status, status, "{method} {path}");
        // The END_REQUEST is read after the client has its answer: wait for the
        // connection to be back in the pool before the next request takes one.
        assert!(
            support::eventually(support::SOON, || gateway.state.load().pool.stats().idle
                == 1)
            .await,
            "{method} {path}: the PHP-FPM connection never went back to the pool"
        );
    }
    assert_eq!(
        relay.total_connections(),
        1,
        "one PHP-FPM connection for all"
    );
}
