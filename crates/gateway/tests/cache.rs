//! The response cache against a real PHP-FPM: a PHP page that counts its own runs (in a
//! file per tenant and counter name) proves when PHP ran and when the cache answered.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use fpm_harness::{free_port, Fpm, FpmConfig, Listen};
use gateway::cache::Purge;
use gateway::config::Config;
use http_body_util::{Empty, Full};
use support::live::toml_string;
use support::multi_tenant::{request, send_to, send_with_headers};
use support::{cache_status, eventually, is_hit, start_fpm, Reply, Served, SOON};

/// The page: counts its run in `RUNS_DIR/<tenant>-<c>`, then answers with the caching
/// headers the query asks for. `sleep` (ms) makes it slow, `setcookie` sets a session
/// cookie, `tags` sends `Cache-Tag`, `vary` a `Vary`, `etag` an `ETag`.
const PAGE: &str = r#"<?php
$dir = $_SERVER['RUNS_DIR'];
$name = ($_SERVER['TENANT_ID'] ?? 'x') . '-' . preg_replace('/[^A-Za-z0-9_-]/', '', $_GET['c'] ?? 'default');
$fp = fopen("$dir/$name", 'c+');
flock($fp, LOCK_EX);
$n = (int) stream_get_contents($fp) + 1;
ftruncate($fp, 0);
rewind($fp);
fwrite($fp, (string) $n);
fflush($fp);
flock($fp, LOCK_UN);
fclose($fp);
if (isset($_GET['sleep'])) usleep((int) $_GET['sleep'] * 1000);
if (isset($_GET['cc'])) header('Cache-Control: ' . $_GET['cc']);
if (isset($_GET['vary'])) header('Vary: ' . $_GET['vary']);
if (isset($_GET['tags'])) header('Cache-Tag: ' . $_GET['tags']);
if (isset($_GET['etag'])) header('ETag: "' . $_GET['etag'] . '"');
if (isset($_GET['setcookie'])) setcookie('sess', "run$n");
header('Content-Type: text/plain');
echo "tenant=" . ($_SERVER['TENANT_ID'] ?? '') . " run=$n lang=" . ($_SERVER['HTTP_ACCEPT_LANGUAGE'] ?? '')
    . " cookie=" . ($_SERVER['HTTP_COOKIE'] ?? '') . " method=" . $_SERVER['REQUEST_METHOD'];
"#;

/// A public page, fresh for a minute.
const PUBLIC: &str = "cc=public,max-age=60";

/// PHP-FPM, the gateway (tenants `a` and `b`, both cached) and its admin API.
struct Harness {
    served: Served,
    fpm: Fpm,
    dir: tempfile::TempDir,
    admin: std::net::SocketAddr,
}

impl Harness {
    async fn start() -> Harness {
        let fpm = start_fpm(FpmConfig::new().listen(Listen::Unix).workers(4));
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("app");
        std::fs::create_dir_all(root.join("runs")).expect("app dir");
        std::fs::write(root.join("index.php"), PAGE).expect("write page");
        let admin_port = free_port();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:{admin_port}\"\n\n\
             [fastcgi]\nupstream = {upstream}\nroot = {root}\nmax_connections = 4\n\n\
             [cache]\nmemory = \"16MiB\"\n\n\
             [defaults.cache]\nenabled = true\nstale_if_error = \"60s\"\n\n\
             [defaults.params]\nRUNS_DIR = {runs}\n\n\
             [tenants.a]\nhosts = [\"a.test\"]\nparams = {{ TENANT_ID = \"a\" }}\n\n\
             [tenants.b]\nhosts = [\"b.test\"]\nparams = {{ TENANT_ID = \"b\" }}\n",
            upstream = toml_string(fpm.address().to_upstream_string()),
            root = toml_string(root.display()),
            runs = toml_string(root.join("runs").display()),
        );
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, text).expect("write config");
        let config = Config::load(&path).unwrap_or_else(|err| panic!("test config: {err}"));
        let served = Served::bind(config).await;
        let admin = served.admin.expect("admin listener");
        Harness {
            served,
            fpm,
            dir,
            admin,
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("tenants.toml")
    }

    /// How many times the page ran for `tenant` under counter `c`.
    fn runs(&self, tenant: &str, c: &str) -> u32 {
        let path = self
            .dir
            .path()
            .join("app/runs")
            .join(format!("{tenant}-{c}"));
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    async fn get(&self, host: &str, target: &str) -> Reply {
        self.get_with(host, target, &[]).await
    }

    async fn get_with(&self, host: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", host, target, headers).await
    }

    async fn send(
        &self,
        method: &str,
        host: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        send_with_headers(self.served.addr, method, host, target, headers).await
    }

    /// An admin API call with a JSON body.
    async fn admin(&self, method: &str, path: &str, body: &str) -> Reply {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        send_to(self.admin, req).await
    }

    async fn purge(&self, tenant: &str, body: &str) -> serde_json::Value {
        let reply = self
            .admin("POST", &format!("/tenants/{tenant}/cache/purge"), body)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }
}

#[tokio::test]
async fn a_public_page_is_answered_from_the_cache_without_running_php() {
    let h = Harness::start().await;
    let target = format!("/page?c=pub&{PUBLIC}");
    let first = h.get("a.test", &target).await;
    assert_eq!(first.status, 200);
    assert!(first.text().contains("run=1"), "{}", first.text());
    assert!(
        cache_status(&first).contains("fwd=uri-miss; stored"),
        "{}",
        cache_status(&first)
    );
    let second = h.get("a.test", &target).await;
    assert_eq!(second.text(), first.text());
    assert!(is_hit(&second), "{}", cache_status(&second));
    assert!(second.header("age").is_some());
    assert_eq!(h.runs("a", "pub"), 1, "the second request did not run PHP");
    // The host is normalised: the same page for the same tenant.
    let upper = h.get("A.TEST", &target).await;
    assert!(is_hit(&upper));
    assert_eq!(h.runs("a", "pub"), 1);
}

#[tokio::test]
async fn head_conditional_and_range_requests_are_answered_from_the_entry() {
    let h = Harness::start().await;
    let target = format!("/page?c=cond&etag=v1&{PUBLIC}");
    // A HEAD miss fills the entry with the GET's answer.
    let head = h.send("HEAD", "a.test", &target, &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let get = h.get("a.test", &target).await;
    assert!(is_hit(&get), "{}", cache_status(&get));
    assert!(get.text().contains("method=GET"), "{}", get.text());
    let len = get.body.len();
    assert_eq!(get.header("content-length"), Some(len.to_string().as_str()));
    let not_modified = h
        .get_with("a.test", &target, &[("if-none-match", "\"v1\"")])
        .await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    let range = h
        .get_with("a.test", &target, &[("range", "bytes=0-5")])
        .await;
    assert_eq!(range.status, 206);
    assert_eq!(range.text(), "tenant");
    let content_range = format!("bytes 0-5/{len}");
    assert_eq!(range.header("content-range"), Some(content_range.as_str()));
    let head = h.send("HEAD", "a.test", &target, &[]).await;
    assert!(is_hit(&head));
    assert_eq!(
        h.runs("a", "cond"),
        1,
        "every answer came from the one entry"
    );
}

#[tokio::test]
async fn a_logged_in_cookie_bypasses_the_cache_both_ways() {
    let h = Harness::start().await;
    let target = format!("/page?c=login&{PUBLIC}");
    let anonymous = h.get("a.test", &target).await;
    assert!(anonymous.text().contains("run=1"));
    let logged_in = h
        .get_with(
            "a.test",
            &target,
            &[("cookie", "wordpress_logged_in_abc=admin")],
        )
        .await;
    assert!(
        logged_in.text().contains("run=2"),
        "PHP ran: {}",
        logged_in.text()
    );
    assert!(logged_in.text().contains("wordpress_logged_in_abc=admin"));
    assert_eq!(
        cache_status(&logged_in),
        "fcgi-gateway; fwd=bypass; detail=cookie"
    );
    // The logged-in page was not stored: anonymous visitors still get theirs.
    let again = h.get("a.test", &target).await;
    assert!(is_hit(&again));
    assert!(again.text().contains("run=1"));
    // An Authorization header bypasses too.
    let authorized = h
        .get_with("a.test", &target, &[("authorization", "Basic YTpi")])
        .await;
    assert!(authorized.text().contains("run=3"));
    assert_eq!(h.runs("a", "login"), 3);
}

#[tokio::test]
async fn set_cookie_answers_are_never_stored_nor_served_to_another_client() {
    let h = Harness::start().await;
    let target = format!("/page?c=cookie&setcookie=1&{PUBLIC}");
    let first = h.get("a.test", &target).await;
    let second = h.get("a.test", &target).await;
    assert_eq!(first.header("set-cookie"), Some("sess=run1"));
    assert_eq!(
        second.header("set-cookie"),
        Some("sess=run2"),
        "the second client got its own cookie"
    );
    assert!(second.text().contains("run=2"));
    assert!(
        cache_status(&second).contains("detail=set-cookie"),
        "{}",
        cache_status(&second)
    );
    assert_eq!(h.runs("a", "cookie"), 2);
    // Private and no-store answers are not stored either.
    for cc in ["cc=private,max-age=60", "cc=no-store"] {
        let target = format!("/page?c=private&{cc}");
        h.get("a.test", &target).await;
        let again = h.get("a.test", &target).await;
        assert!(!is_hit(&again), "{cc}: {}", cache_status(&again));
    }
    assert_eq!(h.runs("a", "private"), 4);
}

#[tokio::test]
async fn two_tenants_on_the_same_path_see_their_own_pages() {
    let h = Harness::start().await;
    let target = format!("/same?c=same&{PUBLIC}");
    for _ in 0..2 {
        let a = h.get("a.test", &target).await;
        let b = h.get("b.test", &target).await;
        assert!(a.text().starts_with("tenant=a run=1"), "{}", a.text());
        assert!(b.text().starts_with("tenant=b run=1"), "{}", b.text());
    }
    assert_eq!((h.runs("a", "same"), h.runs("b", "same")), (1, 1));
}

#[tokio::test]
async fn vary_keeps_an_answer_per_value_of_the_named_request_header() {
    let h = Harness::start().await;
    let target = format!("/page?c=vary&vary=Accept-Language&{PUBLIC}");
    let en = h
        .get_with("a.test", &target, &[("accept-language", "en")])
        .await;
    let fr = h
        .get_with("a.test", &target, &[("accept-language", "fr")])
        .await;
    assert!(en.text().contains("run=1 lang=en"));
    assert!(fr.text().contains("run=2 lang=fr"), "{}", fr.text());
    assert!(
        cache_status(&fr).contains("fwd=vary-miss"),
        "{}",
        cache_status(&fr)
    );
    let en_again = h
        .get_with("a.test", &target, &[("accept-language", "en")])
        .await;
    let fr_again = h
        .get_with("a.test", &target, &[("accept-language", "fr")])
        .await;
    assert_eq!(en_again.text(), en.text());
    assert_eq!(fr_again.text(), fr.text());
    assert_eq!(h.runs("a", "vary"), 2);
    // `Vary: *` is never stored.
    let star = format!("/page?c=star&vary=*&{PUBLIC}");
    h.get("a.test", &star).await;
    h.get("a.test", &star).await;
    assert_eq!(h.runs("a", "star"), 2);
}

#[tokio::test]
async fn a_hundred_concurrent_misses_run_php_once() {
    let h = Harness::start().await;
    let target = format!("/page?c=stampede&sleep=300&{PUBLIC}");
    let addr = h.served.addr;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let req = request("GET", "a.test", &target)
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                send_to(addr, req).await
            })
        })
        .collect();
    for task in tasks {
        let reply = task.await.expect("request task");
        assert_eq!(reply.status, 200);
        assert!(reply.text().contains("run=1"), "{}", reply.text());
    }
    assert_eq!(
        h.runs("a", "stampede"),
        1,
        "PHP ran once for 100 concurrent misses"
    );
}

#[tokio::test]
async fn an_expired_entry_is_served_while_one_background_request_refreshes_it() {
    let h = Harness::start().await;
    let target = "/page?c=swr&cc=public,max-age=1,stale-while-revalidate=30";
    assert!(h.get("a.test", target).await.text().contains("run=1"));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let stale = h.get("a.test", target).await;
    assert!(stale.text().contains("run=1"), "{}", stale.text());
    assert!(
        cache_status(&stale).contains("detail=stale-while-revalidate"),
        "{}",
        cache_status(&stale)
    );
    assert!(
        eventually(SOON, || h.runs("a", "swr") == 2).await,
        "the background refresh ran PHP"
    );
    let mut refreshed = false;
    for _ in 0..100 {
        if h.get("a.test", target).await.text().contains("run=2") {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refreshed, "the refreshed answer is served");
    assert_eq!(h.runs("a", "swr"), 2, "one refresh");
}

#[tokio::test]
async fn a_stale_entry_is_served_while_php_fpm_is_stopped() {
    let mut h = Harness::start().await;
    let target = "/page?c=down&cc=public,max-age=1";
    assert!(h.get("a.test", target).await.text().contains("run=1"));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    h.fpm.kill().expect("stop php-fpm");
    let stale = h.get("a.test", target).await;
    assert_eq!(stale.status, 200);
    assert!(stale.text().contains("run=1"), "{}", stale.text());
    assert!(
        cache_status(&stale).contains("detail=stale-if-error"),
        "{}",
        cache_status(&stale)
    );
    // A page never cached has nothing to fall back on.
    let uncached = h.get("a.test", "/page?c=never").await;
    assert_eq!(uncached.status, 502);
}

#[tokio::test]
async fn purge_by_url_prefix_tag_and_whole_tenant() {
    let h = Harness::start().await;
    let pages = [
        ("blog-a", format!("/blog/a?c=blog-a&{PUBLIC}")),
        ("blog-b", format!("/blog/b?c=blog-b&{PUBLIC}")),
        ("news", format!("/news/x?c=news&tags=news,front&{PUBLIC}")),
        ("other", format!("/other?c=other&{PUBLIC}")),
    ];
    for (_, target) in &pages {
        h.get("a.test", target).await;
        assert!(is_hit(&h.get("a.test", target).await));
    }
    let url = serde_json::json!({ "urls": [pages[0].1] }).to_string();
    assert_eq!(h.purge("a", &url).await["purged"], 1);
    assert!(
        !is_hit(&h.get("a.test", &pages[0].1).await),
        "purged by URL"
    );
    assert!(
        is_hit(&h.get("a.test", &pages[1].1).await),
        "the other URL stays"
    );

    assert_eq!(h.purge("a", r#"{"prefix": "/blog/"}"#).await["purged"], 2);
    assert!(
        !is_hit(&h.get("a.test", &pages[1].1).await),
        "purged by prefix"
    );
    assert!(is_hit(&h.get("a.test", &pages[2].1).await));

    assert_eq!(h.purge("a", r#"{"tags": ["front"]}"#).await["purged"], 1);
    assert!(
        !is_hit(&h.get("a.test", &pages[2].1).await),
        "purged by tag"
    );
    assert!(is_hit(&h.get("a.test", &pages[3].1).await));

    h.purge("a", "{}").await;
    assert!(
        !is_hit(&h.get("a.test", &pages[3].1).await),
        "purged with the tenant"
    );
    assert_eq!(h.runs("a", "blog-a"), 2);
    assert_eq!(h.runs("a", "blog-b"), 2);
    assert_eq!(h.runs("a", "news"), 2);
    assert_eq!(h.runs("a", "other"), 2);
    // The API refuses a tenant it does not know, and a body that is not a purge.
    assert_eq!(
        h.admin("POST", "/tenants/zz/cache/purge", "{}")
            .await
            .status,
        404
    );
    assert_eq!(
        h.admin("POST", "/tenants/a/cache/purge", r#"{"url": 1}"#)
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn purging_one_tenant_leaves_the_others_entries() {
    let h = Harness::start().await;
    let target = format!("/shared?c=both&{PUBLIC}");
    h.get("a.test", &target).await;
    h.get("b.test", &target).await;
    // A URL of b's host named in a's purge does not reach b.
    let url = serde_json::json!({ "urls": [format!("http://b.test{target}")] }).to_string();
    assert_eq!(h.purge("a", &url).await["purged"], 0);
    h.purge("a", "{}").await;
    assert!(!is_hit(&h.get("a.test", &target).await));
    assert!(is_hit(&h.get("b.test", &target).await), "b keeps its entry");
    assert_eq!((h.runs("a", "both"), h.runs("b", "both")), (2, 1));
}

#[tokio::test]
async fn the_cli_purges_through_the_admin_api() {
    let h = Harness::start().await;
    let target = format!("/blog/post?c=cli&{PUBLIC}");
    let kept = format!("/news/post?c=cli-kept&{PUBLIC}");
    h.get("a.test", &target).await;
    h.get("a.test", &kept).await;
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
                .args(&args)
                .output()
                .expect("run the gateway binary")
        })
    };
    let config = h.config_path().display().to_string();
    let args = |rest: &[&str]| -> Vec<String> {
        ["cache", "purge"]
            .iter()
            .chain(rest)
            .map(|s| s.to_string())
            .chain(["--config".to_owned(), config.clone()])
            .collect()
    };
    let output = run(args(&["a", "--prefix", "/blog/"]))
        .await
        .expect("cli task");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "purged 1 URL(s) from tenant a's cache\n"
    );
    assert!(!is_hit(&h.get("a.test", &target).await));
    assert!(is_hit(&h.get("a.test", &kept).await), "outside the prefix");
    let output = run(args(&["nope"])).await.expect("cli task");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("nope"),
        "{stderr}"
    );
    // The library call the binary makes, with a tag.
    let path = h.config_path();
    let report = tokio::task::spawn_blocking(move || {
        let purge = Purge {
            tags: vec!["none-such".into()],
            ..Purge::default()
        };
        gateway::cli::cache_purge(&path, "a", &purge)
    })
    .await
    .expect("cli task")
    .expect("purge succeeds");
    assert_eq!(report, "purged 0 URL(s) from tenant a's cache\n");
}

#[tokio::test]
async fn suspending_changing_or_removing_a_tenant_drops_its_entries() {
    let h = Harness::start().await;
    let target = format!("/page?c=life&{PUBLIC}");
    let prime = |expected_runs: u32| {
        let h = &h;
        let target = target.clone();
        async move {
            h.get("a.test", &target).await;
            assert!(is_hit(&h.get("a.test", &target).await));
            assert_eq!(h.runs("a", "life"), expected_runs);
        }
    };
    prime(1).await;
    assert_eq!(h.admin("POST", "/tenants/a/suspend", "").await.status, 200);
    assert_eq!(h.get("a.test", &target).await.status, 503);
    assert_eq!(h.admin("POST", "/tenants/a/resume", "").await.status, 200);
    prime(2).await;

    // A changed tenant (a new param) starts empty: its pages may differ now.
    let put = r#"{"hosts": ["a.test"], "params": {"TENANT_ID": "a", "EXTRA": "1"}}"#;
    assert_eq!(h.admin("PUT", "/tenants/a", put).await.status, 200);
    prime(3).await;

    // Another tenant's change leaves a's entries alone.
    let put_b = r#"{"hosts": ["b.test"], "params": {"TENANT_ID": "b", "EXTRA": "2"}}"#;
    assert_eq!(h.admin("PUT", "/tenants/b", put_b).await.status, 200);
    assert!(is_hit(&h.get("a.test", &target).await));

    // Removed, then added back: nothing of the old entries remains.
    assert_eq!(h.admin("DELETE", "/tenants/a", "").await.status, 204);
    assert!(h.served.state.cache.tenant("a").is_none());
    assert_eq!(h.admin("PUT", "/tenants/a", put).await.status, 201);
    prime(4).await;
}

#[tokio::test]
async fn cache_results_memory_and_bytes_show_in_metrics_and_usage() {
    let h = Harness::start().await;
    let target = format!("/page?c=metered&{PUBLIC}");
    let first = h.get("a.test", &target).await;
    h.get("a.test", &target).await;
    h.get("a.test", &target).await;
    let a = std::sync::Arc::<str>::from("a");
    let hits = || {
        h.served
            .state
            .telemetry
            .usage
            .totals()
            .get(&a)
            .map_or(0, |usage| usage.cache_hits)
    };
    assert!(
        eventually(SOON, || hits() == 2).await,
        "both hits are metered"
    );
    let totals = h.served.state.telemetry.usage.totals()[&a];
    assert_eq!(totals.cache_misses, 1);
    assert_eq!(totals.cache_bytes_out, 2 * first.body.len() as u64);
    let metrics = h.admin("GET", "/metrics", "").await.text();
    assert!(
        metrics.contains("gateway_cache_requests_total{tenant=\"a\",result=\"hit\"} 2"),
        "{metrics}"
    );
    let memory = metrics
        .lines()
        .find_map(|line| line.strip_prefix("gateway_cache_memory_bytes{tenant=\"a\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("memory gauge of tenant a");
    assert!(memory >= first.body.len() as u64, "{memory}");
}
