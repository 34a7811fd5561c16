//! The admin API end to end: a real PHP-FPM, the gateway bound on `127.0.0.1:0` from a
//! config FILE in a temp dir (the API writes it back), and HTTP over real sockets to
//! both the admin listener and the main one.
//!
//! Each test starts its own PHP-FPM and gateway. Everything they log is captured, and
//! checked for secrets.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fpm_harness::{fixtures_dir, Fpm, FpmConfig, Listen};
use gateway::config::Config;
use http::{Request, StatusCode};
use http_body_util::Full;

use support::logs::LogCapture;
use support::multi_tenant::send_to as send;
use support::{eventually, Reply, Served, REQUEST_LIMIT};

/// The admin token of every test gateway.
const TOKEN: &str = "admin-token-5f1c9e";
/// Param values that must never appear in a response or a log line.
const SECRETS: [&str; 2] = ["secret-t1-8d2a", "secret-t2-77b0"];

/// The config file of every test, `{upstream}`, `{root}` and `{extra}` filled in. The
/// comments are there to be kept by every edit.
const CONFIG: &str = r#"# Admin API test config.
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
admin_token = "admin-token-5f1c9e"   # the bearer token
retry_after = "7s"
{extra}

[fastcgi]
upstream = "{upstream}"
root = "{root}"
max_connections = 3

[defaults.params]
APP_ENV = "test"

# First customer.
[tenants.t1]
hosts = ["t1.example"]  # its only host
params = { TENANT_ID = "t1", DBPASS = "secret-t1-8d2a" }

# Second customer; pays late.
[tenants.t2]
hosts = ["t2.example"]
params = { TENANT_ID = "t2", DB_PASSWORD = "secret-t2-77b0" }
max_concurrency = 2 # small plan
"#;

/// PHP-FPM and the gateway, serving until dropped.
struct Harness {
    /// The main listener.
    addr: SocketAddr,
    /// The admin listener.
    admin: SocketAddr,
    /// The config file the gateway was started from.
    config: PathBuf,
    /// PHP-FPM's access log: one line per request it served.
    fpm_access_log: PathBuf,
    // Holds the config directory for the gateway's lifetime.
    _dir: tempfile::TempDir,
    // Dropping it stops the gateway.
    _served: Served,
    // Killed on drop.
    _fpm: Fpm,
}

impl Harness {
    /// The standard config, with `extra` lines added to `[server]`.
    async fn start(extra: &str) -> Harness {
        Self::start_with(extra, "").await
    }

    /// The standard config, with `extra` lines in `[server]` and `tail` appended.
    async fn start_with(extra: &str, tail: &str) -> Harness {
        LogCapture::global();
        let dir = tempfile::tempdir().expect("temp dir");
        let fpm_access_log = dir.path().join("fpm-access.log");
        let fpm = Fpm::start(
            FpmConfig::new()
                .listen(Listen::Unix)
                .workers(2)
                .pool_directive("access.log", fpm_access_log.display().to_string()),
        )
        .expect("php-fpm starts (is php-fpm installed? see scripts/ensure-php-fpm.sh)");
        let text = CONFIG
            .replace("{extra}", extra)
            .replace("{upstream}", &fpm.address().to_upstream_string())
            .replace("{root}", &fixtures_dir().display().to_string())
            + tail;
        let config = dir.path().join("tenants.toml");
        std::fs::write(&config, text).expect("write the config");
        let loaded = Config::load(&config).unwrap_or_else(|err| panic!("test config: {err}"));
        let served = Served::bind(loaded).await;
        Harness {
            addr: served.addr,
            admin: served.admin.expect("the admin API is configured"),
            config,
            fpm_access_log,
            _dir: dir,
            _served: served,
            _fpm: fpm,
        }
    }

    /// An admin request with the right token; `body` is sent as JSON when given.
    async fn call(&self, method: &str, target: &str, body: Option<&str>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(target)
            .header("host", "admin")
            .header("authorization", format!("Bearer {TOKEN}"));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = Full::new(Bytes::from(body.unwrap_or("").to_owned()));
        send(self.admin, req.body(body).expect("request")).await
    }

    /// `GET target` on the main listener with `Host: host`.
    async fn site(&self, host: &str, target: &str) -> Reply {
        let req = Request::builder()
            .uri(target)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .expect("request");
        send(self.addr, req).await
    }

    /// The config file's text now.
    fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).expect("read the config")
    }

    /// Requests PHP-FPM has served so far.
    fn fpm_requests(&self) -> usize {
        std::fs::read_to_string(&self.fpm_access_log)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }
}

/// The checks every admin API answer gets.
trait AdminReply {
    /// Asserts the status and, for an error, the `error` code; returns the JSON body.
    fn expect(&self, status: u16, code: Option<&str>) -> serde_json::Value;
}

impl AdminReply for Reply {
    #[track_caller]
    fn expect(&self, status: u16, code: Option<&str>) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.text()
        );
        let json = self.json();
        if let Some(code) = code {
            assert_eq!(json["error"], code, "{json}");
            assert!(json["detail"].is_string(), "{json}");
        }
        for secret in SECRETS {
            assert!(!self.text().contains(secret), "secret in {}", self.text());
        }
        json
    }
}

/// An admin request with the headers given and no others (no token unless given).
async fn raw_call(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(target)
        .header("host", "admin");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(addr, req.body(Full::new(Bytes::new())).expect("request")).await
}

/// Every line of `before` that is not in `changed` is in `after`, in order: what an
/// edit did not touch, it left byte for byte.
#[track_caller]
fn assert_untouched(before: &str, after: &str, changed: &[&str]) {
    let mut rest = after;
    for line in before.lines() {
        if changed.iter().any(|c| line.contains(c)) {
            continue;
        }
        match rest.find(&format!("{line}\n")) {
            Some(at) => rest = &rest[at + line.len() + 1..],
            None => panic!("line {line:?} is gone or out of order:\n{after}"),
        }
    }
}

#[tokio::test]
async fn every_request_needs_the_bearer_token() {
    let h = Harness::start("").await;
    let documented = [
        ("GET", "/tenants"),
        ("GET", "/tenants/t1"),
        ("PUT", "/tenants/t1"),
        ("DELETE", "/tenants/t1"),
        ("POST", "/tenants/t1/suspend"),
        ("POST", "/tenants/t1/resume"),
        ("POST", "/reload"),
        ("GET", "/usage"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
        // Unknown paths too: without the token, nothing is revealed.
        ("GET", "/nope"),
    ];
    let before = h.config_text();
    for (method, path) in documented {
        let reply = raw_call(h.admin, method, path, &[]).await;
        reply.expect(401, Some("unauthorized"));
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"gateway-admin\""),
            "{method} {path}"
        );
    }
    let wrong_token = format!("Bearer {TOKEN}x");
    let wrong_scheme = format!("Basic {TOKEN}");
    for (authorization, challenge) in [
        (wrong_token.as_str(), "invalid_token"),
        ("Bearer admin-token-5f1c9f", "invalid_token"),
        ("Bearer", "realm"),
        ("Bearer ", "realm"),
        (wrong_scheme.as_str(), "realm"),
        (TOKEN, "realm"),
    ] {
        let reply = raw_call(
            h.admin,
            "POST",
            "/tenants/t1/suspend",
            &[("authorization", authorization)],
        )
        .await;
        reply.expect(401, Some("unauthorized"));
        assert!(
            reply
                .header("www-authenticate")
                .unwrap_or("")
                .contains(challenge),
            "{authorization:?}: {:?}",
            reply.headers
        );
        assert!(!reply.text().contains(TOKEN));
    }
    assert_eq!(
        h.config_text(),
        before,
        "a refused request changed the file"
    );
    assert_eq!(h.site("t1.example", "/hello.php").await.status, 200);

    // The scheme is case-insensitive, and the right token works.
    let lower = format!("bearer {TOKEN}");
    let reply = raw_call(h.admin, "GET", "/healthz", &[("authorization", &lower)]).await;
    reply.expect(200, None);
}

#[tokio::test]
async fn tenants_are_listed_and_shown_with_secrets_masked() {
    let h = Harness::start("").await;
    let list = h.call("GET", "/tenants", None).await.expect(200, None);
    let tenants = list["tenants"].as_array().expect("a list");
    let names: Vec<&str> = tenants
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["t1", "t2"]);
    assert_eq!(
        tenants[1],
        serde_json::json!({
            "name": "t2",
            "hosts": ["t2.example"],
            "enabled": true,
            "max_concurrency": 2,
            "params": { "TENANT_ID": "t2", "DB_PASSWORD": "***" },
        })
    );
    let t1 = h.call("GET", "/tenants/t1", None).await.expect(200, None);
    assert_eq!(t1["params"]["DBPASS"], "***");
    assert_eq!(t1["params"]["TENANT_ID"], "t1");
    assert_eq!(t1["max_concurrency"], serde_json::Value::Null);
    // Inherited defaults are not the tenant's own params.
    assert!(t1["params"].get("APP_ENV").is_none());

    for unknown in ["/tenants/t3", "/tenants/T1", "/tenants/%2e%2e"] {
        h.call("GET", unknown, None)
            .await
            .expect(404, Some("unknown_tenant"));
    }
}

#[tokio::test]
async fn a_tenant_shows_the_compression_it_gets_its_own_or_the_inherited_one() {
    let h = Harness::start(r#"compression = ["br", "gzip"]"#).await;
    let t1 = h.call("GET", "/tenants/t1", None).await.expect(200, None);
    // Inherited from `[server]`: offered, but not the tenant's own setting.
    assert_eq!(
        t1["effective_compression"],
        serde_json::json!(["br", "gzip"])
    );
    assert!(t1.get("compression").is_none(), "{t1}");
    // The list view stays the tenant's own settings only.
    let list = h.call("GET", "/tenants", None).await.expect(200, None);
    assert!(
        list["tenants"][0].get("effective_compression").is_none(),
        "{list}"
    );

    let put = h
        .call(
            "PUT",
            "/tenants/t3",
            Some(r#"{"hosts": ["t3.example"], "compression": ["zstd"]}"#),
        )
        .await
        .expect(201, None);
    assert_eq!(put["compression"], serde_json::json!(["zstd"]));
    assert_eq!(put["effective_compression"], serde_json::json!(["zstd"]));

    // Off for one tenant: its own empty list is what it gets.
    h.call(
        "PUT",
        "/tenants/t3",
        Some(r#"{"hosts": ["t3.example"], "compression": []}"#),
    )
    .await
    .expect(200, None);
    let t3 = h.call("GET", "/tenants/t3", None).await.expect(200, None);
    assert_eq!(t3["compression"], serde_json::json!([]));
    assert_eq!(t3["effective_compression"], serde_json::json!([]));

    // A read-modify-write round trip keeps the tenant's own list.
    let mut body = t3.clone();
    let object = body.as_object_mut().expect("an object");
    for shown_only in ["name", "enabled", "effective_compression", "certificates"] {
        object.remove(shown_only);
    }
    h.call("PUT", "/tenants/t3", Some(&body.to_string()))
        .await
        .expect(200, None);
    assert!(
        h.config_text().contains("compression = []"),
        "{}",
        h.config_text()
    );
}

#[tokio::test]
async fn a_new_tenant_is_served_at_once_and_written_after_the_comments() {
    let h = Harness::start("").await;
    let before = h.config_text();
    assert_eq!(h.site("t3.example", "/hello.php").await.status, 404);

    let reply = h
        .call(
            "PUT",
            "/tenants/t3",
            Some(r#"{"hosts": ["T3.example.", "*.t3.example"], "params": {"TENANT_ID": "t3", "DBPORT": 5432, "API_KEY": "k-3"}, "max_concurrency": 1}"#),
        )
        .await;
    let t3 = reply.expect(201, None);
    assert_eq!(reply.header("location"), Some("/tenants/t3"));
    assert_eq!(
        t3["hosts"],
        serde_json::json!(["t3.example", "*.t3.example"])
    );
    assert_eq!(t3["params"]["DBPORT"], "5432");
    assert_eq!(t3["params"]["API_KEY"], "***");
    assert_eq!(t3["enabled"], true);

    // Served at once, with its params, under its host and its wildcard.
    let served = h.site("www.t3.example", "/params.php?only=TENANT_ID").await;
    assert_eq!(
        (served.status, served.text().as_str()),
        (StatusCode::OK, "t3")
    );
    let served = h.site("t3.example", "/params.php?only=API_KEY").await;
    assert_eq!(served.text(), "k-3");

    // The file: everything that was there, untouched, then the new table.
    let after = h.config_text();
    assert!(after.starts_with(&before), "{after}");
    assert!(after.ends_with(
        "[tenants.t3]\nhosts = [\"T3.example.\", \"*.t3.example\"]\nparams = { API_KEY = \"k-3\", DBPORT = \"5432\", TENANT_ID = \"t3\" }\nmax_concurrency = 1\n"
    ), "{after}");
    // A restart serves the same tenants.
    let reloaded = Config::load(&h.config).expect("the written file loads");
    assert_eq!(reloaded.tenants["t3"].params["API_KEY"], "k-3");
}

#[tokio::test]
async fn a_tenant_is_moved_to_a_named_upstream_and_an_unknown_one_is_refused() {
    // `big` is the same PHP-FPM under another name: what is checked is the key's path
    // through the API, the file and the snapshot.
    let h = Harness::start(
        "\n[upstreams.big]\nservers = [{ address = \"{upstream}\", max_connections = 2 }]\n",
    )
    .await;
    let reply = h
        .call(
            "PUT",
            "/tenants/t3",
            Some(r#"{"hosts": ["t3.example"], "params": {"TENANT_ID": "t3"}, "upstream": "big"}"#),
        )
        .await;
    let t3 = reply.expect(201, None);
    assert_eq!(t3["upstream"], "big");
    let shown = h.call("GET", "/tenants/t3", None).await.expect(200, None);
    assert_eq!(shown["upstream"], "big");
    assert!(h.config_text().contains("upstream = \"big\"\n"));
    let served = h.site("t3.example", "/params.php?only=TENANT_ID").await;
    assert_eq!(served.text(), "t3");
    let upstreams = h.call("GET", "/upstreams", None).await.expect(200, None);
    let big = upstreams
        .as_array()
        .expect("a list")
        .iter()
        .find(|u| u["name"] == "big")
        .expect("big is listed");
    assert_eq!(big["servers"][0]["max_connections"], 2);

    let before = h.config_text();
    let refused = h
        .call(
            "PUT",
            "/tenants/t3",
            Some(r#"{"hosts": ["t3.example"], "upstream": "huge"}"#),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{}",
        refused.text()
    );
    assert!(
        refused.text().contains("no [upstreams.huge] table"),
        "{}",
        refused.text()
    );
    assert_eq!(h.config_text(), before);
}

#[tokio::test]
async fn replacing_a_tenant_keeps_comments_and_masked_secrets() {
    let h = Harness::start("").await;
    let before = h.config_text();
    let reply = h
        .call(
            "PUT",
            "/tenants/t2",
            Some(r#"{"hosts": ["t2.example", "t2-new.example"], "params": {"TENANT_ID": "t2", "DB_PASSWORD": "***", "DBNAME": "n2"}, "max_concurrency": 3}"#),
        )
        .await;
    let t2 = reply.expect(200, None);
    assert_eq!(reply.header("location"), None);
    assert_eq!(t2["max_concurrency"], 3);
    assert_eq!(t2["params"]["DBNAME"], "n2");

    let after = h.config_text();
    assert!(
        after.contains("# Second customer; pays late.\n[tenants.t2]\n"),
        "{after}"
    );
    assert!(
        after.contains("max_concurrency = 3 # small plan\n"),
        "{after}"
    );
    // `***` kept the password in service, it was not written over it.
    assert!(
        after.contains("DB_PASSWORD = \"secret-t2-77b0\""),
        "{after}"
    );
    assert!(!after.contains("\"***\""), "{after}");
    assert_untouched(
        &before,
        &after,
        &[
            "hosts = [\"t2.example\"]",
            "params = { TENANT_ID = \"t2\"",
            "max_concurrency = 2",
        ],
    );

    let served = h
        .site("t2-new.example", "/params.php?only=DB_PASSWORD")
        .await;
    assert_eq!(served.text(), "secret-t2-77b0");
}

#[tokio::test]
async fn a_private_root_is_written_shown_and_served_and_a_relative_one_refused() {
    let h = Harness::start("").await;
    let reply = h
        .call(
            "PUT",
            "/tenants/t3",
            Some(r#"{"hosts": ["t3.example"], "private_root": "/srv/moodledata/{tenant}"}"#),
        )
        .await;
    let t3 = reply.expect(201, None);
    assert_eq!(t3["private_root"], "/srv/moodledata/{tenant}");
    assert!(h.config_text().ends_with(
        "[tenants.t3]\nhosts = [\"t3.example\"]\nprivate_root = \"/srv/moodledata/{tenant}\"\n"
    ));
    // PHP learns where X-Accel-Redirect paths start, `{tenant}` substituted.
    let served = h
        .site("t3.example", "/params.php?only=HTTP_X_ACCEL_MAPPING")
        .await;
    assert_eq!(served.text(), "/srv/moodledata/t3=/");

    let before = h.config_text();
    let reply = h
        .call(
            "PUT",
            "/tenants/t3",
            Some(r#"{"hosts": ["t3.example"], "private_root": "moodledata"}"#),
        )
        .await;
    let err = reply.expect(400, Some("invalid_tenant"));
    assert!(
        err["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("absolute"),
        "{err}"
    );
    assert_eq!(h.config_text(), before);
}

/// A `PUT` that must be refused.
struct BadPut {
    what: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    code: &'static str,
    /// Part of the `detail` that says what was wrong.
    detail: &'static str,
}

fn bad_put(
    what: &'static str,
    path: &'static str,
    body: &str,
    status: u16,
    code: &'static str,
    detail: &'static str,
) -> BadPut {
    BadPut {
        what,
        path,
        content_type: Some("application/json"),
        body: body.to_owned(),
        status,
        code,
        detail,
    }
}

#[tokio::test]
async fn bad_tenants_are_refused_and_nothing_changes() {
    let h = Harness::start("").await;
    let before = h.config_text();
    let json = "application/json";
    let t = "/tenants/n1";
    let huge = format!(
        "{{\"hosts\": [\"big.example\"], \"params\": {{\"X\": \"{}\"}}}}",
        "x".repeat(2 << 20)
    );
    let cases = [
        bad_put(
            "unknown field",
            t,
            r#"{"hosts": ["n1.example"], "hostz": 1}"#,
            400,
            "invalid_tenant",
            "unknown field `hostz`",
        ),
        bad_put(
            "invalid host",
            t,
            r#"{"hosts": ["n1 example"]}"#,
            400,
            "invalid_tenant",
            "invalid host \"n1 example\"",
        ),
        bad_put(
            "no hosts",
            t,
            r#"{"params": {}}"#,
            400,
            "invalid_tenant",
            "has no hosts",
        ),
        bad_put(
            "a host twice",
            t,
            r#"{"hosts": ["n1.example", "N1.example."]}"#,
            400,
            "invalid_tenant",
            "listed twice",
        ),
        bad_put(
            "another tenant's host",
            t,
            r#"{"hosts": ["n1.example", "T1.example"]}"#,
            409,
            "host_conflict",
            "duplicate host \"t1.example\"",
        ),
        bad_put(
            "bad name",
            "/tenants/Bad_Name",
            r#"{"hosts": ["n1.example"]}"#,
            400,
            "invalid_tenant",
            "invalid tenant name \"Bad_Name\"",
        ),
        bad_put(
            "reserved param",
            t,
            r#"{"hosts": ["n1.example"], "params": {"SCRIPT_FILENAME": "/x"}}"#,
            400,
            "invalid_tenant",
            "reserved",
        ),
        bad_put(
            "bad param name",
            t,
            r#"{"hosts": ["n1.example"], "params": {"1A": "x"}}"#,
            400,
            "invalid_tenant",
            "invalid param name",
        ),
        bad_put(
            "zero concurrency",
            t,
            r#"{"hosts": ["n1.example"], "max_concurrency": 0}"#,
            400,
            "invalid_tenant",
            "max_concurrency",
        ),
        bad_put(
            "wrong type",
            t,
            r#"{"hosts": ["n1.example"], "enabled": "yes"}"#,
            400,
            "invalid_tenant",
            "expected a boolean",
        ),
        bad_put(
            "mask for a new secret",
            t,
            r#"{"hosts": ["n1.example"], "params": {"DBPASS": "***"}}"#,
            400,
            "invalid_tenant",
            "\"DBPASS\"",
        ),
        bad_put(
            "not JSON",
            t,
            "hosts=n1.example",
            400,
            "invalid_json",
            "not a JSON object",
        ),
        bad_put("empty body", t, "", 400, "invalid_json", "EOF"),
        BadPut {
            content_type: Some("application/x-www-form-urlencoded"),
            ..bad_put(
                "a form",
                t,
                r#"{"hosts": ["n1.example"]}"#,
                415,
                "unsupported_media_type",
                json,
            )
        },
        BadPut {
            content_type: None,
            ..bad_put(
                "no content type",
                t,
                r#"{"hosts": ["n1.example"]}"#,
                415,
                "unsupported_media_type",
                json,
            )
        },
        bad_put(
            "too large",
            "/tenants/big",
            &huge,
            413,
            "payload_too_large",
            "1048576",
        ),
        // A secret sent in the wrong place is not echoed back.
        bad_put(
            "secret as params",
            t,
            r#"{"hosts": ["n1.example"], "params": "DBPASS=hunter2"}"#,
            400,
            "invalid_tenant",
            "invalid type: a string",
        ),
    ];
    for case in cases {
        let mut req = Request::builder()
            .method("PUT")
            .uri(case.path)
            .header("host", "admin")
            .header("authorization", format!("Bearer {TOKEN}"));
        if let Some(content_type) = case.content_type {
            req = req.header("content-type", content_type);
        }
        let reply = send(
            h.admin,
            req.body(Full::new(Bytes::from(case.body))).unwrap(),
        )
        .await;
        let answer = reply.expect(case.status, Some(case.code));
        let detail = answer["detail"].as_str().unwrap();
        let what = case.what;
        assert!(
            detail.contains(case.detail),
            "{what}: {detail:?} lacks {:?}",
            case.detail
        );
        assert!(!detail.contains("hunter2"), "{what}: {detail}");
        assert_eq!(h.config_text(), before, "{what} changed the file");
    }
    let list = h.call("GET", "/tenants", None).await.expect(200, None);
    assert_eq!(list["tenants"].as_array().unwrap().len(), 2);
    assert_eq!(h.site("n1.example", "/hello.php").await.status, 404);
    assert_eq!(h.site("t1.example", "/hello.php").await.status, 200);
}

#[tokio::test]
async fn deleting_a_tenant_stops_its_hosts_and_takes_only_its_table() {
    let h = Harness::start("").await;
    assert_eq!(h.site("t2.example", "/hello.php").await.status, 200);
    let before = h.config_text();
    let reply = h.call("DELETE", "/tenants/t2", None).await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(reply.body.is_empty());

    h.call("GET", "/tenants/t2", None)
        .await
        .expect(404, Some("unknown_tenant"));
    assert_eq!(h.site("t2.example", "/hello.php").await.status, 404);
    h.call("DELETE", "/tenants/t2", None)
        .await
        .expect(404, Some("unknown_tenant"));

    let after = h.config_text();
    let cut = before
        .find("# Second customer")
        .expect("the fixture has it");
    assert_eq!(
        after,
        before[..cut].trim_end_matches('\n').to_owned() + "\n"
    );
    assert_eq!(h.site("t1.example", "/hello.php").await.status, 200);
}

#[tokio::test]
async fn a_suspended_tenant_gets_503_without_reaching_php_fpm_and_resumes_at_once() {
    let h = Harness::start("").await;
    assert_eq!(h.site("t1.example", "/hello.php").await.status, 200);
    assert!(
        eventually(REQUEST_LIMIT, || h.fpm_requests() == 1).await,
        "PHP-FPM logs requests"
    );
    let before = h.config_text();

    let t1 = h
        .call("POST", "/tenants/t1/suspend", None)
        .await
        .expect(200, None);
    assert_eq!(t1["enabled"], false);
    for path in ["/hello.php", "/params.php", "/", "/static/nope.css"] {
        let reply = h.site("t1.example", path).await;
        assert_eq!(reply.status, 503, "{path}");
        assert_eq!(reply.header("retry-after"), Some("7"), "{path}");
    }
    // The other tenant is still served.
    assert_eq!(h.site("t2.example", "/hello.php").await.status, 200);
    assert!(eventually(REQUEST_LIMIT, || h.fpm_requests() == 2).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.fpm_requests(),
        2,
        "a suspended tenant's request reached PHP-FPM"
    );

    // Written back: one line added, the rest untouched.
    let after = h.config_text();
    assert_eq!(
        after,
        before.replace(
            "params = { TENANT_ID = \"t1\", DBPASS = \"secret-t1-8d2a\" }\n",
            "params = { TENANT_ID = \"t1\", DBPASS = \"secret-t1-8d2a\" }\nenabled = false\n"
        )
    );
    // Twice is fine and changes nothing.
    h.call("POST", "/tenants/t1/suspend", None)
        .await
        .expect(200, None);
    assert_eq!(h.config_text(), after);

    let t1 = h
        .call("POST", "/tenants/t1/resume", None)
        .await
        .expect(200, None);
    assert_eq!(t1["enabled"], true);
    let reply = h.site("t1.example", "/hello.php").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "Hello, World!")
    );
    assert!(Config::load(&h.config).unwrap().tenants["t1"].enabled);

    for action in ["suspend", "resume"] {
        h.call("POST", &format!("/tenants/t9/{action}"), None)
            .await
            .expect(404, Some("unknown_tenant"));
    }
}

#[tokio::test]
async fn reload_applies_the_file_or_says_where_it_is_wrong() {
    let h = Harness::start("").await;
    let reply = h.call("POST", "/reload", None).await.expect(200, None);
    assert_eq!(reply["outcome"], "unchanged");
    let original = h.config_text();

    // A hand edit that breaks the file: the old config keeps serving.
    let broken = original.replace("hosts = [\"t2.example\"]", "hosts = [\"t1.example\"]");
    std::fs::write(&h.config, &broken).unwrap();
    let json = h
        .call("POST", "/reload", None)
        .await
        .expect(422, Some("reload_rejected"));
    let detail = json["detail"].as_str().unwrap();
    let line = broken
        .lines()
        .position(|l| l == "hosts = [\"t1.example\"]")
        .unwrap()
        + 1;
    assert!(
        detail.contains(&format!("tenants.toml:{line}:")) && detail.contains("duplicate host"),
        "{detail}"
    );
    assert_eq!(
        h.site("t2.example", "/params.php?only=TENANT_ID")
            .await
            .text(),
        "t2"
    );
    let health = h.call("GET", "/healthz", None).await.expect(200, None);
    assert_eq!(health["last_reload_ok"], false);
    assert!(health["last_reload_error"]
        .as_str()
        .unwrap()
        .contains("duplicate host"));

    // An edit through the API is refused while the file is broken, and says so.
    h.call("POST", "/tenants/t1/suspend", None)
        .await
        .expect(409, Some("config_broken"));
    assert_eq!(h.config_text(), broken);

    // Fixed, with a new tenant: applied (by this call or by the file watcher just before).
    let fixed = original.clone() + "\n[tenants.t4]\nhosts = [\"t4.example\"]\n";
    std::fs::write(&h.config, &fixed).unwrap();
    let reply = h.call("POST", "/reload", None).await.expect(200, None);
    assert!(["applied", "unchanged"].contains(&reply["outcome"].as_str().unwrap()));
    assert_eq!(h.site("t4.example", "/hello.php").await.status, 200);
    let health = h.call("GET", "/healthz", None).await.expect(200, None);
    assert_eq!(
        health,
        serde_json::json!({
            "status": "ok",
            "tenants": 3,
            "last_reload_ok": true,
            "last_reload_error": null,
        })
    );
}

#[tokio::test]
async fn usage_reports_memory_and_database_totals() {
    let h = Harness::start_with(
        "",
        "\n[usage]\ndatabase = \"usage.db\"\nflush_interval = \"200ms\"\n",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(h.site("t1.example", "/hello.php").await.status, 200);
    }
    assert_eq!(
        h.site("t2.example", "/status.php?code=404").await.status,
        404
    );

    let usage = h.call("GET", "/usage", None).await.expect(200, None);
    let memory = usage["since_start"].as_array().unwrap();
    assert_eq!(memory.len(), 2);
    assert_eq!(memory[0]["tenant"], "t1");
    assert_eq!(memory[0]["requests"], 3);
    assert_eq!(memory[0]["status_2xx"], 3);
    assert_eq!(memory[0]["bytes_out"], 39);
    assert_eq!(memory[1]["status_4xx"], 1);

    // The flusher writes within its interval.
    let mut database = serde_json::Value::Null;
    for _ in 0..100 {
        database = h
            .call("GET", "/usage?tenant=t1", None)
            .await
            .expect(200, None);
        if database["database"][0]["requests"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(database["database"][0]["requests"], 3, "{database}");
    assert_eq!(database["since_start"].as_array().unwrap().len(), 1);
    assert_eq!(database["database"].as_array().unwrap().len(), 1);

    // A tenant that served nothing (or no longer exists) has no rows.
    let none = h
        .call("GET", "/usage?tenant=gone", None)
        .await
        .expect(200, None);
    assert_eq!(none, serde_json::json!({"since_start": [], "database": []}));
    for bad in [
        "/usage?tenant=Bad",
        "/usage?tenant=",
        "/usage?tenant=t1&tenant=t2",
    ] {
        h.call("GET", bad, None)
            .await
            .expect(400, Some("bad_request"));
    }
}

#[tokio::test]
async fn usage_without_metering_has_no_database_totals() {
    let h = Harness::start("").await;
    let usage = h.call("GET", "/usage", None).await.expect(200, None);
    assert_eq!(
        usage,
        serde_json::json!({"since_start": [], "database": null})
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let h = Harness::start("").await;
    assert_eq!(h.site("t1.example", "/hello.php").await.status, 200);
    h.call("POST", "/tenants/t2/suspend", None)
        .await
        .expect(200, None);
    let reply = h.call("GET", "/metrics", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some(gateway::metrics::CONTENT_TYPE)
    );
    let text = reply.text();
    let metrics = support::prometheus::parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    assert_eq!(metrics.types["gateway_requests_total"], "counter");
    assert_eq!(
        metrics.types["gateway_request_duration_seconds"],
        "histogram"
    );
    let value = |name: &str, labels: &[(&str, &str)]| metrics.value(name, labels);
    assert_eq!(
        value(
            "gateway_requests_total",
            &[("tenant", "t1"), ("class", "2xx")]
        ),
        1.0
    );
    assert_eq!(value("gateway_tenants", &[("state", "enabled")]), 1.0);
    assert_eq!(value("gateway_tenants", &[("state", "suspended")]), 1.0);
    assert_eq!(
        value("gateway_config_reloads_total", &[("result", "success")]),
        1.0
    );
}

#[tokio::test]
async fn health_and_the_openapi_document() {
    let h = Harness::start("").await;
    let health = h.call("GET", "/healthz", None).await.expect(200, None);
    assert_eq!(
        health,
        serde_json::json!({
            "status": "ok",
            "tenants": 2,
            "last_reload_ok": true,
            "last_reload_error": null,
        })
    );

    let doc = h.call("GET", "/openapi.json", None).await.expect(200, None);
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.0."), "{version}");
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "/tenants",
        "/tenants/{name}",
        "/tenants/{name}/suspend",
        "/tenants/{name}/resume",
        "/tenants/{name}/cache/purge",
        "/reload",
        "/usage",
        "/usage/recent",
        "/usage/hourly",
        "/metrics",
        "/upstreams",
        "/healthz",
        "/openapi.json",
    ]
    .into_iter()
    .collect();
    assert_eq!(paths, expected);
    let scheme = &doc["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&"http".into(), &"bearer".into())
    );
    assert_eq!(doc["security"], serde_json::json!([{"bearerAuth": []}]));
}

#[tokio::test]
async fn wrong_methods_and_unknown_paths() {
    let h = Harness::start("").await;
    for (method, path, allow) in [
        ("POST", "/tenants", "GET, HEAD"),
        ("PATCH", "/tenants/t1", "GET, HEAD, PUT, DELETE"),
        ("GET", "/tenants/t1/suspend", "POST"),
        ("GET", "/reload", "POST"),
        ("DELETE", "/metrics", "GET, HEAD"),
    ] {
        let reply = h.call(method, path, None).await;
        reply.expect(405, Some("method_not_allowed"));
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
    }
    let reply = h.call("OPTIONS", "/tenants/t1", None).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    for path in [
        "/tenants/",
        "/tenants/t1/pause",
        "/v1/tenants",
        "/ui/",
        "/ui/x.js",
    ] {
        h.call("GET", path, None)
            .await
            .expect(404, Some("not_found"));
    }
    let head = h.call("HEAD", "/healthz", None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn concurrent_edits_all_land() {
    let h = Arc::new(Harness::start("").await);
    let edits: Vec<_> = (0..8)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                let body = format!(r#"{{"hosts": ["c{i}.example"], "params": {{"N": {i}}}}}"#);
                h.call("PUT", &format!("/tenants/c{i}"), Some(&body)).await
            })
        })
        .chain((0..4).map(|i| {
            let h = h.clone();
            let action = if i % 2 == 0 { "suspend" } else { "resume" };
            tokio::spawn(
                async move { h.call("POST", &format!("/tenants/t2/{action}"), None).await },
            )
        }))
        .collect();
    for edit in edits {
        let reply = edit.await.expect("no panic");
        assert!(
            reply.status.is_success(),
            "{} {}",
            reply.status,
            reply.text()
        );
    }
    let config = Config::load(&h.config).expect("the file loads");
    for i in 0..8 {
        assert_eq!(config.tenants[&format!("c{i}")].params["N"], i.to_string());
    }
    let served = h.site("c7.example", "/params.php?only=N").await;
    assert_eq!(served.text(), "7");
}

#[tokio::test]
async fn no_secret_reaches_a_log_line() {
    let h = Harness::start("").await;
    h.call("GET", "/tenants", None).await.expect(200, None);
    h.call(
        "PUT",
        "/tenants/t1",
        Some(r#"{"hosts": ["t1.example"], "params": {"DBPASS": "secret-t1-8d2a", "TENANT_ID": "t1"}}"#),
    )
    .await
    .expect(200, None);
    h.call(
        "PUT",
        "/tenants/t5",
        Some(r#"{"hosts": ["t5.example"], "params": {"DBPASS": "secret-t2-77b0\u0000"}}"#),
    )
    .await
    .expect(400, Some("invalid_tenant"));
    raw_call(
        h.admin,
        "GET",
        "/tenants",
        &[("authorization", "Bearer secret-t1-8d2a")],
    )
    .await
    .expect(401, Some("unauthorized"));
    h.call("POST", "/tenants/t1/suspend", None)
        .await
        .expect(200, None);

    // Every test's lines so far, not only this one's.
    let lines = LogCapture::global().lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("admin request") && l.contains("/tenants/t1")),
        "admin requests are logged: {lines:#?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.contains("tenant changed through the admin API")));
    for line in &lines {
        for secret in SECRETS.iter().chain([&TOKEN]) {
            assert!(!line.contains(secret), "{line}");
        }
    }
}
