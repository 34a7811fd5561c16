//! The CGI environment PHP sees, compared with what nginx's `fastcgi_params` gives it:
//! request variables, headers as `HTTP_*`, the tenant's params, size limits and the
//! trusted-proxy rules.

mod support;

use http_body_util::Empty;
use serde_json::Value;
use support::multi_tenant::{full, request, TestGateway};

#[tokio::test]
async fn the_cgi_variables_match_nginx_fastcgi_params() {
    let gw = TestGateway::start().await;
    let root = fpm_harness::fixtures_dir().display().to_string();
    let reply = gw
        .send(
            request("POST", "t1.example:8080", "/params.php?a=1&b=%20x")
                .header("content-type", "application/octet-stream")
                .body(full("hello"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let env = reply.json();
    let expect = |name: &str, value: &str| assert_eq!(env[name], value, "{name}");
    expect("SCRIPT_FILENAME", &format!("{root}/params.php"));
    expect("SCRIPT_NAME", "/params.php");
    expect("REQUEST_URI", "/params.php?a=1&b=%20x");
    expect("DOCUMENT_URI", "/params.php");
    expect("DOCUMENT_ROOT", &root);
    expect("QUERY_STRING", "a=1&b=%20x");
    expect("REQUEST_METHOD", "POST");
    expect("CONTENT_TYPE", "application/octet-stream");
    expect("CONTENT_LENGTH", "5");
    expect("SERVER_PROTOCOL", "HTTP/1.1");
    expect("GATEWAY_INTERFACE", "CGI/1.1");
    expect("SERVER_SOFTWARE", "fcgi-gateway");
    expect("REMOTE_ADDR", "127.0.0.1");
    expect("SERVER_ADDR", "127.0.0.1");
    expect("SERVER_PORT", &gw.addr.port().to_string());
    expect("SERVER_NAME", "t1.example");
    expect("REQUEST_SCHEME", "http");
    expect("REDIRECT_STATUS", "200");
    let remote_port: u16 = env["REMOTE_PORT"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .expect("REMOTE_PORT is a port number");
    assert_ne!(remote_port, 0);
    assert_ne!(remote_port, gw.addr.port());
    assert_eq!(env["_GET"]["b"], " x");
    assert!(env.get("HTTPS").is_none(), "plain HTTP must not set HTTPS");
    // Only with a path info.
    assert!(env.get("PATH_INFO").is_none());
    assert!(env.get("PATH_TRANSLATED").is_none());
}

#[tokio::test]
async fn path_info_and_path_translated_are_set_only_when_the_url_has_a_path_info() {
    let gw = TestGateway::start().await;
    let root = fpm_harness::fixtures_dir().display().to_string();
    let env = gw.get("t1.example", "/params.php/a/b.jpg?x=1").await.json();
    assert_eq!(env["SCRIPT_NAME"], "/params.php");
    assert_eq!(env["PATH_INFO"], "/a/b.jpg");
    assert_eq!(env["PATH_TRANSLATED"], format!("{root}/a/b.jpg"));
    assert_eq!(env["DOCUMENT_URI"], "/params.php/a/b.jpg");
    assert_eq!(env["REQUEST_URI"], "/params.php/a/b.jpg?x=1");
    assert_eq!(env["SCRIPT_FILENAME"], format!("{root}/params.php"));
}

#[tokio::test]
async fn headers_arrive_as_http_variables_and_basic_auth_fills_php_auth_user() {
    let gw = TestGateway::start().await;
    let reply = gw
        .send(
            request("GET", "t1.example", "/params.php")
                .header("user-agent", "e2e/1")
                .header("x-custom-thing", "v")
                // user:p@ss
                .header("authorization", "Basic dXNlcjpwQHNz")
                .body(Empty::new())
                .unwrap(),
        )
        .await;
    let env = reply.json();
    assert_eq!(env["HTTP_USER_AGENT"], "e2e/1");
    assert_eq!(env["HTTP_X_CUSTOM_THING"], "v");
    assert_eq!(env["HTTP_AUTHORIZATION"], "Basic dXNlcjpwQHNz");
    assert_eq!(env["php_auth_user"], "user");
    assert_eq!(env["PHP_AUTH_PW"], "p@ss");
}

#[tokio::test]
async fn repeated_headers_are_joined_with_commas_and_cookies_with_semicolons() {
    let gw = TestGateway::start().await;
    let reply = gw
        .send(
            request("GET", "t1.example", "/params.php")
                .header("x-multi", "one")
                .header("x-multi", "two")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(Empty::new())
                .unwrap(),
        )
        .await;
    let env = reply.json();
    assert_eq!(env["HTTP_X_MULTI"], "one, two");
    assert_eq!(env["HTTP_COOKIE"], "a=1; b=2");
    assert_eq!(env["_COOKIE"]["a"], "1");
    assert_eq!(env["_COOKIE"]["b"], "2");
}

#[tokio::test]
async fn tenant_params_are_sent_and_win_over_defaults() {
    let gw = TestGateway::start().await;
    let t1 = gw.get("t1.example", "/params.php").await.json();
    assert_eq!(t1["DBHOST"], "db1", "the tenant's own value wins");
    assert_eq!(t1["APP_ENV"], "test", "defaults fill the rest");
    assert_eq!(t1["DBPASS"], "secret1");

    let t2 = gw.get("t2.example", "/params.php").await.json();
    assert_eq!(t2["DBHOST"], "shared-db", "the default when not overridden");
    assert_eq!(t2["DBPASS"], "secret2");
    assert_eq!(t2["APP_ENV"], "test");
}

#[tokio::test]
async fn a_40_kib_query_string_arrives_intact() {
    let gw = TestGateway::start().await;
    let long = "q".repeat(40 * 1024);
    let target = format!("/params.php?only=QUERY_STRING&long={long}");
    let reply = gw.get("t1.example", &target).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), format!("only=QUERY_STRING&long={long}"));
}

#[tokio::test]
async fn a_70_kib_uri_is_414() {
    let gw = TestGateway::start().await;
    let target = format!("/params.php?long={}", "u".repeat(70 * 1024));
    let reply = gw.raw_get("t1.example", &target).await;
    assert_eq!(reply.status, 414, "{}", reply.head);
}

#[tokio::test]
async fn a_70_kib_header_is_431_never_502() {
    let gw = TestGateway::start().await;
    let raw = format!(
        "GET /params.php HTTP/1.1\r\nHost: t1.example\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "h".repeat(70 * 1024)
    );
    let reply = gw.raw(raw.as_bytes()).await;
    assert_eq!(reply.status, 431, "{}", reply.head);

    // Headers that fit one by one but not together (the limit is 64 KiB).
    let mut raw = String::from("GET /params.php HTTP/1.1\r\nHost: t1.example\r\n");
    for i in 0..3 {
        raw.push_str(&format!("X-Part-{i}: {}\r\n", "p".repeat(30 * 1024)));
    }
    raw.push_str("Connection: close\r\n\r\n");
    let reply = gw.raw(raw.as_bytes()).await;
    assert_eq!(reply.status, 431, "{}", reply.head);
}

#[tokio::test]
async fn trusted_proxies_supply_the_client_address_and_scheme() {
    let gw = TestGateway::with(
        "trusted_proxies = [\"127.0.0.1\"]",
        support::multi_tenant::TENANTS,
    )
    .await;
    let env = forwarded(&gw).await;
    assert_eq!(env["REMOTE_ADDR"], "1.2.3.4");
    assert_eq!(env["HTTPS"], "on");
    assert_eq!(env["REQUEST_SCHEME"], "https");
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_change_nothing() {
    let gw = TestGateway::start().await;
    let env = forwarded(&gw).await;
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert!(env.get("HTTPS").is_none(), "{:?}", env.get("HTTPS"));
    assert_eq!(env["REQUEST_SCHEME"], "http");
    assert_eq!(env["SERVER_PORT"], gw.addr.port().to_string());
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "1.2.3.4, 127.0.0.1");
    assert_eq!(env["HTTP_X_FORWARDED_PROTO"], "https");
}

async fn forwarded(gw: &TestGateway) -> Value {
    gw.send(
        request("GET", "t1.example", "/params.php")
            .header("x-forwarded-for", "1.2.3.4, 127.0.0.1")
            .header("x-forwarded-proto", "https")
            .body(Empty::new())
            .unwrap(),
    )
    .await
    .json()
}
