//! The operator's dashboard in a real browser: headless Chromium (Debian's `chromium`)
//! loads the admin listener's page in front of a gateway with a real PHP-FPM, signs in,
//! reads the tenants, suspends and resumes one (checked on the main listener), and opens
//! a tenant; every request the page made is recorded and checked. Screenshots go to
//! `target/test-artifacts/`. Skipped, with a note, where Chromium is not installed
//! (`scripts/ensure-php-fpm.sh --with-chromium` installs it).
//!
//! Also here: the Grafana dashboard in `deploy/grafana/` queries only metrics that
//! `/metrics` exposes.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use fpm_harness::{fixtures_dir, Fpm, FpmConfig, Listen};
use gateway::config::Config;
use http::Request;
use http_body_util::Full;

use support::chromium::{self, Chromium, Page};
use support::multi_tenant::send_to as send;
use support::{prometheus, start_fpm, Reply, Served};

/// The admin token of every test gateway.
const TOKEN: &str = "dash-token-4c1e77";
/// A param value that must never reach the page.
const SECRET: &str = "secret-shop-91f2";
/// A param value that would run script if the page parsed it as markup.
const HOSTILE: &str = r#"<img src=x onerror="window.__owned=1"><b>bold</b>"#;

/// The config, `{upstream}` and `{root}` filled in.
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
admin_token = "dash-token-4c1e77"

[fastcgi]
upstream = "{upstream}"
root = "{root}"
max_connections = 4

[usage]
database = "usage.db"
flush_interval = "200ms"

[tenants.shop]
hosts = ["shop.example", "www.shop.example"]
params = { TENANT_ID = "shop", DBPASS = "secret-shop-91f2" }

[tenants.blog]
hosts = ["blog.example"]
params = { TENANT_ID = "blog", MOTTO = '<img src=x onerror="window.__owned=1"><b>bold</b>' }
"#;

/// PHP-FPM and the gateway, serving until dropped.
struct Harness {
    addr: SocketAddr,
    admin: SocketAddr,
    served: Served,
    _dir: tempfile::TempDir,
    _fpm: Fpm,
}

impl Harness {
    async fn start() -> Harness {
        let fpm = start_fpm(FpmConfig::new().listen(Listen::Unix).workers(2));
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tenants.toml");
        let text = CONFIG
            .replace("{upstream}", &fpm.address().to_upstream_string())
            .replace("{root}", &fixtures_dir().display().to_string());
        std::fs::write(&path, text).expect("write the config");
        let config = Config::load(&path).unwrap_or_else(|err| panic!("test config: {err}"));
        let served = Served::bind(config).await;
        Harness {
            addr: served.addr,
            admin: served.admin.expect("the admin listener is configured"),
            served,
            _dir: dir,
            _fpm: fpm,
        }
    }

    /// `GET path` on the main listener with `Host: host`.
    async fn site(&self, host: &str, path: &str) -> Reply {
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .expect("request");
        send(self.addr, req).await
    }

    /// `GET path` on the admin listener, with the token when `token` is set.
    async fn admin_get(&self, path: &str, token: bool) -> Reply {
        let mut req = Request::get(path).header("host", "admin");
        if token {
            req = req.header("authorization", format!("Bearer {TOKEN}"));
        }
        send(
            self.admin,
            req.body(Full::new(Bytes::new())).expect("request"),
        )
        .await
    }

    /// Some PHP requests for both tenants, and a few 404s, for the sparklines and the
    /// hourly chart.
    async fn traffic(&self) {
        for _ in 0..5 {
            assert_eq!(self.site("shop.example", "/hello.php").await.status, 200);
        }
        for _ in 0..3 {
            assert_eq!(self.site("blog.example", "/hello.php").await.status, 200);
        }
        assert_eq!(
            self.site("blog.example", "/status.php?code=404")
                .await
                .status,
            404
        );
    }

    /// The rows of `GET /usage/hourly?{query}`, which must succeed.
    async fn hourly(&self, query: &str) -> Vec<serde_json::Value> {
        let reply = self
            .admin_get(&format!("/usage/hourly?{query}"), true)
            .await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.text());
        reply.json()["hours"].as_array().expect("hours").clone()
    }

    /// Records automatic-certificate states as the ACME manager would: the shop's main
    /// host valid for 60 more days, its `www` host failing.
    fn certificate_states(&self) {
        let tls = &self.served.state.tls;
        tls.update_status("shop.example", "shop", |cert| {
            cert.state = "valid";
            cert.not_after = Some(4_102_444_800);
        });
        tls.update_status("www.shop.example", "shop", |cert| {
            cert.state = "failed";
            cert.failures = 3;
            cert.last_error = Some("rateLimited".to_owned());
        });
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

/// Chromium, or `None` (after saying so) when it is not installed.
fn browser() -> Option<Chromium> {
    match chromium::find() {
        Some(binary) => Some(Chromium::launch(&binary)),
        None => {
            println!("skipped: chromium not installed (scripts/ensure-php-fpm.sh --with-chromium)");
            None
        }
    }
}

/// `target/test-artifacts/NAME`.
fn artifact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .join("test-artifacts")
        .join(name)
}

/// A JavaScript string literal of `text`.
fn js(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Signs in through the login form with `token`.
async fn sign_in(page: &mut Page, token: &str) {
    page.wait_for("!document.getElementById('login').hidden", "the login form")
        .await;
    page.eval(&format!(
        "document.getElementById('token').value = {}; \
         document.getElementById('sign-in').click(); true",
        js(token)
    ))
    .await;
}

/// The tenants listed in the overview, in order.
async fn listed_tenants(page: &mut Page) -> Vec<String> {
    let names = page
        .eval("[...document.querySelectorAll('#tenants tbody tr')].map(r => r.dataset.tenant)")
        .await;
    serde_json::from_value(names).expect("a list of names")
}

/// The state badge of `tenant`'s row ("serving" or "suspended").
fn state_of(tenant: &str) -> String {
    format!(
        "(document.querySelector('#tenants tr[data-tenant={}] td.state') || {{}}).textContent",
        js(tenant)
    )
}

/// Checks every request the page made: none carries `token` in its URL, and the API
/// calls carry it in `Authorization`. Returns the paths requested.
fn check_requests(page: &Page, token: &str) -> BTreeSet<String> {
    let requests = page.requests();
    assert!(!requests.is_empty(), "the page made requests");
    let mut paths = BTreeSet::new();
    for (url, headers) in &requests {
        assert!(!url.contains(token), "the token is in a URL: {url}");
        let path = url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path).to_owned();
        let is_page = path == "/" || path.starts_with("/ui/") || path == "/favicon.ico";
        if url.starts_with("http") && !is_page {
            assert_eq!(
                headers["Authorization"],
                format!("Bearer {token}"),
                "{url} without the token header"
            );
        }
        paths.insert(path);
    }
    paths
}

#[tokio::test]
async fn without_the_token_the_page_shows_the_login_form_and_no_data() {
    let Some(browser) = browser() else { return };
    let h = Harness::start().await;
    h.traffic().await;

    // The page itself needs no token, and says what it may load.
    let reply = h.admin_get("/", false).await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let csp = reply.header("content-security-policy").expect("a CSP");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    for asset in ["/ui/app.js", "/ui/app.css"] {
        assert_eq!(h.admin_get(asset, false).await.status, 200, "{asset}");
    }
    // The data still does.
    assert_eq!(h.admin_get("/tenants", false).await.status, 401);

    let mut page = browser.new_page().await;
    page.goto(&h.url("/")).await;
    let login = page
        .wait_for(
            "!document.getElementById('login').hidden && \
             document.getElementById('overview').hidden && \
             document.getElementById('tenant').hidden",
            "the login form alone",
        )
        .await;
    assert_eq!(login, true);
    let text = page.eval("document.body.innerText").await;
    let text = text.as_str().expect("text");
    for data in ["shop", "blog", "hello", "[fastcgi]"] {
        assert!(
            !text.contains(data),
            "{data:?} shown before signing in:\n{text}"
        );
    }
    assert_eq!(
        page.eval("document.querySelectorAll('#tenants tbody tr').length")
            .await,
        0
    );

    // A wrong token is refused, and shows nothing either.
    sign_in(&mut page, "not-the-token").await;
    let error = page
        .wait_for(
            "document.getElementById('login-error').textContent",
            "the refusal",
        )
        .await;
    assert!(error.as_str().unwrap().contains("refused"), "{error}");
    assert_eq!(
        page.eval("sessionStorage.length + document.querySelectorAll('#tenants tbody tr').length")
            .await,
        0
    );
    let paths = check_requests(&page, "not-the-token");
    assert!(
        paths.contains("/healthz"),
        "the sign-in was tried: {paths:?}"
    );
}

#[tokio::test]
async fn signed_in_the_operator_sees_the_tenants_and_suspends_and_resumes_one() {
    let Some(browser) = browser() else { return };
    let h = Harness::start().await;
    h.traffic().await;
    h.certificate_states();

    let mut page = browser.new_page().await;
    page.goto(&h.url("/")).await;
    sign_in(&mut page, TOKEN).await;
    page.wait_for(
        "document.querySelectorAll('#tenants tbody tr').length === 2",
        "the tenants",
    )
    .await;
    assert_eq!(listed_tenants(&mut page).await, ["blog", "shop"]);
    assert_eq!(
        page.eval("sessionStorage.getItem('gateway-admin-token')")
            .await,
        TOKEN,
        "the token is kept in sessionStorage"
    );
    let hosts = page
        .eval("document.querySelector('#tenants tr[data-tenant=shop] td.hosts').innerText")
        .await;
    let hosts = hosts.as_str().unwrap();
    assert!(hosts.contains("shop.example TLS valid"), "{hosts}");
    assert!(hosts.contains("www.shop.example TLS failed"), "{hosts}");
    // Last hour: a sparkline per tenant for requests and PHP-FPM time, and the errors.
    assert_eq!(
        page.eval("document.querySelectorAll('#tenants svg.spark polyline').length")
            .await,
        4
    );
    let errors = page
        .eval("document.querySelector('#tenants tr[data-tenant=blog] td.errors').textContent")
        .await;
    assert_eq!(errors, "0 5xx · 1 4xx");
    let rate = page
        .eval("document.querySelector('#tenants tr[data-tenant=shop] td.rate .value').textContent")
        .await;
    assert!(rate.as_str().unwrap().ends_with("/s"), "{rate}");
    assert_ne!(rate, "0/s", "the shop's requests show in the last point");
    // The PHP-FPM pool, up, and the reload status.
    let upstream = page
        .wait_for(
            "(document.querySelector('#upstreams tbody tr') || {}).innerText",
            "the upstream table",
        )
        .await;
    assert!(
        upstream.as_str().unwrap().contains("[fastcgi]"),
        "{upstream}"
    );
    assert!(upstream.as_str().unwrap().contains("up"), "{upstream}");
    let status = page
        .eval("document.getElementById('reload-status').textContent")
        .await;
    assert!(
        status.as_str().unwrap().contains("config in service"),
        "{status}"
    );

    // Suspend the shop from the page: the gateway answers 503 for its hosts.
    assert_eq!(state_of_now(&mut page, "shop").await, "serving");
    page.eval(
        "document.querySelector('button[data-action=suspend][data-tenant=shop]').click(); true",
    )
    .await;
    page.wait_for(
        &format!("{} === 'suspended'", state_of("shop")),
        "the shop suspended",
    )
    .await;
    assert_eq!(h.site("shop.example", "/hello.php").await.status, 503);
    assert_eq!(h.site("www.shop.example", "/hello.php").await.status, 503);
    assert_eq!(h.site("blog.example", "/hello.php").await.status, 200);
    // And resume it.
    page.eval(
        "document.querySelector('button[data-action=resume][data-tenant=shop]').click(); true",
    )
    .await;
    page.wait_for(
        &format!("{} === 'serving'", state_of("shop")),
        "the shop resumed",
    )
    .await;
    assert_eq!(h.site("shop.example", "/hello.php").await.status, 200);
    page.screenshot(&artifact("dashboard-overview.png")).await;

    // The blog's own page: params as text (the hostile one creates no element, runs
    // nothing), no secret, and its hourly usage from the database.
    page.eval("location.hash = '#tenant/blog'; true").await;
    page.wait_for(
        "document.querySelectorAll('#params tbody tr').length === 2",
        "the blog's params",
    )
    .await;
    let motto = page
        .eval(
            "[...document.querySelectorAll('#params tbody tr')] \
             .find(r => r.querySelector('th').textContent === 'MOTTO') \
             .querySelector('td').textContent",
        )
        .await;
    assert_eq!(motto, HOSTILE, "the value is shown as written");
    assert_eq!(
        page.eval("document.querySelectorAll('img, b').length")
            .await,
        0,
        "no element from the param value"
    );
    assert_eq!(page.eval("window.__owned === undefined").await, true);
    // Its five requests (four of `traffic`, one while the shop was suspended), once
    // flushed to the database; the form asks again until they are.
    page.wait_for(
        "(document.getElementById('usage-totals').textContent.includes(' 5 requests') && \
          document.querySelector('#chart svg g.bar') !== null) || \
         (document.querySelector('#range button').click(), false)",
        "the blog's five requests in the hourly chart",
    )
    .await;
    page.screenshot(&artifact("dashboard-tenant.png")).await;

    // The shop's secret never reached the page.
    page.eval("location.hash = '#tenant/shop'; true").await;
    page.wait_for(
        "document.getElementById('tenant-name').textContent === 'shop' && \
         document.querySelectorAll('#params tbody tr').length === 2",
        "the shop's params",
    )
    .await;
    let text = page.eval("document.body.innerText").await;
    assert!(!text.as_str().unwrap().contains(SECRET));
    assert!(text.as_str().unwrap().contains("***"));

    // Every request: no token in a URL, the API calls with the header.
    let paths = check_requests(&page, TOKEN);
    for expected in [
        "/",
        "/ui/app.js",
        "/tenants",
        "/usage/recent",
        "/usage/hourly",
        "/upstreams",
        "/tenants/shop/suspend",
        "/tenants/shop/resume",
        "/tenants/blog",
    ] {
        assert!(
            paths.contains(expected),
            "{expected} not requested: {paths:?}"
        );
    }

    // Signing out forgets the token and the data.
    page.eval("document.getElementById('logout').click(); true")
        .await;
    page.wait_for("!document.getElementById('login').hidden", "the login form")
        .await;
    assert_eq!(
        page.eval("sessionStorage.length + document.querySelectorAll('#params tbody tr, #tenants tbody tr').length")
            .await,
        0
    );
}

#[tokio::test]
async fn the_api_gives_the_last_hour_by_minute_chosen_hours_and_certificates_in_the_list() {
    let h = Harness::start().await;
    h.traffic().await;

    let recent = h.admin_get("/usage/recent", true).await;
    assert_eq!(recent.status, 200, "{}", recent.text());
    let recent = recent.json();
    assert_eq!(recent["step_seconds"], 60);
    let points = recent["starts"].as_array().expect("starts").len();
    assert!(points >= 1);
    assert_eq!(recent["seconds"].as_array().expect("seconds").len(), points);
    let total = |tenant: &serde_json::Value, counter: &str| -> u64 {
        let counts = tenant[counter].as_array().expect("a column per counter");
        assert_eq!(counts.len(), points, "{counter}");
        counts.iter().map(|n| n.as_u64().expect("a count")).sum()
    };
    let tenants = recent["tenants"].as_array().expect("tenants");
    let names: Vec<&str> = tenants
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["blog", "shop"]);
    assert_eq!(total(&tenants[0], "requests"), 4);
    assert_eq!(total(&tenants[0], "status_4xx"), 1);
    assert_eq!(total(&tenants[1], "requests"), 5);
    assert!(total(&tenants[1], "fpm_time_us") > 0);
    let blog = h.admin_get("/usage/recent?tenant=blog", true).await.json();
    assert_eq!(blog["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(
        h.admin_get("/usage/recent?tenant=No!", true).await.status,
        400
    );

    // The hourly rows, once flushed; a range can leave the current hour out.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hour = now / 3600 * 3600;
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = h.hourly(&format!("tenant=shop&since={hour}")).await;
        if rows
            .iter()
            .map(|r| r["requests"].as_u64().unwrap())
            .sum::<u64>()
            == 5
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let sum: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    assert_eq!(sum, 5, "the shop's requests flushed: {rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["tenant"] == "shop" && r["hour"].as_u64().unwrap() >= hour));
    let before = h
        .hourly(&format!("since={}&until={hour}", hour - 86_400))
        .await;
    assert!(before.is_empty(), "{before:?}");
    let backwards = h
        .hourly(&format!("since={hour}&until={}", hour - 3600))
        .await;
    assert!(backwards.is_empty(), "{backwards:?}");
    for bad in ["since=yesterday", "until=-1", "since=1&since=2"] {
        let reply = h.admin_get(&format!("/usage/hourly?{bad}"), true).await;
        assert_eq!(reply.status, 400, "{bad}");
    }
    assert_eq!(h.admin_get("/usage/hourly", false).await.status, 401);

    // The list carries each tenant's certificates, when it has any.
    h.certificate_states();
    let list = h.admin_get("/tenants", true).await.json();
    let tenants = list["tenants"].as_array().expect("tenants");
    assert!(tenants[0].get("certificates").is_none(), "{list}");
    assert_eq!(tenants[1]["name"], "shop");
    assert_eq!(tenants[1]["certificates"]["shop.example"]["state"], "valid");
    assert_eq!(
        tenants[1]["certificates"]["www.shop.example"]["failures"],
        3
    );
}

/// The state text of `tenant`'s row now.
async fn state_of_now(page: &mut Page, tenant: &str) -> serde_json::Value {
    page.eval(&state_of(tenant)).await
}

/// Every `gateway_*` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("gateway_") {
        let before = rest[..start].chars().last();
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Part of a longer identifier (a label name such as `my_gateway_x`): not a metric.
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Every `expr` (a PromQL query) anywhere in a Grafana dashboard.
fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    (_, value) => exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| exprs(item, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_metrics_that_metrics_exposes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/gateway.json");
    let text = std::fs::read_to_string(&path).expect("deploy/grafana/gateway.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["panels"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    let referenced: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    assert!(referenced.len() >= 10, "{referenced:?}");

    // What a gateway that served some requests exposes.
    let h = Harness::start().await;
    h.traffic().await;
    let reply = h.admin_get("/metrics", true).await;
    assert_eq!(reply.status, 200);
    let metrics = prometheus::parse(&reply.text()).expect("the exposition parses");
    let mut exposed: BTreeSet<String> = metrics.samples.iter().map(|s| s.name.clone()).collect();
    for (family, kind) in &metrics.types {
        exposed.insert(family.clone());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                exposed.insert(format!("{family}{suffix}"));
            }
        }
    }
    let unknown: Vec<&String> = referenced.difference(&exposed).collect();
    assert!(
        unknown.is_empty(),
        "the Grafana dashboard queries metrics /metrics does not expose: {unknown:?}"
    );
    for needed in [
        "gateway_requests_total",
        "gateway_fpm_seconds_total",
        "gateway_bytes_out_total",
        "gateway_upstream_server_healthy",
        "gateway_tls_certificate_expiry_seconds",
    ] {
        assert!(referenced.contains(needed), "no panel shows {needed}");
    }
}
