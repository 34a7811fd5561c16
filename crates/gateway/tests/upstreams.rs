//! `[upstreams.NAME]` end to end: several real PHP-FPM servers behind the gateway. A
//! tenant goes to its upstream's servers only; one server killed under load fails no GET
//! and is used again once it is back; all servers down is a 502 at once; weights shift
//! the share; each server's bound holds (counted by a relay); a POST whose server dies
//! under it is answered with an error, never run again on another server; a reload moves a tenant to
//! another upstream and keeps unchanged pools; `/metrics` and `GET /upstreams` show each
//! server's state.
//!
//! Each PHP-FPM says who it is: the app's `whoami.php` prints the pool's `FPM_NAME`.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fpm_harness::{CountingRelay, Fpm, FpmAddress, FpmConfig};
use gateway::config::Config;
use http::StatusCode;
use support::live::{get, toml_string, Scratch};
use support::{eventually, start_fpm, within, Served, REQUEST_LIMIT, SOON};

/// The one script of the test app: sleeps `?ms=N` milliseconds, then prints its
/// PHP-FPM's name.
const WHOAMI: &str = "<?php\n$ms = (int) ($_GET['ms'] ?? 0);\nif ($ms > 0) { usleep($ms * 1000); }\nheader('Content-Type: text/plain');\necho getenv('FPM_NAME');\n";

/// A PHP-FPM named `name` with `workers` workers (and the harness's `/fpm-ping`).
fn named_fpm(name: &str, workers: u32) -> Fpm {
    start_fpm(FpmConfig::new().workers(workers).env("FPM_NAME", name))
}

/// A scratch directory holding the app (`app/whoami.php`).
fn scratch() -> Scratch {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.path("app")).expect("app dir");
    std::fs::write(scratch.path("app/whoami.php"), WHOAMI).expect("whoami.php");
    scratch
}

/// A server entry of an upstream's `servers` list.
fn server(address: &FpmAddress, extra: &str) -> String {
    format!(
        "{{ address = {}{extra} }}",
        toml_string(address.to_upstream_string())
    )
}

/// A config whose `[fastcgi]` upstream is `fallback`, followed by `rest` (upstreams,
/// defaults and tenants).
fn config_text(scratch: &Scratch, fallback: &FpmAddress, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nqueue_timeout = \"20s\"\n\n\
         [fastcgi]\nupstream = {}\nroot = {}\nmax_connections = 4\n\n{rest}",
        toml_string(fallback.to_upstream_string()),
        toml_string(scratch.path("app").display()),
    )
}

fn parse(scratch: &Scratch, text: &str) -> Config {
    Config::parse(text, scratch.path("tenants.toml"), scratch.dir.path())
        .unwrap_or_else(|err| panic!("test config: {err}\n{text}"))
}

/// Which PHP-FPM answered `host`'s `whoami.php`; panics on anything but a 200.
async fn whoami(addr: SocketAddr, host: &str, query: &str) -> String {
    let reply = within(
        REQUEST_LIMIT,
        "a GET",
        get(addr, host, &format!("/whoami.php{query}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text());
    reply.text()
}

/// The state of `server` in upstream `name`, as `GET /upstreams` would show it.
fn server_state(
    gateway: &Served,
    name: &str,
    server: &FpmAddress,
) -> gateway::snapshot::ServerState {
    let address = server.to_upstream_string();
    gateway
        .state
        .load()
        .upstream_stats()
        .into_iter()
        .find(|u| u.name == name)
        .unwrap_or_else(|| panic!("upstream {name} is served"))
        .servers
        .into_iter()
        .find(|s| s.address == address)
        .unwrap_or_else(|| panic!("{address} is in upstream {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_on_big_never_uses_mains_servers() {
    let (a, b, c, fallback) = (
        named_fpm("a", 2),
        named_fpm("b", 2),
        named_fpm("c", 2),
        named_fpm("fallback", 1),
    );
    let scratch = scratch();
    let text = config_text(
        &scratch,
        fallback.address(),
        &format!(
            "[upstreams.main]\nservers = [{}, {}]\n\n[upstreams.big]\nservers = [{}]\n\n\
             [tenants.small]\nhosts = [\"small.test\"]\nupstream = \"main\"\n\n\
             [tenants.centro1]\nhosts = [\"centro1.test\"]\nupstream = \"big\"\n\n\
             [tenants.plain]\nhosts = [\"plain.test\"]\n",
            server(a.address(), ", max_connections = 2"),
            server(b.address(), ", max_connections = 2"),
            server(c.address(), ", max_connections = 2"),
        ),
    );
    let gateway = Served::bind(parse(&scratch, &text)).await;
    let mut seen: HashMap<&str, Vec<String>> = HashMap::new();
    // Concurrent, so `main` spreads over both of its servers.
    for _ in 0..10 {
        let (small, big, plain) = tokio::join!(
            whoami(gateway.addr, "small.test", "?ms=20"),
            whoami(gateway.addr, "centro1.test", "?ms=20"),
            whoami(gateway.addr, "plain.test", ""),
        );
        seen.entry("small").or_default().push(small);
        seen.entry("big").or_default().push(big);
        seen.entry("plain").or_default().push(plain);
    }
    assert!(seen["big"].iter().all(|s| s == "c"), "{:?}", seen["big"]);
    assert!(
        seen["small"].iter().all(|s| s == "a" || s == "b"),
        "{:?}",
        seen["small"]
    );
    // A tenant naming no upstream keeps the `[fastcgi]` one.
    assert!(
        seen["plain"].iter().all(|s| s == "fallback"),
        "{:?}",
        seen["plain"]
    );
    assert_eq!(
        server_state(&gateway, "big", c.address()).max_connections,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_upstream_applies_to_tenants_that_name_none() {
    let (a, fallback) = (named_fpm("a", 1), named_fpm("fallback", 1));
    let scratch = scratch();
    let text = config_text(
        &scratch,
        fallback.address(),
        &format!(
            "[upstreams.main]\nservers = [{}]\n\n[defaults]\nupstream = \"main\"\n\n\
             [tenants.t]\nhosts = [\"t.test\"]\n",
            server(a.address(), ""),
        ),
    );
    let gateway = Served::bind(parse(&scratch, &text)).await;
    assert_eq!(whoami(gateway.addr, "t.test", "").await, "a");
}

/// `[upstreams.main]` over `a` and `b`, pinged every 200 ms, and one tenant on it.
fn two_server_config(
    scratch: &Scratch,
    a: &FpmAddress,
    b: &FpmAddress,
    fallback: &FpmAddress,
) -> String {
    config_text(
        scratch,
        fallback,
        &format!(
            "[upstreams.main]\nservers = [{}, {}]\n\
             health = {{ ping_path = \"/fpm-ping\", ping_response = \"pong\", interval = \"200ms\", timeout = \"1s\", fails = 2, passes = 2 }}\n\n\
             [tenants.t]\nhosts = [\"t.test\"]\nupstream = \"main\"\n",
            server(a, ", max_connections = 4"),
            server(b, ", max_connections = 4"),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_killed_mid_load_fails_no_get_and_is_used_again_once_back() {
    let (mut a, b, fallback) = (
        named_fpm("a", 4),
        named_fpm("b", 4),
        named_fpm("fallback", 1),
    );
    let scratch = scratch();
    let text = two_server_config(&scratch, a.address(), b.address(), fallback.address());
    let gateway = Served::bind(parse(&scratch, &text)).await;
    let addr = gateway.addr;

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let answers = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failures, answers) = (stop.clone(), failures.clone(), answers.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let reply = within(
                        REQUEST_LIMIT,
                        "a GET",
                        get(addr, "t.test", "/whoami.php?ms=10"),
                    )
                    .await;
                    if reply.status == StatusCode::OK {
                        *answers.lock().unwrap().entry(reply.text()).or_default() += 1;
                    } else {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", reply.status, reply.text()));
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill().expect("kill a");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        within(SOON, "a load task", task).await.expect("no panic");
    }
    assert_eq!(*failures.lock().unwrap(), Vec::<String>::new());
    assert!(answers.lock().unwrap().get("b").copied().unwrap_or(0) > 0);

    // Marked down (fails × interval = 400 ms, long past).
    let down = server_state(&gateway, "main", a.address());
    assert!(!down.healthy, "{down:?}");
    assert!(down.failures + down.checks_failed > 0, "{down:?}");

    a.restart().expect("restart a");
    eventually(SOON, || server_state(&gateway, "main", a.address()).healthy).await;
    let mut back = false;
    for _ in 0..40 {
        // Four at once: more than either server alone would be chosen for.
        let answers = tokio::join!(
            whoami(addr, "t.test", "?ms=20"),
            whoami(addr, "t.test", "?ms=20"),
            whoami(addr, "t.test", "?ms=20"),
            whoami(addr, "t.test", "?ms=20")
        );
        if [answers.0, answers.1, answers.2, answers.3].contains(&"a".to_owned()) {
            back = true;
            break;
        }
    }
    assert!(back, "a is not used again after it came back");
}

/// A script that logs each POST's `id` with its PHP-FPM's name to `log` as it starts,
/// then sleeps `?ms=N` and prints the name.
fn post_logger(log: &std::path::Path) -> String {
    format!(
        "<?php\n$id = $_POST['id'] ?? 'none';\n\
         file_put_contents({log:?}, $id . ' ' . getenv('FPM_NAME') . \"\\n\", FILE_APPEND | LOCK_EX);\n\
         usleep(((int) ($_GET['ms'] ?? 0)) * 1000);\n\
         header('Content-Type: text/plain');\necho getenv('FPM_NAME');\n",
        log = log.display().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_server_dies_under_it_is_never_replayed_on_another() {
    let (mut a, b, fallback) = (
        named_fpm("a", 4),
        named_fpm("b", 4),
        named_fpm("fallback", 1),
    );
    let scratch = scratch();
    let log = scratch.path("posts.log");
    std::fs::write(&log, "").expect("posts.log");
    std::fs::write(scratch.path("app/post.php"), post_logger(&log)).expect("post.php");
    let text = two_server_config(&scratch, a.address(), b.address(), fallback.address());
    let gateway = Served::bind(parse(&scratch, &text)).await;
    let addr = gateway.addr;

    // Eight slow POSTs at once: both servers' four workers busy with them.
    let posts: Vec<_> = (0..8)
        .map(|id| {
            tokio::spawn(async move {
                let req = http::Request::post("/post.php?ms=1500")
                    .header(http::header::HOST, "t.test")
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                        "id=post{id}"
                    ))))
                    .expect("request");
                let reply = support::multi_tenant::send_to(addr, req).await;
                (format!("post{id}"), reply.status, reply.text())
            })
        })
        .collect();
    // Every POST has started on its server before `a` dies under them.
    eventually(SOON, || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.lines().count() == 8)
    })
    .await;
    a.kill().expect("kill a");
    let mut answers = Vec::new();
    for post in posts {
        answers.push(within(SOON, "a POST", post).await.expect("no panic"));
    }

    let logged = std::fs::read_to_string(&log).expect("posts.log");
    let mut runs = HashMap::<String, Vec<String>>::new();
    for line in logged.lines() {
        let (id, server) = line.split_once(' ').expect("id and server");
        runs.entry(id.to_owned())
            .or_default()
            .push(server.to_owned());
    }
    for (id, status, body) in &answers {
        let ran = runs.get(id).cloned().unwrap_or_default();
        assert_eq!(ran.len(), 1, "{id} ran {ran:?} (answered {status} {body})");
        if ran[0] == "a" {
            // Its server died with its body sent: an error, never a second run on b.
            assert!(status.is_server_error(), "{id} on a: {status} {body}");
        } else {
            assert_eq!((*status, body.as_str()), (StatusCode::OK, "b"), "{id}");
        }
    }
    let on_a = answers
        .iter()
        .filter(|(id, _, _)| runs[id][0] == "a")
        .count();
    assert!(on_a > 0, "no POST was on a when it died: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_servers_down_is_a_502_at_once() {
    let (mut a, mut b, fallback) = (
        named_fpm("a", 1),
        named_fpm("b", 1),
        named_fpm("fallback", 1),
    );
    let scratch = scratch();
    let text = two_server_config(&scratch, a.address(), b.address(), fallback.address());
    let gateway = Served::bind(parse(&scratch, &text)).await;
    assert!(["a", "b"].contains(&whoami(gateway.addr, "t.test", "").await.as_str()));
    a.kill().expect("kill a");
    b.kill().expect("kill b");
    eventually(SOON, || {
        !server_state(&gateway, "main", a.address()).healthy
            && !server_state(&gateway, "main", b.address()).healthy
    })
    .await;
    let started = Instant::now();
    let reply = within(
        REQUEST_LIMIT,
        "a GET",
        get(gateway.addr, "t.test", "/whoami.php"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    // queue_timeout is 20 s: the answer did not wait for it.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Sends `clients` × `each` GETs of `whoami.php?ms=10` to `t.test`, `clients` at a time,
/// and counts which PHP-FPM answered.
async fn spread(addr: SocketAddr, clients: usize, each: usize) -> HashMap<String, usize> {
    let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let counts = counts.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    let name = whoami(addr, "t.test", "?ms=10").await;
                    *counts.lock().unwrap().entry(name).or_default() += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        within(Duration::from_secs(60), "a load task", task)
            .await
            .expect("no panic");
    }
    let counts = counts.lock().unwrap().clone();
    counts
}

/// `[upstreams.main]` over `a` and `b` (each entry's extra keys given) and a tenant on it.
fn weighted_config(scratch: &Scratch, fallback: &FpmAddress, a: String, b: String) -> String {
    config_text(
        scratch,
        fallback,
        &format!(
            "[upstreams.main]\nservers = [{a}, {b}]\n\n[tenants.t]\nhosts = [\"t.test\"]\nupstream = \"main\"\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_shift_the_share_between_servers() {
    let (a, b, fallback) = (
        named_fpm("a", 4),
        named_fpm("b", 4),
        named_fpm("fallback", 1),
    );
    let scratch = scratch();
    let text = weighted_config(
        &scratch,
        fallback.address(),
        server(a.address(), ", max_connections = 4"),
        server(b.address(), ", max_connections = 4, weight = 3"),
    );
    let gateway = Served::bind(parse(&scratch, &text)).await;
    // Four clients never fill either bound, so the choice is the weights' alone.
    let counts = spread(gateway.addr, 4, 25).await;
    let (on_a, on_b) = (
        counts.get("a").copied().unwrap_or(0),
        counts.get("b").copied().unwrap_or(0),
    );
    assert_eq!(on_a + on_b, 100);
    // Weight 3 against 1: about three quarters; well above half in any case.
    assert!(on_b >= 60, "weight 3 against 1: a {on_a}, b {on_b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_servers_bound_holds_under_more_clients_than_all_bounds() {
    let (a, b, fallback) = (
        named_fpm("a", 4),
        named_fpm("b", 4),
        named_fpm("fallback", 1),
    );
    let relay_a = CountingRelay::start(a.address().clone()).expect("relay a");
    let relay_b = CountingRelay::start(b.address().clone()).expect("relay b");
    let scratch = scratch();
    let text = weighted_config(
        &scratch,
        fallback.address(),
        server(&relay_a.address(), ", max_connections = 2"),
        server(&relay_b.address(), ", max_connections = 1, weight = 3"),
    );
    let gateway = Served::bind(parse(&scratch, &text)).await;
    let counts = spread(gateway.addr, 8, 10).await;
    assert_eq!(counts.values().sum::<usize>(), 80);
    // Eight clients against bounds of 2 and 1 (PHP-FPM has 4 workers each): each bound
    // was reached and never passed, whatever the weight.
    assert_eq!(relay_a.max_concurrent(), 2);
    assert_eq!(relay_b.max_concurrent(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_a_tenant_to_another_upstream_and_keeps_unchanged_pools() {
    let (a, b, fallback) = (
        named_fpm("a", 2),
        named_fpm("b", 2),
        named_fpm("fallback", 1),
    );
    let relay_a = CountingRelay::start(a.address().clone()).expect("relay a");
    let scratch = scratch();
    let upstreams = format!(
        "[upstreams.main]\nservers = [{}]\n\n[upstreams.big]\nservers = [{}]\n\n",
        server(&relay_a.address(), ""),
        server(b.address(), ""),
    );
    let tenants = |t_on: &str| {
        format!(
            "[tenants.t]\nhosts = [\"t.test\"]\nupstream = \"{t_on}\"\n\n\
             [tenants.stay]\nhosts = [\"stay.test\"]\nupstream = \"main\"\n"
        )
    };
    let before = config_text(
        &scratch,
        fallback.address(),
        &format!("{upstreams}{}", tenants("main")),
    );
    let gateway = Served::bind(parse(&scratch, &before)).await;
    assert_eq!(whoami(gateway.addr, "t.test", "").await, "a");
    assert_eq!(whoami(gateway.addr, "stay.test", "").await, "a");
    let connections = relay_a.total_connections();

    let after = config_text(
        &scratch,
        fallback.address(),
        &format!("{upstreams}{}", tenants("big")),
    );
    gateway
        .state
        .apply(parse(&scratch, &after))
        .expect("reload applies");
    assert_eq!(whoami(gateway.addr, "t.test", "").await, "b");
    // `main` did not change: its pool, and the connection it kept, carried over.
    assert_eq!(whoami(gateway.addr, "stay.test", "").await, "a");
    assert_eq!(relay_a.total_connections(), connections);

    // A request in flight on `big` when `big` is removed finishes on it.
    let addr = gateway.addr;
    let slow = tokio::spawn(async move { whoami(addr, "t.test", "?ms=700").await });
    eventually(SOON, || {
        server_state(&gateway, "big", b.address()).in_use == 1
    })
    .await;
    let without_big = config_text(
        &scratch,
        fallback.address(),
        &format!(
            "[upstreams.main]\nservers = [{}]\n\n{}",
            server(&relay_a.address(), ""),
            tenants("main")
        ),
    );
    gateway
        .state
        .apply(parse(&scratch, &without_big))
        .expect("reload applies");
    assert_eq!(whoami(gateway.addr, "t.test", "").await, "a");
    assert_eq!(
        within(SOON, "the slow request", slow)
            .await
            .expect("no panic"),
        "b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_server_list_keeps_the_connections_of_unchanged_servers() {
    let (a, b, fallback) = (
        named_fpm("a", 2),
        named_fpm("b", 2),
        named_fpm("fallback", 1),
    );
    let relay_a = CountingRelay::start(a.address().clone()).expect("relay a");
    let relay_b = CountingRelay::start(b.address().clone()).expect("relay b");
    let scratch = scratch();
    let with = |servers: &[FpmAddress]| {
        let list: Vec<String> = servers.iter().map(|s| server(s, "")).collect();
        let rest = format!(
            "[upstreams.main]\nservers = [{}]\n\n\
             [tenants.t]\nhosts = [\"t.test\"]\nupstream = \"main\"\n",
            list.join(", ")
        );
        parse(&scratch, &config_text(&scratch, fallback.address(), &rest))
    };
    let gateway = Served::bind(with(&[relay_a.address()])).await;
    let addr = gateway.addr;
    assert_eq!(whoami(addr, "t.test", "").await, "a");

    // A second server joins while a request is in flight on `a` (on the connection the
    // first request left): that connection carries over when the request ends.
    let slow = tokio::spawn(async move { whoami(addr, "t.test", "?ms=500").await });
    eventually(SOON, || {
        server_state(&gateway, "main", &relay_a.address()).in_use == 1
    })
    .await;
    gateway
        .state
        .apply(with(&[relay_a.address(), relay_b.address()]))
        .expect("reload applies");
    assert_eq!(
        within(SOON, "the slow request", slow)
            .await
            .expect("no panic"),
        "a"
    );
    let mut answered = Vec::new();
    for _ in 0..6 {
        answered.push(whoami(addr, "t.test", "").await);
    }
    assert!(
        answered.iter().any(|s| s == "a") && answered.iter().any(|s| s == "b"),
        "both servers serve: {answered:?}"
    );
    assert_eq!(
        relay_a.total_connections(),
        1,
        "a's connection, busy during the reload, carried over and was reused"
    );
    assert_eq!(relay_b.total_connections(), 1);

    // `a` is removed while a request is in flight on each server: a's connection closes
    // when its request ends, b's carries over.
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { whoami(addr, "t.test", "?ms=500").await }))
        .collect();
    eventually(SOON, || {
        server_state(&gateway, "main", &relay_a.address()).in_use == 1
            && server_state(&gateway, "main", &relay_b.address()).in_use == 1
    })
    .await;
    gateway
        .state
        .apply(with(&[relay_b.address()]))
        .expect("reload applies");
    let mut finished = Vec::new();
    for request in slow {
        finished.push(
            within(SOON, "a slow request", request)
                .await
                .expect("no panic"),
        );
    }
    finished.sort();
    assert_eq!(
        finished,
        ["a", "b"],
        "requests in flight finish where they were"
    );
    assert!(
        relay_a.wait_for_current(0, SOON),
        "the removed server's connection is closed once its request ended"
    );
    for _ in 0..3 {
        assert_eq!(whoami(addr, "t.test", "").await, "b");
    }
    assert_eq!(
        relay_b.total_connections(),
        1,
        "b's connection carried over"
    );
    assert_eq!(relay_a.total_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_admin_api_show_each_servers_state() {
    let (a, b, fallback) = (
        named_fpm("a", 2),
        named_fpm("b", 2),
        named_fpm("fallback", 1),
    );
    let scratch = scratch();
    let text = two_server_config(&scratch, a.address(), b.address(), fallback.address());
    let gateway = Served::bind(parse(&scratch, &text)).await;
    for _ in 0..4 {
        whoami(gateway.addr, "t.test", "").await;
    }
    let admin = gateway.admin.expect("an admin listener");
    let metrics = within(
        REQUEST_LIMIT,
        "GET /metrics",
        get(admin, "localhost", "/metrics"),
    )
    .await;
    assert_eq!(metrics.status, StatusCode::OK);
    let parsed = support::prometheus::parse(&metrics.text())
        .unwrap_or_else(|err| panic!("{err}\n{}", metrics.text()));
    for fpm in [&a, &b] {
        let labels = [
            ("upstream", "main"),
            ("server", &*fpm.address().to_upstream_string()),
        ];
        assert_eq!(
            parsed.value("gateway_upstream_server_healthy", &labels),
            1.0
        );
        assert_eq!(
            parsed.value("gateway_upstream_server_max_connections", &labels),
            4.0
        );
        assert_eq!(
            parsed.value("gateway_upstream_server_failures_total", &labels),
            0.0
        );
    }
    assert_eq!(
        parsed.value("gateway_upstream_queue_length", &[("upstream", "main")]),
        0.0
    );
    let idle: f64 = [&a, &b]
        .iter()
        .map(|fpm| {
            parsed.value(
                "gateway_upstream_server_connections_idle",
                &[
                    ("upstream", "main"),
                    ("server", &*fpm.address().to_upstream_string()),
                ],
            )
        })
        .sum();
    assert!(idle >= 1.0, "the connections used are kept: {idle}");

    let upstreams = within(
        REQUEST_LIMIT,
        "GET /upstreams",
        get(admin, "localhost", "/upstreams"),
    )
    .await
    .json();
    let main = upstreams
        .as_array()
        .expect("a list")
        .iter()
        .find(|u| u["name"] == "main")
        .expect("main is listed");
    assert_eq!(main["queued"], 0);
    let servers = main["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2);
    assert!(servers
        .iter()
        .all(|s| s["healthy"] == true && s["max_connections"] == 4));
    assert_eq!(upstreams[0]["name"], "[fastcgi]");
}
