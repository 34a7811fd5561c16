//! Plain request/response exchanges with a real PHP-FPM, over TCP and a Unix socket:
//! bodies, params, status codes, repeated headers, STDERR and GET_VALUES.

mod common;

use std::sync::{Arc, Mutex};

use fcgi_core::{ClientConfig, Connection, Params, StderrSink};
use fpm_harness::{FpmConfig, Listen};
use http::StatusCode;

use common::{get, pool, script_params, send_text, start_fpm, upstream, within, REQUEST_LIMIT};

async fn hello_world_comes_back(listen: Listen) {
    let fpm = start_fpm(FpmConfig::new().workers(1).listen(listen));
    let pool = pool(fpm.address(), |_| {});
    let response = within(REQUEST_LIMIT, "hello.php", pool.send(get("hello.php", "")))
        .await
        .expect("hello.php succeeds");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=UTF-8"
    );
    let body = within(REQUEST_LIMIT, "hello.php body", response.collect())
        .await
        .expect("hello.php body");
    assert_eq!(&body[..], b"Hello, World!");
}

#[tokio::test]
async fn hello_world_over_tcp() {
    hello_world_comes_back(Listen::Tcp).await;
}

#[tokio::test]
async fn hello_world_over_a_unix_socket() {
    hello_world_comes_back(Listen::Unix).await;
}

/// ~100 KiB of params: 250 small and medium ones around the 127/128-byte length-prefix
/// boundary, multi-byte UTF-8, an empty one, and one of ~60 KB that fills most of a
/// record by itself.
fn big_params() -> (Params, Vec<(String, String)>) {
    let mut params = script_params("params.php", "");
    let mut sent = Vec::new();
    let lengths = [0usize, 1, 126, 127, 128, 129, 200, 255, 256, 300];
    for i in 0..250 {
        let len = lengths[i % lengths.len()];
        let name = if i % 7 == 0 {
            // Names longer than 127 bytes take the four-byte length prefix too.
            format!("X_LONG_NAME_{i:04}_{}", "N".repeat(130))
        } else {
            format!("X_PARAM_{i:04}")
        };
        let value: String = match i % 3 {
            0 => "v".repeat(len),
            1 => "é".repeat(len / 2),
            _ => (0..len)
                .map(|k| char::from(b' ' + ((k + i) % 94) as u8))
                .collect(),
        };
        sent.push((name, value));
    }
    sent.push(("X_HUGE".to_string(), "h".repeat(60_000)));
    for (name, value) in &sent {
        params
            .insert(name, value)
            .expect("every pair fits a record");
    }
    (params, sent)
}

async fn big_params_arrive_intact(listen: Listen) {
    let fpm = start_fpm(FpmConfig::new().workers(1).listen(listen));
    let pool = pool(fpm.address(), |_| {});
    let (params, sent) = big_params();
    let total: usize = sent.iter().map(|(n, v)| n.len() + v.len()).sum();
    assert!(total >= 100 * 1024, "only {total} bytes of params");

    let (status, body) = send_text(&pool, fcgi_core::Request::new(params))
        .await
        .expect("params.php succeeds");
    assert_eq!(status, StatusCode::OK);
    let server: serde_json::Value = serde_json::from_str(&body).expect("params.php prints JSON");
    for (name, value) in &sent {
        assert_eq!(
            server.get(name).and_then(|v| v.as_str()),
            Some(value.as_str()),
            "param {name} ({} bytes) arrived changed",
            value.len()
        );
    }
    assert_eq!(server["SCRIPT_NAME"], "/params.php");
}

#[tokio::test]
async fn a_hundred_kib_of_params_arrive_intact_over_tcp() {
    big_params_arrive_intact(Listen::Tcp).await;
}

#[tokio::test]
async fn a_hundred_kib_of_params_arrive_intact_over_a_unix_socket() {
    big_params_arrive_intact(Listen::Unix).await;
}

#[tokio::test]
async fn a_404_keeps_its_status_and_both_set_cookie_headers() {
    let fpm = start_fpm(FpmConfig::new().workers(1));
    let pool = pool(fpm.address(), |_| {});
    let response = within(
        REQUEST_LIMIT,
        "status.php",
        pool.send(get("status.php", "code=404")),
    )
    .await
    .expect("status.php answers");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(response.headers()["x-test"], "yes");
    assert!(
        !response.headers().contains_key("status"),
        "the CGI Status header is consumed"
    );
    let body = within(REQUEST_LIMIT, "status.php body", response.collect())
        .await
        .expect("body");
    assert_eq!(&body[..], b"status 404");
}

#[tokio::test]
async fn a_redirect_is_a_302_with_its_location() {
    let fpm = start_fpm(FpmConfig::new().workers(1));
    let pool = pool(fpm.address(), |_| {});
    let response = within(
        REQUEST_LIMIT,
        "redirect.php",
        pool.send(get("redirect.php", "")),
    )
    .await
    .expect("redirect.php answers");
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()["location"], "/elsewhere");
    let body = within(REQUEST_LIMIT, "redirect.php body", response.collect())
        .await
        .expect("body");
    assert!(body.is_empty());
}

#[tokio::test]
async fn stderr_lines_reach_the_sink_in_order_and_the_response_succeeds() {
    let fpm = start_fpm(FpmConfig::new().workers(1));
    let pool = pool(fpm.address(), |_| {});
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let sink = StderrSink::new(move |line| {
        seen.lock()
            .expect("sink lock")
            .push(String::from_utf8_lossy(line).into_owned());
    });
    const N: usize = 50;
    let request = get("stderr.php", &format!("lines={N}")).stderr(sink);
    let (status, body) = send_text(&pool, request)
        .await
        .expect("stderr.php succeeds");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

    let lines = lines.lock().expect("sink lock").clone();
    let expected: Vec<String> = (1..=N)
        .map(|i| format!("PHP message: error_log line {i}"))
        .collect();
    assert_eq!(lines, expected);
}

#[tokio::test]
async fn get_values_on_a_fresh_connection_reports_mpxs_conns() {
    let fpm = start_fpm(FpmConfig::new().workers(1));
    let mut conn = within(
        REQUEST_LIMIT,
        "connect",
        Connection::connect(&upstream(fpm.address()), ClientConfig::default()),
    )
    .await
    .expect("connects");
    let values = within(
        REQUEST_LIMIT,
        "GET_VALUES",
        conn.get_values(&["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"]),
    )
    .await
    .expect("GET_VALUES answered");
    let mpxs = values
        .iter()
        .find(|(name, _)| name == "FCGI_MPXS_CONNS")
        .map(|(_, value)| value.as_str());
    // PHP-FPM serves one request per connection at a time.
    assert_eq!(mpxs, Some("0"), "all values: {values:?}");
}

#[tokio::test]
async fn a_cgi_head_spanning_records_is_gathered_and_one_over_the_limit_refused() {
    let fpm = start_fpm(FpmConfig::new().workers(1));
    let pool = pool(fpm.address(), |_| {});
    // 60 headers of 1 KiB: under the default 64 KiB limit, but more than one record.
    let response = within(
        REQUEST_LIMIT,
        "headers_big.php",
        pool.send(get("headers_big.php", "kib=60")),
    )
    .await
    .expect("a 60 KiB head is accepted");
    assert_eq!(response.status(), StatusCode::OK);
    let big = response
        .headers()
        .keys()
        .filter(|name| name.as_str().starts_with("x-big-"))
        .count();
    assert_eq!(big, 60);
    assert_eq!(response.headers()["x-big-0059"].len(), 1024 - 14);
    let body = within(REQUEST_LIMIT, "headers_big.php body", response.collect())
        .await
        .expect("body");
    assert_eq!(&body[..], b"headers 60");

    let err = within(
        REQUEST_LIMIT,
        "headers_big.php",
        pool.send(get("headers_big.php", "kib=100")),
    )
    .await
    .expect_err("a 100 KiB head is over the limit");
    assert!(
        matches!(
            err.as_protocol(),
            Some(fcgi_core::ProtocolError::HeadTooLarge { .. })
        ),
        "{err:?}"
    );
    assert_eq!(
        pool.stats().open,
        0,
        "the refused response's connection is closed"
    );
}
