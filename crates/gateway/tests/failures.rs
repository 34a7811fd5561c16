//! What a client sees when PHP-FPM fails: down, killed mid-request, too slow, stalled
//! mid-body, saturated, recycling its workers; and what the operator sees in the log
//! (PHP's stderr with the tenant, one access line per request, never a secret).
//!
//! Every test runs the real gateway on a loopback port in front of a private PHP-FPM
//! and talks HTTP/1.1 to it. Tests that capture logs run on a current-thread runtime so
//! the gateway's tasks log on the thread the capture is installed on.

mod support;

use std::time::Duration;

use bytes::Bytes;
use fpm_harness::{free_port, Fpm, FpmConfig};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};

use support::logs::LogCapture;
use support::single_tenant::{
    client, get, request, send, send_head, TestGateway, DBPASS, HOST, TENANT,
};
use support::{eventually, start_fpm, within, Reply, REQUEST_LIMIT};

/// Runs a blocking harness call (kill, restart) off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("harness call did not panic")
}

/// The gateway's own error page: small HTML naming the status and nothing else.
fn assert_error_page(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let page = reply.text();
    let code = status.as_u16().to_string();
    assert!(page.contains(&code), "{page}");
    assert!(reply.body.len() < 512, "not a small page: {page}");
    for leak in ["php", "fpm", "127.0.0.1", TENANT] {
        assert!(
            !page.to_lowercase().contains(leak),
            "page mentions {leak}: {page}"
        );
    }
}

#[tokio::test]
async fn nothing_listening_upstream_is_a_502_page() {
    let upstream = format!("127.0.0.1:{}", free_port());
    let gateway = TestGateway::start(&upstream, "", "").await;
    let reply = get(&client(), &gateway, "/hello.php").await;
    assert_error_page(&reply, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn php_fpm_down_is_a_502_page_and_the_first_request_after_its_restart_succeeds() {
    let (fpm, gateway) = TestGateway::with_fpm("", "").await;
    let client = client();
    // A kept connection now sits in the pool, to be found dead after the kill.
    let reply = get(&client, &gateway, "/hello.php").await;
    assert_eq!(reply.status, StatusCode::OK);

    let mut fpm = blocking(move || {
        let mut fpm: Fpm = fpm;
        fpm.kill().expect("php-fpm is killed");
        fpm
    })
    .await;
    let reply = get(&client, &gateway, "/hello.php").await;
    assert_error_page(&reply, StatusCode::BAD_GATEWAY);

    let fpm = blocking(move || {
        fpm.restart().expect("php-fpm restarts on the same port");
        fpm
    })
    .await;
    let reply = get(&client, &gateway, "/hello.php").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "Hello, World!"),
        "the same gateway serves again without a restart"
    );
    drop(fpm);
}

#[tokio::test]
async fn php_fpm_killed_mid_request_fails_that_request_promptly_and_later_ones_succeed() {
    // The default read timeout (60 s) is far beyond the test's bound, so finishing
    // within it proves the kill itself was noticed, not a timeout.
    let (fpm, gateway) = TestGateway::with_fpm("", "").await;
    let client = client();
    let in_flight = {
        let req = request(&gateway, Method::GET, "/sleep.php?ms=2000")
            .body(Full::default())
            .expect("valid request");
        let client = client.clone();
        tokio::spawn(async move {
            // A 502 or a connection closed mid-response are both a prompt failure.
            match client.request(req).await {
                Ok(response) => {
                    let status = response.status();
                    let body = response.into_body().collect().await;
                    Ok((status, body.map(|b| b.to_bytes())))
                }
                Err(err) => Err(err),
            }
        })
    };
    assert!(
        eventually(REQUEST_LIMIT, || gateway.open_fpm_connections() == 1).await,
        "the request never reached PHP-FPM"
    );
    // Let the request reach its worker.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut fpm = blocking(move || {
        let mut fpm: Fpm = fpm;
        fpm.kill().expect("php-fpm is killed");
        fpm
    })
    .await;
    let outcome = within(Duration::from_secs(5), "the killed request", in_flight)
        .await
        .expect("task did not panic");
    match outcome {
        Ok((status, _)) => assert_eq!(status, StatusCode::BAD_GATEWAY),
        Err(err) => assert!(!err.is_connect(), "the gateway itself stayed up: {err:?}"),
    }

    let fpm = blocking(move || {
        fpm.restart().expect("php-fpm restarts on the same port");
        fpm
    })
    .await;
    let reply = get(&client, &gateway, "/sleep.php?ms=10").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "slept 10")
    );
    drop(fpm);
}

#[tokio::test]
async fn a_script_silent_past_read_timeout_is_a_504_page() {
    let (_fpm, gateway) = TestGateway::with_fpm("", "read_timeout = \"500ms\"").await;
    let reply = get(&client(), &gateway, "/sleep.php?ms=3000").await;
    assert_error_page(&reply, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        eventually(REQUEST_LIMIT, || gateway.open_fpm_connections() == 0).await,
        "the timed-out connection was kept"
    );
}

#[tokio::test]
async fn a_stall_mid_body_cuts_the_response_after_read_timeout() {
    let (_fpm, gateway) = TestGateway::with_fpm("", "read_timeout = \"500ms\"").await;
    // One flushed line, then 5 s of silence before the next.
    let req = request(
        &gateway,
        Method::GET,
        "/stream.php?seconds=20&interval_ms=5000",
    )
    .body(Full::default())
    .expect("valid request");
    let response = send_head(&client(), req).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = Vec::new();
    // Well before the second line would come: the cut is the timeout's doing.
    let ended = within(Duration::from_secs(4), "the stalled body to end", async {
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        received.extend_from_slice(data);
                    }
                }
                Some(Err(err)) => return Err(err),
                None => return Ok(()),
            }
        }
    })
    .await;
    let received = String::from_utf8_lossy(&received);
    assert!(
        ended.is_err(),
        "a cut body must not look complete; got {received:?}"
    );
    assert_eq!(received, "line 0\n");
    assert!(
        eventually(REQUEST_LIMIT, || gateway.open_fpm_connections() == 0).await,
        "the stalled connection was kept"
    );
}

#[tokio::test]
async fn a_saturated_pool_answers_503_with_retry_after() {
    let (_fpm, gateway) = TestGateway::with_fpm(
        "queue_timeout = \"200ms\"\nretry_after = \"7s\"",
        "max_connections = 1",
    )
    .await;
    let client = client();
    let slow = {
        let req = request(&gateway, Method::GET, "/sleep.php?ms=1500")
            .body(Full::default())
            .expect("valid request");
        let client = client.clone();
        tokio::spawn(async move { send(&client, req).await })
    };
    assert!(
        eventually(REQUEST_LIMIT, || gateway.open_fpm_connections() == 1).await,
        "the slow request never took the connection"
    );

    let reply = get(&client, &gateway, "/hello.php").await;
    assert_error_page(&reply, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("7"));

    let slow = within(REQUEST_LIMIT, "the slow request", slow)
        .await
        .expect("task did not panic");
    assert_eq!(
        (slow.status, slow.text().as_str()),
        (StatusCode::OK, "slept 1500")
    );
    let reply = get(&client, &gateway, "/hello.php").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the freed connection serves again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_recycled_by_max_requests_cost_no_request() {
    const REQUESTS: usize = 500;
    const CLIENTS: usize = 16;
    let fpm = start_fpm(FpmConfig::new().workers(4).max_requests(10));
    let gateway = TestGateway::start(
        &fpm.address().to_upstream_string(),
        "",
        "max_connections = 4",
    )
    .await;
    let client = client();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = client.clone();
            let uri = gateway.url("/hello.php");
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for _ in (i..REQUESTS).step_by(CLIENTS) {
                    let req = http::Request::get(&uri)
                        .header(http::header::HOST, HOST)
                        .body(Full::<Bytes>::default())
                        .expect("valid request");
                    let reply = send(&client, req).await;
                    if reply.status != StatusCode::OK || reply.body != "Hello, World!" {
                        failures.push((reply.status, reply.text()));
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for task in tasks {
        let task_failures = within(Duration::from_secs(60), "a client's requests", task)
            .await
            .expect("client task did not panic");
        failures.extend(task_failures);
    }
    assert!(
        failures.is_empty(),
        "{} of {REQUESTS} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// Polls until `count` access-log lines were captured (a line is written when its
/// response body is dropped, just after the client has read it), then checks no more
/// come.
async fn access_lines(
    log: &LogCapture,
    count: usize,
    is_access: impl Fn(&str) -> bool,
) -> Vec<String> {
    let lines = |log: &LogCapture| -> Vec<String> {
        log.lines().into_iter().filter(|l| is_access(l)).collect()
    };
    eventually(REQUEST_LIMIT, || lines(log).len() >= count).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lines = lines(log);
    assert_eq!(
        lines.len(),
        count,
        "one access line per request: {lines:#?}"
    );
    lines
}

#[tokio::test]
async fn php_stderr_reaches_the_log_with_the_tenant_and_no_secret_is_ever_logged() {
    const AUTH_PASSWORD: &str = "authpw-51d0e2";
    const COOKIE_VALUE: &str = "cookie-8b61c4";
    const QUERY_TOKEN: &str = "token-c39a07";
    // base64("alice:authpw-51d0e2")
    const AUTHORIZATION: &str = "Basic YWxpY2U6YXV0aHB3LTUxZDBlMg==";
    let secrets = [
        DBPASS,
        AUTH_PASSWORD,
        "YWxpY2U6YXV0aHB3LTUxZDBlMg",
        COOKIE_VALUE,
        QUERY_TOKEN,
    ];

    let log = LogCapture::default();
    let _guard = log.install_text();
    let mut fpm = start_fpm(FpmConfig::new().workers(2));
    let gateway = TestGateway::start(
        &fpm.address().to_upstream_string(),
        "max_header_bytes = \"256KiB\"",
        "read_timeout = \"500ms\"",
    )
    .await;
    let client = client();
    let with_secrets = |host: &str, path: &str| {
        http::Request::get(gateway.url(path))
            .header(http::header::HOST, host)
            .header(http::header::AUTHORIZATION, AUTHORIZATION)
            .header(http::header::COOKIE, format!("session={COOKIE_VALUE}"))
    };
    let mut requests = 0;
    let mut check = |reply: Reply, status: StatusCode| {
        assert_eq!(reply.status, status, "{}", reply.text());
        requests += 1;
        reply
    };

    let reply = send(
        &client,
        with_secrets(HOST, "/stderr.php?lines=2")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(check(reply, StatusCode::OK).text(), "ok");
    let path = format!("/params.php?token={QUERY_TOKEN}");
    let reply = send(
        &client,
        with_secrets(HOST, &path).body(Full::default()).unwrap(),
    )
    .await;
    let reply = check(reply, StatusCode::OK);
    assert!(
        reply.text().contains(DBPASS) && reply.text().contains(COOKIE_VALUE),
        "the secrets did reach PHP"
    );
    let reply = send(
        &client,
        with_secrets("unknown.test", &path)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    check(reply, StatusCode::NOT_FOUND);
    // Fits the HTTP limits but not one FastCGI record: refused by the gateway, logged.
    let reply = send(
        &client,
        with_secrets(HOST, &path)
            .header("x-big", "b".repeat(70_000))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    check(reply, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let reply = send(
        &client,
        with_secrets(HOST, "/sleep.php?ms=1500")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    check(reply, StatusCode::GATEWAY_TIMEOUT);
    fpm.kill().expect("php-fpm is killed");
    let reply = send(
        &client,
        with_secrets(HOST, &path).body(Full::default()).unwrap(),
    )
    .await;
    check(reply, StatusCode::BAD_GATEWAY);

    access_lines(&log, requests, |l| l.contains(" access: ")).await;
    let lines = log.lines();
    let php_line = lines
        .iter()
        .find(|l| l.contains("error_log line 1"))
        .unwrap_or_else(|| panic!("PHP's stderr is logged: {lines:#?}"));
    assert!(
        php_line.contains("WARN") && php_line.contains(&format!("tenant={TENANT}")),
        "{php_line}"
    );
    assert!(lines.iter().any(|l| l.contains("error_log line 2")));
    for line in &lines {
        for secret in secrets {
            assert!(!line.contains(secret), "a secret was logged: {line}");
        }
    }
}

#[tokio::test]
async fn a_php_response_with_content_length_keeps_its_fpm_connection_for_the_next_request() {
    let (_fpm, relay, gateway) = TestGateway::with_relay("").await;
    let client = client();
    // hyper stops reading a body of known length at its last byte; the gateway must still
    // read PHP-FPM's END_REQUEST so the connection goes back to the pool clean.
    for _ in 0..3 {
        let reply = get(&client, &gateway, "/download.php?mib=1").await;
        assert_eq!(reply.header("content-length"), Some("1048576"));
        assert_eq!(reply.body.len(), 1 << 20);
        assert!(
            eventually(REQUEST_LIMIT, || gateway.state.load().pool.stats().idle
                == 1)
            .await,
            "the connection did not go back to the pool"
        );
    }
    assert_eq!(
        relay.total_connections(),
        1,
        "one kept connection served all three"
    );
}

/// One request of the access-log tests and what its line must say.
struct Expected {
    method: &'static str,
    path: &'static str,
    tenant: &'static str,
    status: u16,
    bytes_out: u64,
    /// Whether PHP-FPM served it, so its line has the FPM time.
    php: bool,
}

/// Sends a mix of requests (PHP, static, a body, an unknown host, a large response with
/// a Content-Length, HEAD) and returns what their access lines must say.
async fn access_log_requests(gateway: &TestGateway) -> Vec<Expected> {
    let client = client();
    let mut expected = Vec::new();

    let reply = get(&client, gateway, "/hello.php?token=not-logged").await;
    assert_eq!(reply.status, StatusCode::OK);
    expected.push(Expected {
        method: "GET",
        path: "/hello.php",
        tenant: TENANT,
        status: 200,
        bytes_out: 13,
        php: true,
    });

    let reply = get(&client, gateway, "/static/hello.txt").await;
    assert_eq!(reply.status, StatusCode::OK);
    expected.push(Expected {
        method: "GET",
        path: "/static/hello.txt",
        tenant: TENANT,
        status: 200,
        bytes_out: reply.body.len() as u64,
        php: false,
    });

    let req = request(gateway, Method::POST, "/echo_body.php")
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(b"posted body")))
        .expect("valid request");
    let reply = send(&client, req).await;
    assert_eq!(reply.body, "posted body");
    expected.push(Expected {
        method: "POST",
        path: "/echo_body.php",
        tenant: TENANT,
        status: 200,
        bytes_out: 11,
        php: true,
    });

    let req = http::Request::get(gateway.url("/hello.php"))
        .header(http::header::HOST, "unknown.test")
        .body(Full::default())
        .expect("valid request");
    let reply = send(&client, req).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    expected.push(Expected {
        method: "GET",
        path: "/hello.php",
        tenant: "-",
        status: 404,
        bytes_out: reply.body.len() as u64,
        php: false,
    });

    let reply = get(&client, gateway, "/download.php?mib=1").await;
    assert_eq!(reply.body.len(), 1 << 20);
    expected.push(Expected {
        method: "GET",
        path: "/download.php",
        tenant: TENANT,
        status: 200,
        bytes_out: 1 << 20,
        php: true,
    });

    let req = request(gateway, Method::HEAD, "/hello.php")
        .body(Full::default())
        .expect("valid request");
    let reply = send(&client, req).await;
    assert_eq!(reply.status, StatusCode::OK);
    expected.push(Expected {
        method: "HEAD",
        path: "/hello.php",
        tenant: TENANT,
        status: 200,
        bytes_out: 0,
        php: true,
    });
    expected
}

/// The `key=value` fields of a text log line.
fn text_fields(line: &str) -> std::collections::HashMap<&str, &str> {
    line.split(' ')
        .filter_map(|word| word.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
        .collect()
}

#[tokio::test]
async fn the_access_log_has_one_line_per_request_with_its_fields() {
    let log = LogCapture::default();
    let _guard = log.install_text();
    let (fpm, gateway) = TestGateway::with_fpm("", "").await;
    let server = fpm.address().to_upstream_string();
    let expected = access_log_requests(&gateway).await;
    let lines = access_lines(&log, expected.len(), |l| l.contains(" access: ")).await;
    for want in &expected {
        let line = lines
            .iter()
            .find(|l| {
                let f = text_fields(l);
                f.get("method") == Some(&want.method)
                    && f.get("path") == Some(&want.path)
                    && f.get("tenant") == Some(&want.tenant)
            })
            .unwrap_or_else(|| panic!("no line for {} {}: {lines:#?}", want.method, want.path));
        let fields = text_fields(line);
        assert_eq!(fields["status"], want.status.to_string(), "{line}");
        assert_eq!(fields["bytes_out"], want.bytes_out.to_string(), "{line}");
        assert!(fields["duration_us"].parse::<u64>().is_ok(), "{line}");
        assert_eq!(fields["completed"], "true", "{line}");
        assert_eq!(fields.contains_key("fpm_us"), want.php, "{line}");
        if want.php {
            assert!(fields["fpm_us"].parse::<u64>().is_ok(), "{line}");
        }
        // The PHP-FPM server that answered.
        assert_eq!(
            fields.get("upstream").copied(),
            want.php.then_some(server.as_str()),
            "{line}"
        );
        assert!(
            !line.contains("not-logged"),
            "query strings stay out: {line}"
        );
    }
}

#[tokio::test]
async fn json_access_lines_parse_with_every_field() {
    let log = LogCapture::default();
    let _guard = log.install_json();
    let (_fpm, gateway) = TestGateway::with_fpm("", "").await;
    let expected = access_log_requests(&gateway).await;
    let lines = access_lines(&log, expected.len(), |l| {
        l.contains("\"target\":\"access\"")
    })
    .await;
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for want in &expected {
        let record = records
            .iter()
            .find(|r| {
                r["method"] == want.method && r["path"] == want.path && r["tenant"] == want.tenant
            })
            .unwrap_or_else(|| panic!("no record for {} {}: {records:#?}", want.method, want.path));
        assert_eq!(record["status"], want.status, "{record}");
        assert_eq!(record["bytes_out"], want.bytes_out, "{record}");
        assert!(record["duration_us"].is_u64(), "{record}");
        assert_eq!(record["completed"], true, "{record}");
        assert_eq!(record["fpm_us"].is_u64(), want.php, "{record}");
        assert_eq!(record["upstream"].is_string(), want.php, "{record}");
        assert_eq!(record["message"], "request", "{record}");
    }
    // Every other line is JSON too.
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}
