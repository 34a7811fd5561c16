//! Attacks on the gateway, one test each: a client trying to set or shadow a tenant's
//! params or PHP's own settings through headers, host confusion, path traversal,
//! executing uploads, the PHP-FPM `%0a` bug, dotfiles and PHP source.

mod support;

use http_body_util::Empty;
use support::multi_tenant::{request, TestGateway};
use support::Reply;

/// `GET /params.php` on `t1.example` with extra headers, parsed.
async fn params_with_headers(gw: &TestGateway, headers: &[(&str, &str)]) -> serde_json::Value {
    let mut req = request("GET", "t1.example", "/params.php");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let reply = gw.send(req.body(Empty::new()).unwrap()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn a_client_header_cannot_override_a_tenant_param() {
    let gw = TestGateway::start().await;
    let env = params_with_headers(
        &gw,
        &[
            ("dbpass", "from-client"),
            ("x-dbpass", "from-client"),
            ("dbhost", "evil-db"),
        ],
    )
    .await;
    assert_eq!(env["DBPASS"], "secret1");
    assert_eq!(env["DBHOST"], "db1");
    // The headers themselves pass, under their own names.
    assert_eq!(env["HTTP_DBPASS"], "from-client");
    assert_eq!(env["HTTP_X_DBPASS"], "from-client");
}

#[tokio::test]
async fn a_header_spelled_like_an_http_variable_cannot_shadow_anything() {
    let gw = TestGateway::start().await;
    let env = params_with_headers(
        &gw,
        &[
            // With `_` it would map onto HTTP_DBPASS / HTTP_USER_AGENT: dropped.
            ("http_dbpass", "evil"),
            ("http_user_agent", "evil"),
            ("user-agent", "real"),
            // With `-` it gets a second prefix, shadowing nothing.
            ("http-dbpass", "evil"),
        ],
    )
    .await;
    assert_eq!(env["DBPASS"], "secret1");
    assert_eq!(env["HTTP_USER_AGENT"], "real");
    assert!(env.get("HTTP_DBPASS").is_none(), "{:?}", env["HTTP_DBPASS"]);
    assert_eq!(env["HTTP_HTTP_DBPASS"], "evil");
}

#[tokio::test]
async fn a_proxy_header_never_becomes_http_proxy() {
    let gw = TestGateway::start().await;
    let env = params_with_headers(&gw, &[("proxy", "http://evil.example:3128")]).await;
    assert!(
        env.get("HTTP_PROXY").is_none(),
        "httpoxy: {:?}",
        env["HTTP_PROXY"]
    );
    let only = gw
        .send(
            request("GET", "t1.example", "/params.php?only=HTTP_PROXY")
                .header("proxy", "http://evil.example:3128")
                .body(Empty::new())
                .unwrap(),
        )
        .await;
    assert_eq!(only.status, 404, "{}", only.text());
}

#[tokio::test]
async fn a_header_with_an_underscore_is_dropped_so_it_cannot_shadow_its_dash_twin() {
    let gw = TestGateway::start().await;
    // PHP-FPM keeps the last value of a name: the evil one comes last.
    let env = params_with_headers(&gw, &[("x-foo", "good"), ("x_foo", "evil")]).await;
    assert_eq!(env["HTTP_X_FOO"], "good");
    let env = params_with_headers(&gw, &[("x_foo", "evil"), ("x-foo", "good")]).await;
    assert_eq!(env["HTTP_X_FOO"], "good");
}

#[tokio::test]
async fn a_php_value_header_never_sets_php_ini() {
    let gw = TestGateway::start().await;
    let evil = "auto_prepend_file=/etc/passwd";
    let reply = gw
        .send(
            request("GET", "t1.example", "/params.php")
                .header("php_value", evil)
                .header("php-value", evil)
                .header("php_admin_value", evil)
                .header("php-admin-value", evil)
                .body(Empty::new())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        !reply.text().contains("root:"),
        "auto_prepend_file took effect"
    );
    let env = reply.json();
    assert!(env.get("PHP_VALUE").is_none());
    assert!(env.get("PHP_ADMIN_VALUE").is_none());
    assert!(env.get("HTTP_PHP_VALUE_").is_none());
    // The dashed spelling passes as an ordinary header, which PHP-FPM ignores.
    assert_eq!(env["HTTP_PHP_VALUE"], evil);
}

#[tokio::test]
async fn an_absolute_form_target_and_a_different_host_header_are_served_by_the_target() {
    let gw = TestGateway::start().await;
    for _ in 0..3 {
        let reply = gw
            .send(
                request("GET", "t1.example", "http://t2.example/params.php")
                    .body(Empty::new())
                    .unwrap(),
            )
            .await;
        let env = reply.json();
        // The tenant, its secrets and the host PHP is told all come from the target.
        assert_eq!(env["TENANT_ID"], "t2");
        assert_eq!(env["DBPASS"], "secret2");
        assert_eq!(env["HTTP_HOST"], "t2.example");
        assert_eq!(env["SERVER_NAME"], "t2.example");
    }
}

#[tokio::test]
async fn path_traversal_is_refused_in_every_spelling() {
    let gw = TestGateway::start().await;
    for target in [
        "/../etc/passwd",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
        "/static/..%2f..%2f..%2fetc/passwd",
        "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/static/%2e%2e%5c",
        "/static/%2e%2e%5c%2e%2e%5c%2e%2e%5cetc%5cpasswd",
        "/static/..\\..\\..\\etc\\passwd",
        "/static\\..\\..\\etc\\passwd",
        "/static/hello.txt%00",
        "/static/hello.txt%00.php",
        "/../etc/passwd%00.php",
        "/file.php/../../../etc/passwd",
    ] {
        let reply = gw.raw_get("t1.example", target).await;
        assert!(
            matches!(reply.status, 400 | 403 | 404),
            "{target}: {}",
            reply.head
        );
        assert!(!reply.text().contains("root:"), "{target} escaped the root");
    }
}

#[tokio::test]
async fn double_encoded_dots_are_decoded_once_only() {
    let gw = TestGateway::start().await;
    for target in [
        "/%252e%252e/%252e%252e/etc/passwd",
        "/static/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    ] {
        let reply = gw.raw_get("t1.example", target).await;
        assert!(!reply.text().contains("root:"), "{target} escaped the root");
    }
    // Decoded twice this would be `/static/hello.txt`; decoded once it is a literal
    // `%2e%2e` directory that does not exist, so the front controller answers.
    let reply = gw
        .get("t1.example", "/sub/%252e%252e/static/hello.txt")
        .await;
    assert_ne!(reply.text(), "hello static\n", "decoded twice");
    assert!(
        matches!(reply.status.as_u16(), 400 | 403 | 404) || reply.json()["marker"] == "index",
        "{} {}",
        reply.status,
        reply.text()
    );
}

#[tokio::test]
async fn an_upload_is_never_executed_through_a_fake_script_path() {
    let gw = TestGateway::start().await;
    for target in [
        "/uploads/evil.jpg/x.php",
        "/uploads/evil.jpg/.php",
        "/uploads/evil.jpg/x.php/y",
        "/uploads/evil.jpg%2fx.php",
        "/uploads/evil.jpg%00.php",
        "/uploads/evil.jpg%20.php",
        "/uploads/evil.jpg/index.php",
    ] {
        let reply = gw.raw_get("t1.example", target).await;
        assert!(
            !reply.text().contains("PWNED"),
            "{target} ran evil.jpg: {} {}",
            reply.head,
            reply.text()
        );
    }
    // Asked for by its own name it is a file, sent as is and never run.
    let reply = gw.get("t1.example", "/uploads/evil.jpg").await;
    if reply.status == 200 {
        assert!(reply.text().starts_with("<?php"), "{}", reply.text());
        assert_ne!(reply.header("content-type"), Some("text/html"));
    }
}

#[tokio::test]
async fn a_newline_in_the_path_is_a_bad_request() {
    // CVE-2019-11043: `%0a` broke PHP-FPM's PATH_INFO split behind nginx.
    let gw = TestGateway::start().await;
    for target in [
        "/index.php/PHP%0Ais_the_shittiest_lang.php?",
        "/params.php%0a",
        "/file.php/%0a.php",
        "/static/hello.txt%0d%0aX-Injected:%201",
    ] {
        let reply = gw.raw_get("t1.example", target).await;
        assert_eq!(reply.status, 400, "{target}: {}", reply.head);
        assert!(reply.header("x-injected").is_none());
    }
}

#[tokio::test]
async fn dotfiles_are_never_served() {
    let gw = TestGateway::start().await;
    for target in [
        "/.env",
        "/.git/config",
        "/.git/",
        "/.git",
        "/static/.hidden",
        "/%2eenv",
        "/static/../.env",
        "/sub/%2e%2e/.git/config",
    ] {
        let reply = gw.raw_get("t1.example", target).await;
        assert!(
            matches!(reply.status, 403 | 404),
            "{target}: {}",
            reply.head
        );
        let text = reply.text();
        assert!(!text.contains("do-not-serve"), "{target} served .env");
        assert!(
            !text.contains("repositoryformatversion"),
            "{target} served .git/config"
        );
    }
}

#[tokio::test]
async fn php_scripts_run_and_their_source_is_never_served() {
    let gw = TestGateway::start().await;
    let reply = gw.get("t1.example", "/params.php").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_not_source(&reply);
    reply.json();

    for target in ["/index.PHP", "/params.PHP", "/params.Php?x=1"] {
        let reply = gw.get("t1.example", target).await;
        assert_not_source(&reply);
        if reply.status == 200 {
            // Run (on a case-sensitive filesystem the front controller runs instead).
            reply.json();
        } else {
            assert!(matches!(reply.status.as_u16(), 403 | 404), "{target}");
        }
    }
}

fn assert_not_source(reply: &Reply) {
    let text = reply.text();
    assert!(
        !text.contains("<?php") && !text.contains("json_encode"),
        "PHP source served: {text}"
    );
}

#[tokio::test]
async fn two_host_headers_are_a_bad_request() {
    // RFC 9112 §3.2: a front proxy may route by one and the gateway by the other.
    let gw = TestGateway::start().await;
    for hosts in [
        "Host: t1.example\r\nHost: t2.example",
        "Host: t2.example\r\nHost: t1.example",
        "Host: t1.example\r\nHost: t1.example",
    ] {
        let raw = format!("GET /params.php HTTP/1.1\r\n{hosts}\r\nConnection: close\r\n\r\n");
        let reply = gw.raw(raw.as_bytes()).await;
        assert_eq!(reply.status, 400, "{hosts:?}: {}", reply.head);
        assert!(!reply.text().contains("secret"));
    }
}

#[tokio::test]
async fn a_directory_redirect_never_points_off_site() {
    let gw = TestGateway::start().await;
    for (target, location) in [
        ("//sub", "/sub/"),
        ("///sub?next=//evil.example", "/sub/?next=//evil.example"),
        ("/./sub", "/sub/"),
        ("/static/../sub", "/sub/"),
        ("/%2fsub", "/sub/"),
    ] {
        let reply = gw.raw_get("t1.example", target).await;
        assert_eq!(reply.status, 301, "{target}: {}", reply.head);
        assert_eq!(reply.header("location"), Some(location), "{target}");
    }
}
