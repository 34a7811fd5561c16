//! The fleet end to end: two gateways in one test sharing a private PostgreSQL 15
//! (registry and usage ledger) and a real PHP-FPM. A change through one gateway's admin
//! API is served by the other within a fraction of a second; the other's listening
//! connection killed or blackholed still converges; concurrent writers get 412 / 409 from
//! the database; an invalid registry never replaces a good one; PostgreSQL down under
//! load loses no request, a cold start comes up from the snapshot file, and the ledger
//! ends up equal to what the client counted; shipments are idempotent.
//!
//! Skipped, with a message, where PostgreSQL is not installed
//! (`scripts/ensure-php-fpm.sh --with-postgres`).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fpm_harness::{fixtures_dir, CountingRelay, Fpm, FpmAddress, FpmConfig, Postgres};
use gateway::config::{Config, UsageShipping};
use gateway::fleet::ship::{ShipError, Shipment, Shipper};
use gateway::usage::TenantUsage;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::live::{toml_string, Conn};
use support::multi_tenant::send_to;
use support::pebble::until;
use support::{eventually, start_fpm, Reply, Served, SOON};

/// A private PostgreSQL with the fleet schema, or `None` (the test is skipped) where
/// PostgreSQL is not installed.
async fn postgres_or_skip(test: &str) -> Option<Postgres> {
    if let Err(err) = fpm_harness::postgres_bin_dir() {
        eprintln!("SKIPPED {test}: {err}");
        return None;
    }
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("start task")
        .expect("PostgreSQL starts");
    let (mut client, _notes) = gateway::fleet::connect(&pg.conn_string())
        .await
        .expect("connect to the private PostgreSQL");
    let (before, after) = gateway::fleet::schema::migrate(&mut client)
        .await
        .expect("migrate");
    assert_eq!(
        (before, after),
        (0, gateway::fleet::schema::current_version())
    );
    // A second run finds nothing to do.
    let again = gateway::fleet::schema::migrate(&mut client).await.unwrap();
    assert_eq!(again.0, again.1);
    Some(pg)
}

/// How one gateway of the fleet is configured.
struct Member<'a> {
    name: &'a str,
    /// The registry's connection string (PostgreSQL's, or a relay's in front of it).
    registry: String,
    /// `[usage] postgres`, when it ships usage.
    ledger: Option<String>,
}

/// Writes `DIR/<name>.toml` for a fleet member.
fn write_config(dir: &Path, fpm: &Fpm, member: &Member) -> PathBuf {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n\
         [fastcgi]\nupstream = {}\nroot = {}\n\n\
         [registry]\npostgres = {}\nsnapshot_file = \"{name}-registry.json\"\ncheck_interval = \"1s\"\n",
        toml_string(fpm.address().to_upstream_string()),
        toml_string(fixtures_dir().display()),
        toml_string(&member.registry),
        name = member.name,
    );
    if let Some(ledger) = &member.ledger {
        text.push_str(&format!(
            "\n[usage]\ndatabase = \"{name}-usage.db\"\nflush_interval = \"200ms\"\npostgres = {}\ngateway_id = \"{name}\"\n",
            toml_string(ledger),
            name = member.name,
        ));
    }
    let path = dir.join(format!("{}.toml", member.name));
    std::fs::write(&path, text).expect("write config");
    path
}

/// What a fleet test runs its gateways with: a real PHP-FPM, and a directory for their
/// configs, snapshot files and usage databases.
struct Site {
    fpm: Fpm,
    dir: tempfile::TempDir,
}

impl Site {
    fn new(workers: u32) -> Site {
        Site {
            fpm: start_fpm(FpmConfig::new().workers(workers)),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes member `name`'s config: the registry at `registry`, usage shipped to
    /// `ledger` if given.
    fn config(&self, name: &str, registry: &str, ledger: Option<&str>) -> PathBuf {
        write_config(
            self.dir.path(),
            &self.fpm,
            &Member {
                name,
                registry: registry.to_owned(),
                ledger: ledger.map(str::to_owned),
            },
        )
    }

    /// Starts member `name`, reading the registry at `registry`, shipping no usage.
    async fn member(&self, name: &str, registry: &str) -> Served {
        start(&self.config(name, registry, None)).await
    }
}

async fn start(path: &Path) -> Served {
    let config = Config::load(path).unwrap_or_else(|err| panic!("config: {err}"));
    Served::bind(config).await
}

/// An admin API call; `body` as JSON, `if_match` as an `If-Match` header.
async fn admin(
    gw: &Served,
    method: &str,
    target: &str,
    body: Option<serde_json::Value>,
    if_match: Option<&str>,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(target)
        .header("host", "admin");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    let body = Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default()));
    send_to(gw.admin.expect("admin listener"), req.body(body).unwrap()).await
}

fn tenant(host: &str, marker: &str) -> serde_json::Value {
    json!({ "hosts": [host], "params": { "MARKER": marker, "DBPASS": "s3cret" } })
}

/// `PUT /tenants/{name}` of [`tenant`]`(host, marker)` through `gw`, without `If-Match`.
async fn put_tenant(gw: &Served, name: &str, host: &str, marker: &str) -> Reply {
    admin(
        gw,
        "PUT",
        &format!("/tenants/{name}"),
        Some(tenant(host, marker)),
        None,
    )
    .await
}

/// The `MARKER` param `gw` serves for tenant `name`, if it serves it.
fn served_marker(gw: &Served, name: &str) -> Option<String> {
    gw.state
        .load()
        .config
        .tenants
        .get(name)
        .and_then(|t| t.params.get("MARKER").cloned())
}

/// What PHP-FPM receives as `MARKER` through `addr` for `host`.
async fn php_marker(addr: SocketAddr, host: &str) -> String {
    let reply = Conn::new(addr)
        .get(host, "/params.php?only=MARKER")
        .await
        .unwrap_or_else(|err| panic!("GET {host}: {err}"));
    assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text());
    reply.text()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_put_through_one_gateway_is_served_by_the_other_within_250ms_p99() {
    let Some(pg) = postgres_or_skip("propagation").await else {
        return;
    };
    let site = Site::new(2);
    let conn = pg.conn_string();
    let a = site.member("a", &conn).await;
    let b = site.member("b", &conn).await;

    let created = put_tenant(&a, "shop", "shop.test", "v0").await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let etag = created.header("etag").expect("ETag").to_owned();
    // A answered once it served the commit; B follows on the notification.
    assert_eq!(php_marker(a.addr, "shop.test").await, "v0");
    assert!(
        eventually(SOON, || served_marker(&b, "shop").as_deref() == Some("v0")).await,
        "B never served the tenant created through A"
    );
    assert_eq!(php_marker(b.addr, "shop.test").await, "v0");
    // B shows the same version as its ETag, and its secret masked.
    let shown = admin(&b, "GET", "/tenants/shop", None, None).await;
    assert_eq!(shown.header("etag"), Some(etag.as_str()));
    assert_eq!(shown.json()["params"]["DBPASS"], "***");

    let mut lags = Vec::with_capacity(100);
    for i in 1..=100 {
        let marker = format!("v{i}");
        let sent = Instant::now();
        let reply = put_tenant(&a, "shop", "shop.test", &marker).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        // From before the commit (the PUT was sent) until B serves it: an upper bound
        // of commit-to-served.
        loop {
            if served_marker(&b, "shop").as_deref() == Some(marker.as_str()) {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "B never served {marker}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lags.push(sent.elapsed());
    }
    assert_eq!(php_marker(b.addr, "shop.test").await, "v100");
    lags.sort();
    let (p50, p99, max) = (
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags[lags.len() - 1],
    );
    eprintln!(
        "fleet propagation over 100 changes (PUT on A sent → served by B): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert!(p99 <= Duration::from_millis(250), "p99 {p99:?} over 250 ms");

    // A delete goes everywhere too.
    let deleted = admin(&a, "DELETE", "/tenants/shop", None, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());
    assert!(eventually(SOON, || served_marker(&b, "shop").is_none()).await);
    let gone = Conn::new(b.addr)
        .get("shop.test", "/hello.php")
        .await
        .unwrap();
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    // Health and metrics report the registry.
    let health = admin(&b, "GET", "/healthz", None, None).await.json();
    assert_eq!(health["registry"]["state"], "connected", "{health}");
    let version = health["registry"]["version"].as_i64().unwrap();
    assert!(version >= 102, "{health}");
    let metrics = admin(&b, "GET", "/metrics", None, None).await.text();
    assert!(
        metrics.contains("gateway_registry_connected 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("gateway_registry_version {version}")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_or_blackholed_listen_connection_converges() {
    let Some(pg) = postgres_or_skip("listener outage").await else {
        return;
    };
    let site = Site::new(2);
    // B reaches PostgreSQL over TCP through a relay (to the Unix socket), and names its
    // sessions, so the test can find them.
    let relay = CountingRelay::start(FpmAddress::Unix(pg.socket_path())).unwrap();
    let via_relay = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres application_name=fleet-b",
        relay.addr().port()
    );
    let a = site.member("a", &pg.conn_string()).await;
    let b = site.member("b", &via_relay).await;
    let put = put_tenant(&a, "shop", "shop.test", "before").await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    assert!(
        eventually(SOON, || served_marker(&b, "shop").as_deref()
            == Some("before"))
        .await
    );

    // 1. PostgreSQL terminates B's listening session; the tenant changes meanwhile.
    let (client, _notes) = gateway::fleet::connect(&pg.conn_string()).await.unwrap();
    let killed = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'fleet-b'",
            &[],
        )
        .await
        .unwrap();
    assert!(!killed.is_empty(), "B has a session to kill");
    // The change is made once B has noticed: it reaches B only by the re-read that
    // follows a reconnect.
    let noticed = until(SOON, async || {
        let health = admin(&b, "GET", "/healthz", None, None).await.json();
        health["registry"]["disconnects"].as_u64() >= Some(1)
    })
    .await;
    assert!(noticed, "B did not notice its session was terminated");
    let put = put_tenant(&a, "shop", "shop.test", "after-kill").await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    let t0 = Instant::now();
    assert!(
        eventually(SOON, || served_marker(&b, "shop").as_deref()
            == Some("after-kill"))
        .await,
        "B did not converge after its session was terminated"
    );
    eprintln!(
        "listen session terminated: B converged in {:?}",
        t0.elapsed()
    );
    assert_eq!(php_marker(b.addr, "shop.test").await, "after-kill");
    let health = admin(&b, "GET", "/healthz", None, None).await.json();
    assert!(
        health["registry"]["disconnects"].as_u64().unwrap() >= 1,
        "{health}"
    );

    // 2. B's connection silently blackholed (no RST, no FIN): only the periodic check
    // (1 s here) can tell. The tenant changes meanwhile.
    assert!(relay.blackhole_all() >= 1);
    let put = put_tenant(&a, "shop", "shop.test", "after-blackhole").await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    let t0 = Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || {
            served_marker(&b, "shop").as_deref() == Some("after-blackhole")
        })
        .await,
        "B did not converge after its connection was blackholed"
    );
    eprintln!(
        "listen connection blackholed: B converged in {:?} (check_interval 1 s)",
        t0.elapsed()
    );
    assert_eq!(php_marker(b.addr, "shop.test").await, "after-blackhole");
    // Served throughout from the last good registry.
    assert_eq!(php_marker(a.addr, "shop.test").await, "after-blackhole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_get_one_412_and_the_same_new_host_one_409() {
    let Some(pg) = postgres_or_skip("concurrent writers").await else {
        return;
    };
    let site = Site::new(2);
    let a = site.member("a", &pg.conn_string()).await;
    let b = site.member("b", &pg.conn_string()).await;
    let put = put_tenant(&a, "shop", "shop.test", "v1").await;
    assert_eq!(put.status, StatusCode::CREATED);
    let etag = put.header("etag").unwrap().to_owned();
    assert!(eventually(SOON, || served_marker(&b, "shop").is_some()).await);

    // The version to edit from: the last committed one (a gateway's own view may lag
    // the other's commit by a few milliseconds).
    let mut tag = etag.clone();
    for round in 0..5 {
        let on_a = admin(
            &a,
            "PUT",
            "/tenants/shop",
            Some(tenant("shop.test", &format!("a{round}"))),
            Some(&tag),
        );
        let on_b = admin(
            &b,
            "PUT",
            "/tenants/shop",
            Some(tenant("shop.test", &format!("b{round}"))),
            Some(&tag),
        );
        let (on_a, on_b) = tokio::join!(on_a, on_b);
        let mut statuses = [on_a.status.as_u16(), on_b.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [200, 412], "{} / {}", on_a.text(), on_b.text());
        let winner = if on_a.status == StatusCode::OK {
            &on_a
        } else {
            &on_b
        };
        tag = winner.header("etag").unwrap().to_owned();
        let loser = if on_a.status == StatusCode::PRECONDITION_FAILED {
            &on_a
        } else {
            &on_b
        };
        assert_eq!(loser.json()["error"], "precondition_failed");
    }
    // A stale ETag is refused; so is one for a tenant that does not exist.
    let stale = admin(
        &b,
        "PUT",
        "/tenants/shop",
        Some(tenant("shop.test", "x")),
        Some(&etag),
    )
    .await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.text()
    );

    for round in 0..3 {
        let host = format!("same{round}.test");
        let (left, right) = (
            format!("/tenants/left{round}"),
            format!("/tenants/right{round}"),
        );
        let on_a = admin(&a, "PUT", &left, Some(tenant(&host, "l")), None);
        let on_b = admin(&b, "PUT", &right, Some(tenant(&host, "r")), None);
        let (on_a, on_b) = tokio::join!(on_a, on_b);
        let mut statuses = [on_a.status.as_u16(), on_b.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "{} / {}", on_a.text(), on_b.text());
    }
    // Both gateways agree on who has each host.
    assert!(
        eventually(SOON, || {
            let (sa, sb) = (a.state.load(), b.state.load());
            sa.config.tenants.keys().eq(sb.config.tenants.keys())
        })
        .await
    );
    assert_eq!(a.state.load().config.tenants.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_registry_never_replaces_the_one_in_service() {
    let Some(pg) = postgres_or_skip("invalid registry").await else {
        return;
    };
    let site = Site::new(2);
    let a = site.member("a", &pg.conn_string()).await;
    let put = put_tenant(&a, "shop", "shop.test", "good").await;
    assert_eq!(put.status, StatusCode::CREATED);
    // The admin API refuses what would not validate, before writing anything.
    let bad = admin(
        &a,
        "PUT",
        "/tenants/bad",
        Some(json!({ "hosts": ["bad.test"], "upstream": "nowhere" })),
        None,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text());
    let served = a.state.load().config.tenants.len();

    // A row written behind the gateway's back: a tenant with an unknown field.
    let (mut client, _notes) = gateway::fleet::connect(&pg.conn_string()).await.unwrap();
    let tx = client.transaction().await.unwrap();
    let version: i64 = tx
        .query_one(
            "UPDATE registry_version SET version = version + 1 RETURNING version",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tx.execute(
        "INSERT INTO tenants (name, spec, version) VALUES ('broken', '{\"hosts\": [\"b.test\"], \"max_concurency\": 3}', $1)",
        &[&version],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let rejected = until(SOON, async || {
        let health = admin(&a, "GET", "/healthz", None, None).await.json();
        health["registry"]["rejected"].as_u64() >= Some(1)
    })
    .await;
    assert!(rejected, "the broken registry was not reported");
    assert_eq!(a.state.load().config.tenants.len(), served);
    let health = admin(&a, "GET", "/healthz", None, None).await.json();
    assert!(
        health["registry"]["version"].as_i64().unwrap() < version,
        "{health}"
    );
    assert!(
        health["registry"]["last_error"]
            .as_str()
            .unwrap()
            .contains("broken"),
        "{health}"
    );
    assert_eq!(php_marker(a.addr, "shop.test").await, "good");
}

/// The per-tenant counts a client saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counted {
    requests: u64,
    bytes_out: u64,
    ok: u64,
    not_found: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: PostgreSQL down for 10 s under load"]
async fn postgres_down_under_load_loses_no_request_and_the_ledger_equals_the_client() {
    let Some(mut pg) = postgres_or_skip("outage under load").await else {
        return;
    };
    let site = Site::new(4);
    let conn = pg.conn_string();
    let a_path = site.config("a", &conn, Some(&conn));
    let b_path = site.config("b", &conn, Some(&conn));
    let a = start(&a_path).await;
    let b = start(&b_path).await;
    for name in ["alpha", "beta"] {
        let put = admin(
            &a,
            "PUT",
            &format!("/tenants/{name}"),
            Some(tenant(&format!("{name}.test"), name)),
            None,
        )
        .await;
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    }
    assert!(eventually(SOON, || b.state.load().config.tenants.len() == 2).await);

    // The load: requests spread over the live gateways; the test takes the write lock
    // to change which are live, so no request is sent to a gateway being stopped.
    let targets = Arc::new(tokio::sync::RwLock::new(vec![a.addr, b.addr]));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = {
        let targets = targets.clone();
        let running = running.clone();
        tokio::spawn(async move {
            let mut counted: BTreeMap<&'static str, Counted> = BTreeMap::new();
            let mut failures = Vec::new();
            let mut conns: BTreeMap<SocketAddr, Conn> = BTreeMap::new();
            let mut i: u64 = 0;
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                let live = targets.read().await;
                let addr = live[(i as usize) % live.len()];
                let tenant = if i % 3 == 0 { "beta" } else { "alpha" };
                let (path, status, bytes) = if i % 5 == 0 {
                    ("/params.php?only=NO_SUCH_PARAM", StatusCode::NOT_FOUND, 0)
                } else {
                    ("/hello.php", StatusCode::OK, 13)
                };
                let conn = conns.entry(addr).or_insert_with(|| Conn::new(addr));
                match conn.get(&format!("{tenant}.test"), path).await {
                    Ok(reply) if reply.status == status => {
                        let c = counted.entry(tenant).or_default();
                        c.requests += 1;
                        c.bytes_out += bytes;
                        if status == StatusCode::OK {
                            c.ok += 1;
                        } else {
                            c.not_found += 1;
                        }
                    }
                    Ok(reply) => {
                        failures.push(format!("{tenant}{path} via {addr}: {}", reply.status))
                    }
                    Err(err) => failures.push(format!("{tenant}{path} via {addr}: {err}")),
                }
                drop(live);
            }
            (counted, failures)
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let outage = Instant::now();
    pg = tokio::task::spawn_blocking(move || {
        pg.stop().expect("stop PostgreSQL");
        pg
    })
    .await
    .unwrap();
    eprintln!("PostgreSQL stopped");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let health = admin(&b, "GET", "/healthz", None, None).await.json();
    assert_eq!(health["registry"]["state"], "disconnected", "{health}");

    // A is stopped and cold-started while PostgreSQL is down: from its snapshot file.
    targets.write().await.retain(|addr| *addr != a.addr);
    a.stopped(Duration::from_secs(20)).await;
    let a2 = start(&a_path).await;
    assert_eq!(
        a2.state.load().config.tenants.len(),
        2,
        "A restarted from its snapshot file"
    );
    targets.write().await.push(a2.addr);
    let rest = Duration::from_secs(10).saturating_sub(outage.elapsed());
    tokio::time::sleep(rest).await;
    pg = tokio::task::spawn_blocking(move || {
        pg.start_again().expect("restart PostgreSQL");
        pg
    })
    .await
    .unwrap();
    eprintln!("PostgreSQL back after {:?}", outage.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    let (counted, failures) = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // Both reconnect to the registry.
    for gw in [&a2, &b] {
        let connected = until(SOON, async || {
            admin(gw, "GET", "/healthz", None, None).await.json()["registry"]["state"]
                == "connected"
        })
        .await;
        assert!(connected, "a gateway did not reconnect to the registry");
    }
    let usage = admin(&b, "GET", "/usage", None, None).await.json();
    assert!(usage["fleet"].is_array(), "{usage}");
    // Stopping flushes and ships the last counts.
    a2.stopped(Duration::from_secs(20)).await;
    b.stopped(Duration::from_secs(20)).await;

    let (client, _notes) = gateway::fleet::connect(&pg.conn_string()).await.unwrap();
    let rows = gateway::fleet::ship::report(&client, None, None)
        .await
        .unwrap();
    let ledger: BTreeMap<String, TenantUsage> =
        rows.into_iter().map(|r| (r.tenant, r.usage)).collect();
    let total: u64 = counted.values().map(|c| c.requests).sum();
    eprintln!("outage under load: {total} requests through A, A (cold-started) and B, 0 failed; ledger {ledger:?}");
    for (tenant, c) in &counted {
        let got = ledger.get(*tenant).copied().unwrap_or_default();
        assert_eq!(
            (got.requests, got.bytes_out, got.status_2xx, got.status_4xx),
            (c.requests, c.bytes_out, c.ok, c.not_found),
            "{tenant}: ledger vs client"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_reordered_shipment_does_not_double_count_and_an_id_ships_once() {
    let Some(pg) = postgres_or_skip("shipping").await else {
        return;
    };
    let shipping = UsageShipping {
        postgres: pg.conn_string(),
        gateway_id: "gw-1".to_owned(),
    };
    let mut shipper = Shipper::connect(&shipping).await.expect("ships");
    // A second gateway with the same id is refused while the first holds it.
    match Shipper::connect(&shipping).await {
        Err(ShipError::IdInUse(id)) => assert_eq!(id, "gw-1"),
        other => panic!("a second gw-1 was not refused: {other:?}"),
    }
    let state = |requests: u64| {
        let usage = TenantUsage {
            requests,
            bytes_out: requests * 13,
            status_2xx: requests,
            ..TenantUsage::default()
        };
        Shipment {
            tenant: "alpha".to_owned(),
            hour: 1_700_000_000 / 3600 * 3600,
            seq: gateway::fleet::ship::seq_of(&usage),
            usage,
        }
    };
    assert_eq!(shipper.ship(&[state(10)]).await.unwrap(), 1);
    // The reply to that COMMIT was lost: the same shipment is sent again.
    assert_eq!(
        shipper.ship(&[state(10)]).await.unwrap(),
        0,
        "a replay changes nothing"
    );
    assert_eq!(shipper.ship(&[state(25)]).await.unwrap(), 1);
    // An older state arriving late (reordered) changes nothing either.
    assert_eq!(shipper.ship(&[state(10)]).await.unwrap(), 0);
    // Another gateway's totals for the same tenant and hour add up in reports.
    let other = UsageShipping {
        gateway_id: "gw-2".to_owned(),
        ..shipping.clone()
    };
    let mut second = Shipper::connect(&other).await.unwrap();
    assert_eq!(second.ship(&[state(5)]).await.unwrap(), 1);
    let (client, _notes) = gateway::fleet::connect(&pg.conn_string()).await.unwrap();
    let rows = gateway::fleet::ship::report(&client, Some("alpha"), None)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].usage.requests, 30);
    assert_eq!(rows[0].usage.bytes_out, 30 * 13);
    // Once the first gateway is gone its id is free again.
    drop(shipper);
    assert!(
        until(SOON, async || Shipper::connect(&shipping).await.is_ok()).await,
        "gw-1 stayed locked after its session ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_migrates_imports_exports_and_reports_fleet_usage() {
    let Some(pg) = postgres_or_skip("registry CLI").await else {
        return;
    };
    let site = Site::new(2);
    let config = site.config("a", &pg.conn_string(), Some(&pg.conn_string()));
    let single = site.dir.path().join("single.toml");
    std::fs::write(
        &single,
        "# a single machine's tenants\n[tenants.alpha]\nhosts = [\"alpha.test\"]\nparams = { MARKER = \"imported\", DBPORT = 5432 }\n\n\
         [tenants.beta]\nhosts = [\"beta.test\", \"*.beta.test\"]\nenabled = false\n",
    )
    .unwrap();
    let clash = site.dir.path().join("clash.toml");
    std::fs::write(&clash, "[tenants.gamma]\nhosts = [\"ALPHA.test.\"]\n").unwrap();
    let cli = |f: Box<dyn FnOnce() -> Result<String, gateway::cli::CliError> + Send>| {
        tokio::task::spawn_blocking(f)
    };
    let (c1, c2, c3, c4) = (
        config.clone(),
        config.clone(),
        config.clone(),
        config.clone(),
    );
    let (s1, s2) = (single.clone(), clash.clone());
    let migrated = cli(Box::new(move || gateway::cli::registry_migrate(&c1)))
        .await
        .unwrap()
        .unwrap();
    assert!(migrated.contains("current"), "{migrated}");
    let imported = cli(Box::new(move || gateway::cli::registry_import(&c2, &s1)))
        .await
        .unwrap()
        .unwrap();
    assert!(imported.starts_with("imported 2 tenants"), "{imported}");
    // A host taken, once normalised, is refused and nothing is written.
    let refused = cli(Box::new(move || gateway::cli::registry_import(&c3, &s2)))
        .await
        .unwrap();
    let err = refused.unwrap_err().to_string();
    assert!(err.contains("duplicate host"), "{err}");
    let exported = cli(Box::new(move || gateway::cli::registry_export(&c4)))
        .await
        .unwrap()
        .unwrap();
    assert!(
        exported.contains("[tenants.alpha]") && exported.contains("[tenants.beta]"),
        "{exported}"
    );
    assert!(!exported.contains("gamma"), "{exported}");
    let round_trip: toml::Table = toml::from_str(&exported).unwrap();
    assert_eq!(
        round_trip["tenants"]["beta"]["enabled"].as_bool(),
        Some(false)
    );

    // A gateway started now serves them.
    let a = start(&config).await;
    assert_eq!(php_marker(a.addr, "alpha.test").await, "imported");
    assert_eq!(
        Conn::new(a.addr)
            .get("beta.test", "/hello.php")
            .await
            .unwrap()
            .status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    for _ in 0..3 {
        let reply = Conn::new(a.addr)
            .get("alpha.test", "/hello.php")
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    a.stopped(Duration::from_secs(20)).await;
    // `gateway usage` reads the ledger the gateway shipped to at shutdown.
    let c5 = config.clone();
    let report = cli(Box::new(move || {
        gateway::cli::usage_report(&c5, None, None, gateway::cli::ReportFormat::Json)
    }))
    .await
    .unwrap()
    .unwrap();
    let rows: serde_json::Value = serde_json::from_str(&report).unwrap();
    let alpha = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tenant"] == "alpha")
        .unwrap();
    assert_eq!(alpha["requests"], 4, "{report}");
}

/// Runs a CLI command (synchronous: it starts a runtime of its own) off the test's.
async fn run_cli<F>(command: F) -> Result<String, gateway::cli::CliError>
where
    F: FnOnce() -> Result<String, gateway::cli::CliError> + Send + 'static,
{
    tokio::task::spawn_blocking(command)
        .await
        .expect("CLI task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_cli_writes_the_fleet_registry_with_versions_and_leaves_the_file() {
    let Some(pg) = postgres_or_skip("tenant CLI in a fleet").await else {
        return;
    };
    let site = Site::new(2);
    let config = site.config("a", &pg.conn_string(), None);
    let file_before = std::fs::read(&config).unwrap();
    let a = start(&config).await;

    // `tenants add` creates the tenant in PostgreSQL; the running gateway serves it.
    let path = config.clone();
    let added = run_cli(move || {
        gateway::cli::tenants_add(
            &path,
            "shop",
            vec!["Shop.test".to_owned()],
            vec![
                ("MARKER".to_owned(), "from-cli".to_owned()),
                ("DBPASS".to_owned(), "s3cret".to_owned()),
            ],
            true,
            None,
            gateway::cli::Placement::default(),
        )
    })
    .await
    .unwrap();
    assert!(
        added.starts_with("added tenant \"shop\" (shop.test, 2 params, enabled) to the fleet registry as version "),
        "{added}"
    );
    assert!(!added.contains("s3cret"), "{added}");
    assert!(
        eventually(SOON, || served_marker(&a, "shop").as_deref()
            == Some("from-cli"))
        .await,
        "the gateway never served the tenant the CLI added"
    );
    assert_eq!(php_marker(a.addr, "shop.test").await, "from-cli");

    // `check` validates the registry's tenants with the file, as the gateways build them.
    let path = config.clone();
    let checked = run_cli(move || gateway::cli::check(&path)).await.unwrap();
    assert!(
        checked.contains("registry: PostgreSQL, version ") && checked.contains("shop: shop.test"),
        "{checked}"
    );

    // `list` and `show` read the registry; `show` prints the version to edit from.
    let path = config.clone();
    let listed = run_cli(move || gateway::cli::tenants_list(&path, false))
        .await
        .unwrap();
    assert!(
        listed.contains("shop") && listed.contains("shop.test"),
        "{listed}"
    );
    let path = config.clone();
    let shown = run_cli(move || gateway::cli::tenants_show(&path, "shop", true))
        .await
        .unwrap();
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["params"]["DBPASS"], "***");
    let read_version = shown["version"].as_i64().expect("a version in a fleet");
    let path = config.clone();
    let text = run_cli(move || gateway::cli::tenants_show(&path, "shop", false))
        .await
        .unwrap();
    assert!(
        text.contains(&format!("version:         {read_version} ")),
        "{text}"
    );

    // Someone changes the tenant through the admin API after the CLI's read: an edit
    // made with the version read is refused, and nothing is written.
    let put = put_tenant(&a, "shop", "shop.test", "from-api").await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text());
    let current: i64 = put
        .header("etag")
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap();
    assert!(current > read_version);
    let path = config.clone();
    let err = run_cli(move || gateway::cli::tenants_suspend(&path, "shop", Some(read_version)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            gateway::cli::CliError::FleetWrite(gateway::fleet::WriteError::Precondition { .. })
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("is at version {current}, not {read_version}"))
            && message.contains("someone else changed it"),
        "{message}"
    );
    let store = gateway::fleet::Store::new(&pg.conn_string()).unwrap();
    assert_eq!(store.version_of("shop").await.unwrap(), Some(current));
    let path = config.clone();
    let err = run_cli(move || gateway::cli::tenants_remove(&path, "shop", Some(read_version)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("someone else changed it"), "{err}");
    assert_eq!(store.version_of("shop").await.unwrap(), Some(current));
    assert_eq!(php_marker(a.addr, "shop.test").await, "from-api");

    // With the current version (or none: the version read just before), it goes in.
    let path = config.clone();
    let suspended = run_cli(move || gateway::cli::tenants_suspend(&path, "shop", Some(current)))
        .await
        .unwrap();
    assert!(
        suspended.starts_with("suspended tenant \"shop\" in the fleet registry"),
        "{suspended}"
    );
    assert!(
        until(SOON, async || {
            Conn::new(a.addr)
                .get("shop.test", "/hello.php")
                .await
                .unwrap()
                .status
                == StatusCode::SERVICE_UNAVAILABLE
        })
        .await,
        "the gateway did not serve the suspension"
    );
    let path = config.clone();
    let resumed = run_cli(move || gateway::cli::tenants_resume(&path, "shop", None))
        .await
        .unwrap();
    assert!(resumed.starts_with("resumed tenant \"shop\""), "{resumed}");

    // A host another tenant has: refused by the database, naming the host and its owner.
    let path = config.clone();
    let err = run_cli(move || {
        gateway::cli::tenants_add(
            &path,
            "thief",
            vec!["SHOP.test.".to_owned()],
            vec![],
            true,
            None,
            gateway::cli::Placement::default(),
        )
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            gateway::cli::CliError::FleetWrite(gateway::fleet::WriteError::HostTaken { .. })
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "host \"shop.test\" already belongs to tenant \"shop\""
    );
    assert_eq!(store.version_of("thief").await.unwrap(), None);
    // An unknown upstream is refused before anything is written.
    let path = config.clone();
    let err = run_cli(move || {
        gateway::cli::tenants_add(
            &path,
            "other",
            vec!["other.test".to_owned()],
            vec![],
            true,
            None,
            gateway::cli::Placement {
                upstream: Some("nowhere".to_owned()),
                private_root: None,
            },
        )
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("nowhere"), "{err}");
    assert_eq!(store.version_of("other").await.unwrap(), None);

    let path = config.clone();
    let removed = run_cli(move || gateway::cli::tenants_remove(&path, "shop", None))
        .await
        .unwrap();
    assert!(
        removed.starts_with("removed tenant \"shop\" from the fleet registry"),
        "{removed}"
    );
    assert!(eventually(SOON, || served_marker(&a, "shop").is_none()).await);
    let path = config.clone();
    let err = run_cli(move || gateway::cli::tenants_resume(&path, "shop", None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no tenant \"shop\""), "{err}");

    // In a fleet the file is never written.
    assert_eq!(std::fs::read(&config).unwrap(), file_before);
}

/// A TCP relay to PostgreSQL's Unix socket that reads the server's replies message by
/// message and, once armed, cuts the connection (both ways) in place of forwarding the
/// `CommandComplete` of the next `COMMIT`: the transaction is committed, and the client
/// never learns it (a reply lost after COMMIT).
struct CommitCutter {
    addr: SocketAddr,
    armed: Arc<std::sync::atomic::AtomicBool>,
    /// Connections accepted.
    connections: Arc<std::sync::atomic::AtomicUsize>,
    /// `COMMIT` replies forwarded, and cut.
    commits: Arc<std::sync::atomic::AtomicUsize>,
    cuts: Arc<std::sync::atomic::AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl CommitCutter {
    async fn start(socket: PathBuf) -> CommitCutter {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let commits = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (a, n, c, x) = (
            armed.clone(),
            connections.clone(),
            commits.clone(),
            cuts.clone(),
        );
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                n.fetch_add(1, SeqCst);
                let (socket, armed, commits, cuts) =
                    (socket.clone(), a.clone(), c.clone(), x.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(server) = tokio::net::UnixStream::connect(&socket).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                        let _ = to_server.shutdown().await;
                    });
                    // Server messages: a type byte, then a length that counts itself.
                    loop {
                        let mut header = [0u8; 5];
                        if from_server.read_exact(&mut header).await.is_err() {
                            break;
                        }
                        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                        let mut body = vec![0u8; (len as usize).saturating_sub(4)];
                        if from_server.read_exact(&mut body).await.is_err() {
                            break;
                        }
                        if header[0] == b'C' && body.starts_with(b"COMMIT\0") {
                            if armed.swap(false, SeqCst) {
                                cuts.fetch_add(1, SeqCst);
                                break;
                            }
                            commits.fetch_add(1, SeqCst);
                        }
                        if to_client.write_all(&header).await.is_err()
                            || to_client.write_all(&body).await.is_err()
                        {
                            break;
                        }
                    }
                    // Both sockets closed: the client sees the connection end, and
                    // PostgreSQL ends the session (and its advisory lock).
                    up.abort();
                    let _ = up.await;
                });
            }
        });
        CommitCutter {
            addr,
            armed,
            connections,
            commits,
            cuts,
            accept,
        }
    }

    fn count(counter: &std::sync::atomic::AtomicUsize) -> usize {
        counter.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The ledger's totals for `tenant` (all gateways, all hours), read directly.
async fn ledger_of(pg: &Postgres, tenant: &str) -> TenantUsage {
    let (client, _notes) = gateway::fleet::connect(&pg.conn_string()).await.unwrap();
    gateway::fleet::ship::report(&client, Some(tenant), None)
        .await
        .unwrap()
        .first()
        .map(|row| row.usage)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipment_whose_reply_is_lost_after_commit_is_shipped_again_without_double_counting() {
    let Some(pg) = postgres_or_skip("reply lost after COMMIT").await else {
        return;
    };
    let site = Site::new(2);
    // The shipper reaches the ledger through the cutter; the registry directly.
    let cutter = CommitCutter::start(pg.socket_path()).await;
    let ledger = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        cutter.addr.port()
    );
    let a = start(&site.config("a", &pg.conn_string(), Some(&ledger))).await;
    let put = put_tenant(&a, "alpha", "alpha.test", "alpha").await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    let mut sent = 0u64;
    let mut conn = Conn::new(a.addr);
    let mut send = async |n: u64, sent: &mut u64| {
        for _ in 0..n {
            let reply = conn.get("alpha.test", "/hello.php").await.unwrap();
            assert_eq!(reply.status, StatusCode::OK);
            *sent += 1;
        }
    };

    // Shipped normally first.
    send(5, &mut sent).await;
    assert!(
        until(SOON, async || ledger_of(&pg, "alpha").await.requests == 5).await,
        "the first requests were not shipped"
    );
    let before_cut = CommitCutter::count(&cutter.connections);

    // The next shipment's COMMIT goes through, its reply does not.
    cutter
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    send(7, &mut sent).await;
    assert!(
        eventually(SOON, || CommitCutter::count(&cutter.cuts) == 1).await,
        "no shipment was cut"
    );
    // Committed all the same: the ledger has more than before.
    let committed = ledger_of(&pg, "alpha").await;
    assert!(committed.requests > 5, "{committed:?}");
    let commits_at_cut = CommitCutter::count(&cutter.commits);

    // The shipper reconnects and ships again what it could not know was committed.
    assert!(
        eventually(Duration::from_secs(15), || {
            CommitCutter::count(&cutter.connections) > before_cut
                && CommitCutter::count(&cutter.commits) > commits_at_cut
        })
        .await,
        "the shipper did not reconnect and ship again"
    );
    assert!(
        until(SOON, async || ledger_of(&pg, "alpha").await.requests
            == sent)
        .await,
        "the ledger never reached the {sent} requests sent"
    );
    // Rounds go on; the totals stay exact.
    tokio::time::sleep(Duration::from_millis(600)).await;
    a.stopped(Duration::from_secs(20)).await;
    let got = ledger_of(&pg, "alpha").await;
    assert_eq!(
        (got.requests, got.bytes_out, got.status_2xx),
        (sent, sent * 13, sent),
        "ledger vs client after a lost COMMIT reply: {got:?}"
    );
    eprintln!(
        "reply lost after COMMIT: {} connections, {} COMMITs forwarded, 1 cut; ledger {} requests = {sent} sent",
        CommitCutter::count(&cutter.connections),
        CommitCutter::count(&cutter.commits),
        got.requests
    );
}
