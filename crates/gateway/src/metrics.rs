//! `/metrics`: the gateway's state in the Prometheus text exposition format (0.0.4),
//! rendered on demand from the usage meter, the pool and the reload counters.
//!
//! Written by hand: the format is a few lines of text, and the counters already live in
//! [`UsageMeter`], so a metrics library would only add a second copy of them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::snapshot::{ServerState, UpstreamStats};
use crate::usage::{LatencyHistogram, UsageMeter, LATENCY_BUCKETS};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counts of config reloads, shared between the reloader and `/metrics`.
#[derive(Debug)]
pub struct ReloadStats {
    successes: AtomicU64,
    failures: AtomicU64,
    /// Whether the last reload took effect. Starts true: the config the gateway started
    /// with was loaded successfully, or it would not be running.
    last_succeeded: AtomicBool,
}

impl Default for ReloadStats {
    fn default() -> Self {
        Self {
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_succeeded: AtomicBool::new(true),
        }
    }
}

impl ReloadStats {
    /// Notes a reload that was applied.
    pub fn record_success(&self) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.last_succeeded.store(true, Ordering::Relaxed);
    }

    /// Notes a reload that was rejected (the old config stays in force).
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.last_succeeded.store(false, Ordering::Relaxed);
    }

    /// Reloads applied so far.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    /// Reloads rejected so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Whether the most recent reload was applied (true before any reload).
    pub fn last_succeeded(&self) -> bool {
        self.last_succeeded.load(Ordering::Relaxed)
    }
}

/// Renders every metric. Tenants are sorted by name so the output is stable.
pub fn render(
    meter: &UsageMeter,
    pool: fcgi_core::PoolStats,
    upstreams: &[UpstreamStats],
    reloads: &ReloadStats,
    tenants_enabled: usize,
    tenants_suspended: usize,
) -> String {
    let mut tenants: Vec<_> = meter.totals_with_latency().into_iter().collect();
    tenants.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // Roughly 25 lines per tenant of ~60 bytes.
    let mut out = Exposition(String::with_capacity(1024 + tenants.len() * 1600));

    out.header(
        "gateway_requests_total",
        "counter",
        "Requests answered, by tenant and status class.",
    );
    for (tenant, (usage, _)) in &tenants {
        for (class, count) in usage.status_classes() {
            out.sample(
                "gateway_requests_total",
                &[("tenant", tenant), ("class", class)],
                count,
            );
        }
    }
    out.header(
        "gateway_fpm_seconds_total",
        "counter",
        "Time spent waiting for PHP-FPM, by tenant.",
    );
    for (tenant, (usage, _)) in &tenants {
        out.sample(
            "gateway_fpm_seconds_total",
            &[("tenant", tenant)],
            usage.fpm_time_us as f64 / 1e6,
        );
    }
    out.header(
        "gateway_bytes_in_total",
        "counter",
        "Request body bytes received, by tenant.",
    );
    for (tenant, (usage, _)) in &tenants {
        out.sample(
            "gateway_bytes_in_total",
            &[("tenant", tenant)],
            usage.bytes_in,
        );
    }
    out.header(
        "gateway_bytes_out_total",
        "counter",
        "Response body bytes sent, by tenant.",
    );
    for (tenant, (usage, _)) in &tenants {
        out.sample(
            "gateway_bytes_out_total",
            &[("tenant", tenant)],
            usage.bytes_out,
        );
    }
    out.header(
        "gateway_request_duration_seconds",
        "histogram",
        "Time from receiving a request until its response was finished, by tenant.",
    );
    for (tenant, (_, latency)) in &tenants {
        out.histogram("gateway_request_duration_seconds", tenant, latency);
    }

    out.header(
        "gateway_fpm_connections_open",
        "gauge",
        "Connections to PHP-FPM counted against the limit (idle, in use and opening).",
    );
    out.sample("gateway_fpm_connections_open", &[], pool.open);
    out.header(
        "gateway_fpm_connections_idle",
        "gauge",
        "Idle connections to PHP-FPM kept for reuse.",
    );
    out.sample("gateway_fpm_connections_idle", &[], pool.idle);
    out.header(
        "gateway_fpm_queue_length",
        "gauge",
        "Requests waiting for a PHP-FPM connection.",
    );
    out.sample("gateway_fpm_queue_length", &[], pool.waiting);
    render_upstreams(&mut out, upstreams);

    out.header(
        "gateway_config_reloads_total",
        "counter",
        "Config reloads, by result.",
    );
    out.sample(
        "gateway_config_reloads_total",
        &[("result", "success")],
        reloads.successes(),
    );
    out.sample(
        "gateway_config_reloads_total",
        &[("result", "failure")],
        reloads.failures(),
    );
    out.header(
        "gateway_config_last_reload_success",
        "gauge",
        "1 if the last config reload was applied (or none was tried), 0 if it was rejected.",
    );
    out.sample(
        "gateway_config_last_reload_success",
        &[],
        u8::from(reloads.last_succeeded()),
    );

    out.header("gateway_tenants", "gauge", "Configured tenants, by state.");
    out.sample("gateway_tenants", &[("state", "enabled")], tenants_enabled);
    out.sample(
        "gateway_tenants",
        &[("state", "suspended")],
        tenants_suspended,
    );
    out.0
}

/// The response cache's series, appended to `text`: per tenant, answers by cache result
/// (`hit`, `stale`, `miss`) and bytes sent from the cache (from `meter`), and the memory
/// and entries each cached tenant holds (`stores`).
pub fn render_cache(
    text: &mut String,
    meter: &UsageMeter,
    stores: &[(std::sync::Arc<str>, crate::cache::StoreStats)],
) {
    let mut tenants: Vec<_> = meter.totals().into_iter().collect();
    tenants.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out = Exposition(std::mem::take(text));
    out.header(
        "gateway_cache_requests_total",
        "counter",
        "Requests the response cache looked up, by tenant and result (hit, stale, miss).",
    );
    for (tenant, usage) in &tenants {
        for (result, count) in [
            ("hit", usage.cache_hits),
            ("stale", usage.cache_stale),
            ("miss", usage.cache_misses),
        ] {
            out.sample(
                "gateway_cache_requests_total",
                &[("tenant", tenant), ("result", result)],
                count,
            );
        }
    }
    out.header(
        "gateway_cache_bytes_out_total",
        "counter",
        "Response body bytes sent from the response cache, by tenant.",
    );
    for (tenant, usage) in &tenants {
        out.sample(
            "gateway_cache_bytes_out_total",
            &[("tenant", tenant)],
            usage.cache_bytes_out,
        );
    }
    out.header(
        "gateway_cache_memory_bytes",
        "gauge",
        "Bytes the response cache holds, by tenant.",
    );
    for (tenant, stats) in stores {
        out.sample(
            "gateway_cache_memory_bytes",
            &[("tenant", tenant)],
            stats.memory,
        );
    }
    out.header(
        "gateway_cache_entries",
        "gauge",
        "Entries in the response cache, by tenant.",
    );
    for (tenant, stats) in stores {
        out.sample(
            "gateway_cache_entries",
            &[("tenant", tenant)],
            stats.entries,
        );
    }
    *text = out.0;
}

/// Per upstream: its fair queue; per server: health, connections, bound, failures and
/// checks. The `[fastcgi]` pool is the upstream `[fastcgi]`.
fn render_upstreams(out: &mut Exposition, upstreams: &[UpstreamStats]) {
    out.header(
        "gateway_upstream_queue_length",
        "gauge",
        "Requests waiting in an upstream's fair queue.",
    );
    for upstream in upstreams {
        out.sample(
            "gateway_upstream_queue_length",
            &[("upstream", &upstream.name)],
            upstream.queued,
        );
    }
    type Field = fn(&ServerState) -> u64;
    let series: [(&str, &str, &str, Field); 5] = [
        (
            "gateway_upstream_server_healthy",
            "gauge",
            "1 if the server is chosen for new requests, 0 if it is marked down.",
            |s| u64::from(s.healthy),
        ),
        (
            "gateway_upstream_server_connections_in_use",
            "gauge",
            "Connections to the server carrying a request or being opened.",
            |s| s.in_use as u64,
        ),
        (
            "gateway_upstream_server_connections_idle",
            "gauge",
            "Idle connections to the server kept for reuse.",
            |s| s.idle as u64,
        ),
        (
            "gateway_upstream_server_max_connections",
            "gauge",
            "The server's bound on connections.",
            |s| s.max_connections as u64,
        ),
        (
            "gateway_upstream_server_failures_total",
            "counter",
            "Requests that failed on the server in a way that marks it down.",
            |s| s.failures,
        ),
    ];
    for (name, kind, help, field) in series {
        out.header(name, kind, help);
        for upstream in upstreams {
            for server in &upstream.servers {
                out.sample(
                    name,
                    &[("upstream", &upstream.name), ("server", &server.address)],
                    field(server),
                );
            }
        }
    }
    out.header(
        "gateway_upstream_server_checks_total",
        "counter",
        "Health checks of the server that reached a verdict, by result.",
    );
    for upstream in upstreams {
        for server in &upstream.servers {
            let labels = |result| {
                [
                    ("upstream", upstream.name.as_str()),
                    ("server", server.address.as_str()),
                    ("result", result),
                ]
            };
            out.sample(
                "gateway_upstream_server_checks_total",
                &labels("passed"),
                server.checks - server.checks_failed.min(server.checks),
            );
            out.sample(
                "gateway_upstream_server_checks_total",
                &labels("failed"),
                server.checks_failed,
            );
        }
    }
}

/// The output being built. Writing to a `String` cannot fail, so results are dropped.
struct Exposition(String);

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        // HELP text escapes only backslash and newline; ours are constants without either.
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        self.labels(labels);
        let _ = writeln!(self.0, " {value}");
    }

    fn labels(&mut self, labels: &[(&str, &str)]) {
        if labels.is_empty() {
            return;
        }
        self.0.push('{');
        for (index, (name, value)) in labels.iter().enumerate() {
            if index > 0 {
                self.0.push(',');
            }
            self.0.push_str(name);
            self.0.push_str("=\"");
            escape_label_value(&mut self.0, value);
            self.0.push('"');
        }
        self.0.push('}');
    }

    fn histogram(&mut self, name: &str, tenant: &str, histogram: &LatencyHistogram) {
        let bucket = format!("{name}_bucket");
        for (bound, count) in LATENCY_BUCKETS.iter().zip(histogram.cumulative()) {
            let le = bound.to_string();
            self.sample(&bucket, &[("tenant", tenant), ("le", &le)], count);
        }
        let count = histogram.count();
        self.sample(&bucket, &[("tenant", tenant), ("le", "+Inf")], count);
        self.sample(
            &format!("{name}_sum"),
            &[("tenant", tenant)],
            histogram.sum().as_secs_f64(),
        );
        self.sample(&format!("{name}_count"), &[("tenant", tenant)], count);
    }
}

/// Appends `value` escaped for a label value: `\`, `"` and newline get a backslash.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use fpm_harness::prometheus::{self, Sample};

    use super::*;
    use crate::usage::RequestUsage;

    /// The samples and each family's `TYPE`, read by the strict reader the integration
    /// tests use too.
    fn parse(text: &str) -> (Vec<Sample>, HashMap<String, String>) {
        let metrics = prometheus::parse(text).unwrap_or_else(|err| panic!("{err}\n{text}"));
        (metrics.samples, metrics.types)
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> &'a Sample {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .unwrap_or_else(|| panic!("no {name}{labels:?}"))
    }

    fn sample_meter() -> UsageMeter {
        let meter = UsageMeter::default();
        let a: Arc<str> = Arc::from("centro1");
        let b: Arc<str> = Arc::from("we\"ird\\name\n");
        for (status, ms) in [(200, 3), (200, 40), (404, 1), (502, 45_000)] {
            meter.record(
                &a,
                &RequestUsage {
                    status,
                    bytes_in: 5,
                    bytes_out: 100,
                    fpm_time: Duration::from_millis(ms),
                    duration: Duration::from_millis(ms),
                    cache: crate::usage::CacheOutcome::None,
                },
            );
        }
        meter.record(
            &b,
            &RequestUsage {
                status: 301,
                duration: Duration::from_micros(500),
                ..RequestUsage::default()
            },
        );
        meter
    }

    fn rendered() -> String {
        let reloads = ReloadStats::default();
        reloads.record_success();
        reloads.record_success();
        reloads.record_failure();
        let pool = fcgi_core::PoolStats {
            open: 4,
            idle: 1,
            waiting: 7,
        };
        let upstreams = [UpstreamStats {
            name: "main".into(),
            open: 3,
            idle: 1,
            queued: 2,
            servers: vec![ServerState {
                address: "127.0.0.1:9000".into(),
                healthy: true,
                in_use: 2,
                idle: 1,
                max_connections: 16,
                weight: 2,
                backup: false,
                failures: 1,
                checks: 5,
                checks_failed: 1,
            }],
        }];
        render(&sample_meter(), pool, &upstreams, &reloads, 2, 1)
    }

    #[test]
    fn every_line_parses_as_the_text_format() {
        let (samples, types) = parse(&rendered());
        for sample in &samples {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    sample
                        .name
                        .strip_suffix(suffix)
                        .filter(|base| types.get(*base).map(String::as_str) == Some("histogram"))
                })
                .unwrap_or(&sample.name);
            assert!(types.contains_key(family), "no TYPE for {}", sample.name);
            assert!(sample.value.is_finite() && sample.value >= 0.0);
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf_equal_to_count() {
        let (samples, _) = parse(&rendered());
        for tenant in ["centro1", "we\"ird\\name\n"] {
            let buckets: Vec<&Sample> = samples
                .iter()
                .filter(|s| {
                    s.name == "gateway_request_duration_seconds_bucket"
                        && s.labels["tenant"] == tenant
                })
                .collect();
            assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
            let bounds: Vec<f64> = buckets
                .iter()
                .map(|s| match s.labels["le"].as_str() {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().unwrap(),
                })
                .collect();
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
            assert_eq!(bounds.last(), Some(&f64::INFINITY));
            assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value));
            let count = find(
                &samples,
                "gateway_request_duration_seconds_count",
                &[("tenant", tenant)],
            );
            assert_eq!(buckets.last().unwrap().value, count.value);
        }
        let le = |le| {
            find(
                &samples,
                "gateway_request_duration_seconds_bucket",
                &[("tenant", "centro1"), ("le", le)],
            )
            .value
        };
        assert_eq!((le("0.001"), le("0.005"), le("0.05")), (1.0, 2.0, 3.0));
        assert_eq!((le("30"), le("+Inf")), (3.0, 4.0));
        let sum = find(
            &samples,
            "gateway_request_duration_seconds_sum",
            &[("tenant", "centro1")],
        );
        assert!((sum.value - 45.044).abs() < 1e-9);
    }

    #[test]
    fn counters_gauges_and_escaped_labels_have_the_recorded_values() {
        let text = rendered();
        assert!(text.contains(r#"tenant="we\"ird\\name\n""#), "{text}");
        let (samples, _) = parse(&text);
        let value = |name, labels: &[(&str, &str)]| find(&samples, name, labels).value;
        let c1 = [("tenant", "centro1")];
        assert_eq!(
            value(
                "gateway_requests_total",
                &[("tenant", "centro1"), ("class", "2xx")]
            ),
            2.0
        );
        assert_eq!(
            value(
                "gateway_requests_total",
                &[("tenant", "centro1"), ("class", "1xx")]
            ),
            0.0
        );
        assert_eq!(
            value(
                "gateway_requests_total",
                &[("tenant", "we\"ird\\name\n"), ("class", "3xx")]
            ),
            1.0
        );
        assert!((value("gateway_fpm_seconds_total", &c1) - 45.044).abs() < 1e-9);
        assert_eq!(value("gateway_bytes_in_total", &c1), 20.0);
        assert_eq!(value("gateway_bytes_out_total", &c1), 400.0);
        assert_eq!(value("gateway_fpm_connections_open", &[]), 4.0);
        assert_eq!(value("gateway_fpm_connections_idle", &[]), 1.0);
        assert_eq!(value("gateway_fpm_queue_length", &[]), 7.0);
        assert_eq!(
            value("gateway_config_reloads_total", &[("result", "success")]),
            2.0
        );
        assert_eq!(
            value("gateway_config_reloads_total", &[("result", "failure")]),
            1.0
        );
        assert_eq!(value("gateway_config_last_reload_success", &[]), 0.0);
        assert_eq!(value("gateway_tenants", &[("state", "enabled")]), 2.0);
        assert_eq!(value("gateway_tenants", &[("state", "suspended")]), 1.0);
        let server = [("upstream", "main"), ("server", "127.0.0.1:9000")];
        assert_eq!(
            value("gateway_upstream_queue_length", &[("upstream", "main")]),
            2.0
        );
        assert_eq!(value("gateway_upstream_server_healthy", &server), 1.0);
        assert_eq!(
            value("gateway_upstream_server_connections_in_use", &server),
            2.0
        );
        assert_eq!(
            value("gateway_upstream_server_failures_total", &server),
            1.0
        );
        let checks = |result| {
            value(
                "gateway_upstream_server_checks_total",
                &[server[0], server[1], ("result", result)],
            )
        };
        assert_eq!((checks("passed"), checks("failed")), (4.0, 1.0));
    }

    #[test]
    fn an_idle_gateway_renders_only_the_global_series() {
        let text = render(
            &UsageMeter::default(),
            fcgi_core::PoolStats::default(),
            &[],
            &ReloadStats::default(),
            0,
            0,
        );
        let (samples, _) = parse(&text);
        assert!(samples.iter().all(|s| !s.labels.contains_key("tenant")));
        assert_eq!(
            find(&samples, "gateway_config_last_reload_success", &[]).value,
            1.0
        );
    }
}
