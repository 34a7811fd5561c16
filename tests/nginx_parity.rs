//! Parity with nginx: the same requests, sent once through the gateway and once through
//! nginx configured the usual way for PHP (`try_files`, `fastcgi_split_path_info`, the
//! distribution's `fastcgi_params`, the tenant's params as `fastcgi_param`), both in
//! front of ONE PHP-FPM, must leave PHP with the same `$_SERVER` (as dumped by
//! `params.php`), apart from values that differ by nature (ports, times) and a short
//! allow-list of deliberate differences, each justified by the gateway's spec.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fpm_harness::{fixtures_dir, Fpm, FpmConfig, Nginx};
use gateway::config::Config;
use gateway::Gateway;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

const HOST: &str = "parity.test";

/// The tenant's params (and the shared default), given to the gateway in its config and
/// to nginx as `fastcgi_param`.
const TENANT_PARAMS: [(&str, &str); 7] = [
    ("APP_ENV", "parity"),
    ("DBHOST", "10.200.16.27"),
    ("DBNAME", "moodle_parity"),
    ("DBUSER", "moodle"),
    ("DBPASS", "parity-secret"),
    ("WWWROOT", "https://parity.test"),
    ("DATAROOT", "/moodledata/parity"),
];

/// Bound on one request to either server.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// `text` as a TOML literal string.
fn toml_literal(text: &str) -> String {
    assert!(!text.contains(['\'', '\n']), "{text:?} needs escaping");
    format!("'{text}'")
}

fn gateway_config(upstream: &str) -> Config {
    let root = toml_literal(&fixtures_dir().display().to_string());
    let upstream = toml_literal(upstream);
    let params: Vec<String> = TENANT_PARAMS[1..]
        .iter()
        .map(|(name, value)| format!("{name} = \"{value}\""))
        .collect();
    let (default_name, default_value) = TENANT_PARAMS[0];
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [fastcgi]\nupstream = {upstream}\nroot = {root}\n\n\
         [defaults.params]\n{default_name} = \"{default_value}\"\n\n\
         [tenants.parity]\nhosts = [\"{HOST}\"]\nparams = {{ {} }}\n",
        params.join(", ")
    );
    Config::parse(&text, "parity.toml", fixtures_dir()).expect("the parity config is valid")
}

/// The usual nginx set-up for a PHP front controller, with the tenant's params.
fn nginx_config(upstream: &str) -> String {
    let params: String = TENANT_PARAMS
        .iter()
        .map(|(name, value)| format!("        fastcgi_param {name} \"{value}\";\n"))
        .collect();
    format!(
        r#"server {{
    listen 127.0.0.1:{{{{PORT}}}};
    server_name {HOST};
    root {{{{FIXTURES}}}};
    index index.php;
    location / {{
        try_files $uri $uri/ /index.php?$args;
    }}
    location ~ [^/]\.php(/|$) {{
        fastcgi_split_path_info ^(.+?\.php)(/.*)$;
        fastcgi_param HTTP_PROXY "";
        include {{{{FASTCGI_PARAMS}}}};
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        fastcgi_param PATH_INFO $fastcgi_path_info;
{params}        fastcgi_pass {upstream};
    }}
}}
"#
    )
}

/// One request of the comparison.
struct Case {
    name: &'static str,
    method: Method,
    path_and_query: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static str,
    /// What PHP must have seen (JSON pointer, value): proof the request got through as
    /// meant, so two equally wrong answers cannot pass as parity.
    expect: Vec<(&'static str, &'static str)>,
}

fn cases() -> Vec<Case> {
    let get = |name, path_and_query, headers, expect| Case {
        name,
        method: Method::GET,
        path_and_query,
        headers,
        body: "",
        expect,
    };
    vec![
        get(
            "query",
            "/params.php?a=1&b=two%20words&c[]=x",
            vec![],
            vec![("/_GET/b", "two words"), ("/_GET/c/0", "x")],
        ),
        Case {
            name: "form post",
            method: Method::POST,
            path_and_query: "/params.php?from=query",
            headers: vec![("content-type", "application/x-www-form-urlencoded")],
            body: "x=1&y=hello+world&z=%C3%A9",
            expect: vec![
                ("/_POST/y", "hello world"),
                ("/_POST/z", "\u{e9}"),
                ("/CONTENT_LENGTH", "26"),
                ("/_GET/from", "query"),
            ],
        },
        get(
            "path info",
            "/params.php/extra/path.txt?q=1",
            vec![],
            vec![
                ("/SCRIPT_NAME", "/params.php"),
                ("/PATH_INFO", "/extra/path.txt"),
                ("/PHP_SELF", "/params.php/extra/path.txt"),
            ],
        ),
        get(
            "custom headers",
            "/params.php",
            vec![
                ("user-agent", "parity-client/1.0"),
                ("accept-language", "ca-ES,ca;q=0.9"),
                ("x-custom", "custom value"),
                ("x-multi", "first"),
                ("x-multi", "second"),
                // Underscored names are dropped by both (nginx: underscores_in_headers off).
                ("x_under", "dropped"),
                // httpoxy: must never become the HTTP_PROXY PHP's HTTP clients obey.
                ("proxy", "http://evil.example:3128"),
            ],
            vec![
                ("/HTTP_USER_AGENT", "parity-client/1.0"),
                ("/HTTP_X_CUSTOM", "custom value"),
            ],
        ),
        get(
            "cookies",
            "/params.php",
            vec![("cookie", "session=abc123; theme=dark")],
            vec![("/_COOKIE/session", "abc123"), ("/_COOKIE/theme", "dark")],
        ),
        get(
            "basic auth",
            "/params.php",
            // alice:s3cret
            vec![("authorization", "Basic YWxpY2U6czNjcmV0")],
            vec![("/PHP_AUTH_USER", "alice"), ("/PHP_AUTH_PW", "s3cret")],
        ),
    ]
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Sends `case` to the server on `addr` and returns the `$_SERVER` PHP dumped.
async fn fetch(client: &HttpClient, addr: SocketAddr, case: &Case) -> Map<String, Value> {
    let mut req = Request::builder()
        .method(case.method.clone())
        .uri(format!("http://{addr}{}", case.path_and_query))
        // As a browser sends it: with the port.
        .header(http::header::HOST, format!("{HOST}:{}", addr.port()));
    for (name, value) in &case.headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from_static(case.body.as_bytes())))
        .expect("valid request");
    let what = format!("{} to {addr}", case.name);
    let exchange = async {
        let response = client.request(req).await.expect(&what);
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect(&what)
            .to_bytes();
        (status, body)
    };
    let (status, body) = tokio::time::timeout(REQUEST_LIMIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{what} took over {REQUEST_LIMIT:?}"));
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::OK, "{what}: {text}");
    match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => map,
        _ => panic!("{what}: params.php did not answer a JSON object: {text}"),
    }
}

/// Drops what differs between any two requests by nature: times, and ports (each server
/// listens on its own, each connection has its own).
fn without_incidental(mut server: Map<String, Value>) -> Map<String, Value> {
    for name in [
        "REQUEST_TIME",
        "REQUEST_TIME_FLOAT",
        "REMOTE_PORT",
        "SERVER_PORT",
    ] {
        server.remove(name);
    }
    server
}

/// Checks a variable that differs between the two servers against the allow-list.
/// Each entry says why the difference is deliberate.
fn allowed_difference(
    case: &Case,
    name: &str,
    gateway: Option<&Value>,
    nginx: Option<&Value>,
) -> Result<(), String> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let (gw, ngx) = (text(gateway), text(nginx));
    let ok = match name {
        // Each names itself. The gateway's `cgi::params::SERVER_SOFTWARE` carries no
        // version, so it tells scanners nothing.
        "SERVER_SOFTWARE" => {
            gw.as_deref() == Some("fcgi-gateway")
                && ngx.as_deref().is_some_and(|v| v.starts_with("nginx/"))
        }
        // The gateway passes the authority as the client sent it, port included
        // (`CgiContext::authority`); Debian's `fastcgi_params` overrides HTTP_HOST with
        // `$host`, which drops the port. Same host either way; the ports differ anyway.
        "HTTP_HOST" => {
            let host = |v: &str| v.split(':').next().unwrap_or("").to_owned();
            gw.as_deref().is_some_and(|v| v.contains(':'))
                && gw.as_deref().map(host).as_deref() == Some(HOST)
                && ngx.as_deref().map(host).as_deref() == Some(HOST)
        }
        // The gateway sends PATH_INFO only when the URL has a path after the script
        // (`ScriptVars::path_info`: "what followed the script in the URL, if anything"),
        // as Apache does; the nginx recipe always sends `$fastcgi_path_info`, "" when empty.
        "PATH_INFO" => gw.is_none() && ngx.as_deref() == Some(""),
        // RFC 3875 §4.1.6: PATH_TRANSLATED goes with a PATH_INFO (document root + path
        // info), which the gateway sends and the nginx recipe leaves out.
        "PATH_TRANSLATED" => {
            case.name == "path info"
                && gw.as_deref() == Some(&format!("{}/extra/path.txt", fixtures_dir().display()))
                && ngx.is_none()
        }
        // nginx's `$remote_user` is the user name of an unverified `Authorization: Basic`
        // header (and "" without one). The gateway authenticates no one, so it never
        // claims a REMOTE_USER an application could mistake for a web-server login
        // (`cgi::params` module docs); PHP still decodes PHP_AUTH_USER/PHP_AUTH_PW from
        // HTTP_AUTHORIZATION, which both pass.
        "REMOTE_USER" => {
            let user = if case.name == "basic auth" {
                "alice"
            } else {
                ""
            };
            gw.is_none() && ngx.as_deref() == Some(user)
        }
        // nginx 1.22 and older pass a repeated header as repeated params, of which PHP
        // keeps the last; the gateway joins them with ", " (RFC 9110 §5.3), as nginx does
        // since 1.23.
        "HTTP_X_MULTI" => {
            case.name == "custom headers"
                && gw.as_deref() == Some("first, second")
                && ngx.as_deref() == Some("second")
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{}: {name}: gateway {gateway:?}, nginx {nginx:?}",
            case.name
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_sees_the_same_server_variables_behind_the_gateway_as_behind_nginx() {
    let fpm = Fpm::start(FpmConfig::new().workers(2))
        .expect("php-fpm starts (is php-fpm installed? see scripts/)");
    let upstream = fpm.address().to_upstream_string();
    let nginx = Nginx::start(&nginx_config(&upstream))
        .expect("nginx starts (see scripts/ensure-php-fpm.sh)");
    let nginx_addr = SocketAddr::from(([127, 0, 0, 1], nginx.port()));

    let gateway = Gateway::bind(gateway_config(&upstream))
        .await
        .expect("gateway binds port 0");
    let gateway_addr = gateway.local_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(gateway.serve(async {
        let _ = stopped.await;
    }));

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let (mut problems, mut allowed) = (Vec::new(), Vec::new());
    for case in cases() {
        let behind_gateway = without_incidental(fetch(&client, gateway_addr, &case).await);
        let behind_nginx = without_incidental(fetch(&client, nginx_addr, &case).await);
        // A sanity check that the comparison compares something: the tenant's params
        // reached PHP through both.
        let seen = Value::Object(behind_gateway.clone());
        for (name, value) in TENANT_PARAMS {
            assert_eq!(seen.get(name), Some(&Value::from(value)), "{name}");
        }
        // httpoxy: neither lets a `Proxy:` header become HTTP_PROXY (the gateway drops
        // the header; nginx sends HTTP_PROXY "" and PHP ignores that param anyway).
        assert_eq!(seen.get("HTTP_PROXY"), None, "{}", case.name);
        assert_eq!(behind_nginx.get("HTTP_PROXY"), None, "{}", case.name);
        for (pointer, value) in &case.expect {
            assert_eq!(
                seen.pointer(pointer),
                Some(&Value::from(*value)),
                "{}: {pointer}",
                case.name
            );
        }
        let names: BTreeSet<&String> = behind_gateway.keys().chain(behind_nginx.keys()).collect();
        for name in names {
            let (gw, ngx) = (behind_gateway.get(name), behind_nginx.get(name));
            if gw != ngx {
                match allowed_difference(&case, name, gw, ngx) {
                    Ok(()) => allowed.push(format!("{}: {name}", case.name)),
                    Err(problem) => problems.push(problem),
                }
            }
        }
    }
    eprintln!("allowed differences:\n  {}", allowed.join("\n  "));
    assert!(
        problems.is_empty(),
        "PHP sees differences not on the allow-list:\n{}",
        problems.join("\n")
    );

    let _ = stop.send(());
    let _ = tokio::time::timeout(REQUEST_LIMIT, serving).await;
    drop(nginx);
    drop(fpm);
}
