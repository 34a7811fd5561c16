//! Usage metering end to end against a real PHP-FPM: the in-memory meter counts exactly
//! the requests sent, per tenant and status class; the flusher writes the same counts to
//! the SQLite database, on its interval and at shutdown; a restarted gateway adds to
//! them; and `/metrics` renders them as valid Prometheus text.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::sync::Arc;

use fpm_harness::{fixtures_dir, Fpm, FpmConfig};
use gateway::usage::TenantUsage;
use gateway::usage_store::UsageStore;
use http::StatusCode;
use support::live::{toml_string, Conn, LiveGateway, Scratch};
use support::{eventually, start_fpm, SOON};

/// What one tenant is sent, with the answers known in advance.
#[derive(Clone, Copy)]
struct Plan {
    tenant: &'static str,
    /// `GET /hello.php`: 200, 13 bytes.
    hello: u64,
    /// `GET /params.php?only=NO_SUCH_PARAM`: a 404 from PHP, so it did reach PHP-FPM.
    not_found: u64,
    /// `GET /sleep.php?ms=50`: 200 after at least 50 ms in PHP-FPM.
    sleep: u64,
}

const HELLO_BYTES: u64 = "Hello, World!".len() as u64;
const SLEEP_MS: u64 = 50;
const SLEEP_BYTES: u64 = "slept 50".len() as u64;

impl Plan {
    fn host(&self) -> String {
        format!("{}.test", self.tenant)
    }

    fn requests(&self) -> u64 {
        self.hello + self.not_found + self.sleep
    }

    /// Sends the plan in a shuffled-enough order (interleaved), checking each answer.
    async fn send(&self, conn: &mut Conn) {
        let host = self.host();
        let mut left = [self.hello, self.not_found, self.sleep];
        while left.iter().any(|&n| n > 0) {
            for (kind, count) in left.iter_mut().enumerate() {
                if *count == 0 {
                    continue;
                }
                *count -= 1;
                let (path, status) = match kind {
                    0 => ("/hello.php".to_owned(), StatusCode::OK),
                    1 => (
                        "/params.php?only=NO_SUCH_PARAM".to_owned(),
                        StatusCode::NOT_FOUND,
                    ),
                    _ => (format!("/sleep.php?ms={SLEEP_MS}"), StatusCode::OK),
                };
                let reply = conn
                    .get(&host, &path)
                    .await
                    .unwrap_or_else(|err| panic!("GET {host}{path}: {err}"));
                assert_eq!(reply.status, status, "{host}{path}: {}", reply.text());
            }
        }
    }

    /// The counters that must match exactly.
    fn assert_counted(&self, usage: &TenantUsage) {
        let tenant = self.tenant;
        assert_eq!(usage.requests, self.requests(), "{tenant} requests");
        assert_eq!(usage.status_2xx, self.hello + self.sleep, "{tenant} 2xx");
        assert_eq!(usage.status_4xx, self.not_found, "{tenant} 4xx");
        assert_eq!(
            (usage.status_1xx, usage.status_3xx, usage.status_5xx),
            (0, 0, 0),
            "{tenant} other classes"
        );
        assert_eq!(usage.bytes_in, 0, "{tenant}: GETs have no body");
        let slept_us = self.sleep * SLEEP_MS * 1000;
        assert!(
            usage.fpm_time_us >= slept_us,
            "{tenant}: {} us in PHP-FPM, but the scripts slept {slept_us} us",
            usage.fpm_time_us
        );
        let body_bytes = self.hello * HELLO_BYTES + self.sleep * SLEEP_BYTES;
        assert!(
            usage.bytes_out >= body_bytes,
            "{tenant}: {} bytes out, bodies alone are {body_bytes}",
            usage.bytes_out
        );
    }
}

const ALPHA: Plan = Plan {
    tenant: "alpha",
    hello: 7,
    not_found: 3,
    sleep: 2,
};
const BETA: Plan = Plan {
    tenant: "beta",
    hello: 4,
    not_found: 1,
    sleep: 1,
};

/// Both tenants, metering into `usage.db` next to the config every 200 ms.
fn config_text(fpm: &Fpm) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [fastcgi]\nupstream = {}\nroot = {}\n\n\
         [usage]\ndatabase = \"usage.db\"\nflush_interval = \"200ms\"\n\n\
         [tenants.alpha]\nhosts = [\"alpha.test\"]\n\n\
         [tenants.beta]\nhosts = [\"beta.test\"]\n",
        toml_string(fpm.address().to_upstream_string()),
        toml_string(fixtures_dir().display()),
    )
}

/// Sends both plans (and a request for an unknown host, which no tenant pays for), and
/// waits until the meter has counted them: a request is counted when its response body
/// is finished, which the client may see a moment before the server does.
async fn send_plans(gw: &LiveGateway) -> HashMap<Arc<str>, TenantUsage> {
    let mut conn = Conn::new(gw.addr);
    ALPHA.send(&mut conn).await;
    BETA.send(&mut conn).await;
    let stranger = conn.get("nobody.test", "/hello.php").await.unwrap();
    assert_eq!(stranger.status, StatusCode::NOT_FOUND);
    let meter = &gw.state.telemetry.usage;
    let expected = ALPHA.requests() + BETA.requests();
    let counted = || meter.totals().values().map(|u| u.requests).sum::<u64>();
    assert!(
        eventually(SOON, || counted() >= expected).await,
        "the meter counted {} of {expected} requests",
        counted()
    );
    meter.totals()
}

fn assert_totals(totals: &HashMap<Arc<str>, TenantUsage>, plans: &[Plan]) {
    let mut tenants: Vec<&str> = totals.keys().map(|t| &**t).collect();
    tenants.sort_unstable();
    assert_eq!(
        tenants,
        ["alpha", "beta"],
        "only tenants' requests are metered"
    );
    for plan in plans {
        plan.assert_counted(&totals[plan.tenant]);
    }
}

/// The database's totals per tenant, or why they cannot be read (yet).
fn try_stored(scratch: &Scratch) -> Result<BTreeMap<String, TenantUsage>, String> {
    let rows = UsageStore::open_read_only(scratch.path("usage.db"))
        .and_then(|store| store.report(None, None))
        .map_err(|err| err.to_string())?;
    Ok(rows
        .into_iter()
        .map(|row| (row.tenant, row.usage))
        .collect())
}

#[track_caller]
fn stored(scratch: &Scratch) -> BTreeMap<String, TenantUsage> {
    try_stored(scratch).unwrap_or_else(|err| panic!("{err}"))
}

fn by_name(totals: &HashMap<Arc<str>, TenantUsage>) -> BTreeMap<String, TenantUsage> {
    totals.iter().map(|(t, u)| (t.to_string(), *u)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_metered_once_and_survives_a_restart_in_the_database() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let scratch = Scratch::new();
    fs::write(&scratch.config, config_text(&fpm)).unwrap();

    let gw = LiveGateway::start(&scratch.config).await;
    let first = send_plans(&gw).await;
    assert_totals(&first, &[ALPHA, BETA]);
    // The flusher writes on its interval, without waiting for shutdown.
    // (A report on a database not created yet would create nothing and fail; so poll.)
    assert!(
        eventually(SOON, || try_stored(&scratch) == Ok(by_name(&first))).await,
        "the periodic flush did not store the counts: {:?}",
        try_stored(&scratch)
    );
    gw.shutdown().await;
    assert_eq!(stored(&scratch), by_name(&first), "after shutdown");

    // A new process on the same database: its meter starts at zero, the database adds up.
    let gw = LiveGateway::start(&scratch.config).await;
    let second = send_plans(&gw).await;
    assert_totals(&second, &[ALPHA, BETA]);
    gw.shutdown().await;
    let mut both = by_name(&first);
    for (tenant, usage) in by_name(&second) {
        both.entry(tenant).or_default().merge(&usage);
    }
    let stored = stored(&scratch);
    assert_eq!(stored, both, "a restart continues the counts");
    assert_eq!(stored["alpha"].requests, 2 * ALPHA.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_render_the_meter_as_valid_prometheus_text() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let scratch = Scratch::new();
    fs::write(&scratch.config, config_text(&fpm)).unwrap();
    let gw = LiveGateway::start(&scratch.config).await;
    let totals = send_plans(&gw).await;

    let snapshot = gw.state.load();
    let enabled = snapshot
        .registry
        .tenants()
        .iter()
        .filter(|t| t.enabled)
        .count();
    let text = gateway::metrics::render(
        &gw.state.telemetry.usage,
        snapshot.pool_totals(),
        &snapshot.upstream_stats(),
        &gw.reloader.stats,
        enabled,
        snapshot.registry.len() - enabled,
    );
    let metrics = support::prometheus::parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    assert_eq!(
        metrics.types["gateway_request_duration_seconds"],
        "histogram"
    );

    for plan in [ALPHA, BETA] {
        let tenant = plan.tenant;
        let requests = |class| {
            metrics.value(
                "gateway_requests_total",
                &[("tenant", tenant), ("class", class)],
            )
        };
        assert_eq!(requests("2xx"), (plan.hello + plan.sleep) as f64);
        assert_eq!(requests("4xx"), plan.not_found as f64);
        assert_eq!(requests("5xx"), 0.0);
        let fpm_seconds = metrics.value("gateway_fpm_seconds_total", &[("tenant", tenant)]);
        assert!(
            fpm_seconds >= (plan.sleep * SLEEP_MS) as f64 / 1000.0,
            "{fpm_seconds}"
        );
        assert_eq!(
            metrics.value("gateway_bytes_out_total", &[("tenant", tenant)]),
            totals[tenant].bytes_out as f64
        );
        let count = metrics.value(
            "gateway_request_duration_seconds_count",
            &[("tenant", tenant)],
        );
        assert_eq!(count, plan.requests() as f64);
        let inf = metrics.value(
            "gateway_request_duration_seconds_bucket",
            &[("tenant", tenant), ("le", "+Inf")],
        );
        assert_eq!(inf, count, "the +Inf bucket holds every request");
        // The sleeps took at least 50 ms, so at most the others fit under 25 ms.
        let fast = metrics.value(
            "gateway_request_duration_seconds_bucket",
            &[("tenant", tenant), ("le", "0.025")],
        );
        assert!(fast <= (plan.hello + plan.not_found) as f64, "{fast}");
    }
    assert_eq!(
        metrics.value("gateway_tenants", &[("state", "enabled")]),
        2.0
    );
    assert_eq!(
        metrics.value("gateway_tenants", &[("state", "suspended")]),
        0.0
    );
    assert_eq!(
        metrics.value("gateway_config_last_reload_success", &[]),
        1.0
    );
    assert!(metrics.value("gateway_fpm_connections_open", &[]) >= 1.0);
    gw.shutdown().await;
}
