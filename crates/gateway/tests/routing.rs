//! Which tenant serves a request: the Host header (or an absolute-form target) against
//! the tenants' exact and wildcard hosts, and what PHP is told about the host.

mod support;

use http_body_util::Empty;
use support::multi_tenant::{request, TestGateway};

/// The `TENANT_ID` param PHP received for `GET /params.php` on `host`, or the status when
/// the request was not served by PHP.
async fn tenant_for(gw: &TestGateway, host: &str) -> Result<String, u16> {
    let reply = gw.get(host, "/params.php?only=TENANT_ID").await;
    match reply.status.as_u16() {
        200 => Ok(reply.text()),
        status => Err(status),
    }
}

#[tokio::test]
async fn host_matching_ignores_case_port_and_one_trailing_dot() {
    let gw = TestGateway::start().await;
    for host in [
        "t1.example",
        "T1.EXAMPLE",
        "t1.example:8080",
        "t1.example.",
        "T1.Example.:443",
        // Configured in mixed case.
        "mixed.case.example",
    ] {
        assert_eq!(tenant_for(&gw, host).await, Ok("t1".into()), "Host: {host}");
    }
    assert_eq!(tenant_for(&gw, "t2.example").await, Ok("t2".into()));
}

#[tokio::test]
async fn an_exact_host_beats_a_wildcard_over_it() {
    let gw = TestGateway::start().await;
    assert_eq!(tenant_for(&gw, "www.example.org").await, Ok("exact".into()));
    assert_eq!(
        tenant_for(&gw, "WWW.example.org:80").await,
        Ok("exact".into())
    );
    assert_eq!(tenant_for(&gw, "www2.example.org").await, Ok("wild".into()));
}

#[tokio::test]
async fn a_wildcard_matches_subdomains_at_any_depth_and_nothing_else() {
    let gw = TestGateway::start().await;
    assert_eq!(tenant_for(&gw, "a.example.org").await, Ok("wild".into()));
    assert_eq!(tenant_for(&gw, "a.b.example.org").await, Ok("wild".into()));
    for host in [
        "example.org",
        "example.org.",
        "example.org.evil.com",
        "evilexample.org",
        "a.evilexample.org",
        "example.org.example",
    ] {
        assert_eq!(tenant_for(&gw, host).await, Err(404), "Host: {host}");
    }
}

#[tokio::test]
async fn an_absolute_form_target_routes_by_its_authority_not_the_host_header() {
    let gw = TestGateway::start().await;
    let reply = gw
        .send(
            request("GET", "t2.example", "http://t1.example/params.php")
                .body(Empty::new())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let env = reply.json();
    assert_eq!(env["TENANT_ID"], "t1");
    assert_eq!(env["HTTP_HOST"], "t1.example");
    assert_eq!(env["SERVER_NAME"], "t1.example");
    assert_eq!(env["REQUEST_URI"], "/params.php");
}

#[tokio::test]
async fn http_host_is_the_authority_as_sent_and_server_name_has_no_port() {
    let gw = TestGateway::start().await;
    let env = gw.get("t1.example:8080", "/params.php").await.json();
    assert_eq!(env["HTTP_HOST"], "t1.example:8080");
    assert_eq!(env["SERVER_NAME"], "t1.example");

    let env = gw.get("t2.example", "/params.php").await.json();
    assert_eq!(env["HTTP_HOST"], "t2.example");
    assert_eq!(env["SERVER_NAME"], "t2.example");
}

#[tokio::test]
async fn an_unknown_host_gets_a_plain_404_naming_no_tenant() {
    let gw = TestGateway::start().await;
    let reply = gw.get("unknown-site.test", "/params.php").await;
    assert_eq!(reply.status, 404);
    assert_404_page_reveals_nothing(&reply.text(), "unknown-site.test");

    // A malformed Host is refused the same plain way.
    let reply = gw.raw_get("bad host", "/params.php").await;
    assert!(matches!(reply.status, 400 | 404), "{}", reply.head);
    assert!(!reply.text().contains("t1"), "{}", reply.text());
}

#[tokio::test]
async fn a_missing_host_gets_a_plain_404_naming_no_tenant() {
    let gw = TestGateway::start().await;
    for raw in [
        "GET /params.php HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /params.php HTTP/1.0\r\n\r\n",
    ] {
        let reply = gw.raw(raw.as_bytes()).await;
        assert_eq!(reply.status, 404, "{raw:?} -> {}", reply.head);
        assert_404_page_reveals_nothing(&reply.text(), "127.0.0.1");
    }
}

fn assert_404_page_reveals_nothing(page: &str, asked_for: &str) {
    assert!(page.contains("404"), "{page}");
    for secret in [
        asked_for, "t1", "t2", "wild", "exact", "example", "secret", "tenant", "php",
    ] {
        assert!(
            !page.to_ascii_lowercase().contains(secret),
            "404 page mentions {secret:?}: {page}"
        );
    }
}

// Which script a path runs: nginx's `try_files $uri $uri/ /index.php?$args` with
// `fastcgi_split_path_info`.

#[tokio::test]
async fn an_existing_script_runs_itself() {
    let gw = TestGateway::start().await;
    let report = gw.get("t1.example", "/file.php?x=1").await.json();
    assert_eq!(report["marker"], "file.php");
    assert_eq!(report["SCRIPT_NAME"], "/file.php");
    assert_eq!(report["PATH_INFO"], serde_json::Value::Null);
    assert_eq!(report["QUERY_STRING"], "x=1");
}

#[tokio::test]
async fn a_directory_with_its_slash_runs_its_index() {
    let gw = TestGateway::start().await;
    let report = gw.get("t1.example", "/sub/?y=2").await.json();
    assert_eq!(report["marker"], "sub");
    assert_eq!(report["SCRIPT_NAME"], "/sub/index.php");
    assert_eq!(report["REQUEST_URI"], "/sub/?y=2");
    assert_eq!(
        report["SCRIPT_FILENAME"],
        format!("{}/sub/index.php", fpm_harness::fixtures_dir().display())
    );
}

#[tokio::test]
async fn a_directory_without_its_slash_redirects_keeping_the_query() {
    let gw = TestGateway::start().await;
    let reply = gw.get("t1.example", "/sub").await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("/sub/"));

    let reply = gw.get("t1.example", "/sub?a=1&b=2").await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("/sub/?a=1&b=2"));
}

#[tokio::test]
async fn text_after_a_script_becomes_path_info() {
    let gw = TestGateway::start().await;
    let report = gw.get("t1.example", "/file.php/1/x.jpg").await.json();
    assert_eq!(report["marker"], "file.php");
    assert_eq!(report["SCRIPT_NAME"], "/file.php");
    assert_eq!(report["PATH_INFO"], "/1/x.jpg");
    assert_eq!(report["REQUEST_URI"], "/file.php/1/x.jpg");
}

#[tokio::test]
async fn an_unknown_path_goes_to_the_front_controller_with_the_original_uri() {
    let gw = TestGateway::start().await;
    let report = gw.get("t1.example", "/some/route?x=1").await.json();
    assert_eq!(report["marker"], "index");
    assert_eq!(report["SCRIPT_NAME"], "/index.php");
    assert_eq!(report["REQUEST_URI"], "/some/route?x=1");
    assert_eq!(report["QUERY_STRING"], "x=1");
    assert_eq!(report["PATH_INFO"], serde_json::Value::Null);
}
