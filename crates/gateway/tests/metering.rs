//! Usage metering end to end against a real PHP-FPM: the in-memory meter counts exactly
//! the requests sent, per tenant and status class; the flusher writes the same counts to
//! the SQLite database, on its interval and at shutdown; a restarted gateway adds to
//! them; and `/metrics` renders them as valid Prometheus text.

mod live_gateway;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::sync::Arc;

use fpm_harness::{fixtures_dir, Fpm};
use gateway::usage::TenantUsage;
use gateway::usage_store::UsageStore;
use http::StatusCode;
use live_gateway::{eventually, start_fpm, toml_string, Conn, LiveGateway, Scratch, SOON};

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
    let fpm = start_fpm(2);
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
    let fpm = start_fpm(2);
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
        snapshot.pool.stats(),
        &gw.reloader.stats,
        enabled,
        snapshot.registry.len() - enabled,
    );
    let metrics = prometheus::parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));

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

/// A strict reader of the Prometheus text exposition format (0.0.4), enough to judge
/// what the gateway writes: comments, metric and label names, label escaping, values,
/// one `TYPE` per family declared before its samples, and histogram consistency.
mod prometheus {
    use std::collections::{BTreeMap, HashMap};

    /// One sample.
    #[derive(Debug)]
    pub struct Sample {
        pub name: String,
        pub labels: BTreeMap<String, String>,
        pub value: f64,
    }

    /// A parsed exposition.
    #[derive(Debug)]
    pub struct Metrics {
        pub samples: Vec<Sample>,
    }

    impl Metrics {
        /// The value of the one sample named `name` with exactly `labels`.
        #[track_caller]
        pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            let wanted: BTreeMap<String, String> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let found: Vec<&Sample> = self
                .samples
                .iter()
                .filter(|s| s.name == name && s.labels == wanted)
                .collect();
            assert_eq!(found.len(), 1, "samples {name}{labels:?}");
            found[0].value
        }
    }

    fn is_name(name: &str, colon: bool) -> bool {
        let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
        let mut chars = name.chars();
        chars.next().is_some_and(ok_first) && chars.all(|c| ok_first(c) || c.is_ascii_digit())
    }

    /// The family a sample belongs to: histogram samples carry a suffix.
    fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
        if types.contains_key(name) {
            return Some(name);
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
        })
    }

    pub fn parse(text: &str) -> Result<Metrics, String> {
        if !text.ends_with('\n') {
            return Err("does not end with a newline".into());
        }
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let fail = |why: &str| Err(format!("line {}: {why}: {line:?}", index + 1));
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("HELP"), Some(name), Some(_)) if is_name(name, true) => {}
                    (Some("TYPE"), Some(name), Some(kind)) if is_name(name, true) => {
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return fail("unknown type");
                        }
                        if samples
                            .iter()
                            .any(|s: &Sample| family(&s.name, &types) == Some(name))
                        {
                            return fail("TYPE after the family's samples");
                        }
                        if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                            return fail("second TYPE for a family");
                        }
                    }
                    (Some("HELP" | "TYPE"), _, _) => return fail("malformed HELP or TYPE"),
                    _ => {} // Other comments are allowed.
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            if !is_name(name, true) {
                return fail("bad metric name");
            }
            if family(name, &types).is_none() {
                return fail("sample without a TYPE");
            }
            let mut rest = &line[name_end..];
            let mut labels = BTreeMap::new();
            if let Some(inner) = rest.strip_prefix('{') {
                rest = inner;
                loop {
                    if let Some(after) = rest.strip_prefix('}') {
                        rest = after;
                        break;
                    }
                    let Some(eq) = rest.find("=\"") else {
                        return fail("label without =\"");
                    };
                    let label = &rest[..eq];
                    if !is_name(label, false) || label.starts_with("__") {
                        return fail("bad label name");
                    }
                    let mut value = String::new();
                    let mut chars = rest[eq + 2..].char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((i, '"')) => break eq + 2 + i + 1,
                            Some((_, '\\')) => match chars.next() {
                                Some((_, '\\')) => value.push('\\'),
                                Some((_, '"')) => value.push('"'),
                                Some((_, 'n')) => value.push('\n'),
                                _ => return fail("bad escape in label value"),
                            },
                            Some((_, c)) => value.push(c),
                            None => return fail("unterminated label value"),
                        }
                    };
                    if labels.insert(label.to_owned(), value).is_some() {
                        return fail("label given twice");
                    }
                    rest = &rest[end..];
                    rest = rest.strip_prefix(',').unwrap_or(rest);
                }
            }
            let Some(value) = rest.strip_prefix(' ') else {
                return fail("no space before the value");
            };
            // A timestamp may follow; the gateway writes none.
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                v => match v.parse() {
                    Ok(v) => v,
                    Err(_) => return fail("bad value"),
                },
            };
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        check_histograms(&samples, &types)?;
        Ok(Metrics { samples })
    }

    /// Buckets rise with `le`, end in `+Inf`, and `+Inf` equals `_count`.
    fn check_histograms(samples: &[Sample], types: &HashMap<String, String>) -> Result<(), String> {
        for (family, _) in types.iter().filter(|(_, kind)| *kind == "histogram") {
            let bucket_name = format!("{family}_bucket");
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for sample in samples.iter().filter(|s| s.name == bucket_name) {
                let mut labels = sample.labels.clone();
                let le = labels.remove("le").ok_or("bucket without le")?;
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().map_err(|_| format!("bad le {le:?}"))?
                };
                series.entry(labels).or_default().push((le, sample.value));
            }
            for (labels, buckets) in series {
                let rising = buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
                if !rising || buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
                    return Err(format!("{family}{labels:?}: bad buckets {buckets:?}"));
                }
                let count = samples
                    .iter()
                    .find(|s| s.name == format!("{family}_count") && s.labels == labels)
                    .ok_or_else(|| format!("{family}{labels:?}: no _count"))?;
                if count.value != buckets[buckets.len() - 1].1 {
                    return Err(format!("{family}{labels:?}: +Inf bucket is not _count"));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_reader_rejects_what_prometheus_would() {
        let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\n\"} 1\n";
        let metrics = parse(ok).unwrap();
        assert_eq!(metrics.samples[0].labels["x"], "q\"\n");
        for bad in [
            "a_total 1\n",                        // no TYPE
            "# TYPE a counter\na{x=\"1\"} one\n", // bad value
            "# TYPE a counter\na{x=1} 1\n",       // unquoted label
            "# TYPE a counter\na{x=\"\\t\"} 1\n", // bad escape
            "# TYPE a counter\na 1",              // no final newline
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
