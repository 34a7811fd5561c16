//! Per-tenant usage counters for billing and metrics: requests, time in PHP-FPM, bytes,
//! and responses by status class. Counted in memory on the request path; persisted
//! elsewhere by draining the counts accumulated since the last flush.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foldhash::fast::RandomState;
use serde::Serialize;

/// How the response cache took part in an answer: billing counts PHP's work, and answers
/// from the cache apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Not looked up (no cache for the tenant, a static file, a bypass).
    #[default]
    None,
    /// Answered from a fresh entry: PHP did not run.
    Hit,
    /// Answered from an expired entry (while it is refreshed, or PHP-FPM failed).
    Stale,
    /// Looked up, not found: PHP ran.
    Miss,
}

/// One finished request, as the meter sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestUsage {
    /// Status sent.
    pub status: u16,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Time in PHP-FPM (zero for static files and errors).
    pub fpm_time: Duration,
    /// Whole request time.
    pub duration: Duration,
    /// Whether the answer came from the response cache.
    pub cache: CacheOutcome,
}

/// Counters for one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TenantUsage {
    /// Requests answered.
    pub requests: u64,
    /// Time spent in PHP-FPM, in microseconds.
    pub fpm_time_us: u64,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Responses with a 1xx status.
    pub status_1xx: u64,
    /// Responses with a 2xx status.
    pub status_2xx: u64,
    /// Responses with a 3xx status.
    pub status_3xx: u64,
    /// Responses with a 4xx status.
    pub status_4xx: u64,
    /// Responses with a 5xx status.
    pub status_5xx: u64,
    /// Answers from a fresh cache entry (PHP did not run).
    pub cache_hits: u64,
    /// Answers from an expired cache entry (PHP did not run for them).
    pub cache_stale: u64,
    /// Cache lookups that found nothing (PHP ran).
    pub cache_misses: u64,
    /// Response body bytes sent from the cache.
    pub cache_bytes_out: u64,
}

impl TenantUsage {
    /// The counters' names, in [`counters`](Self::counters) order: the usage database's
    /// columns, the CLI's CSV header and the JSON fields. Every place that lists the
    /// counters takes them from here.
    pub const NAMES: [&'static str; 13] = [
        "requests",
        "fpm_time_us",
        "bytes_in",
        "bytes_out",
        "status_1xx",
        "status_2xx",
        "status_3xx",
        "status_4xx",
        "status_5xx",
        "cache_hits",
        "cache_stale",
        "cache_misses",
        "cache_bytes_out",
    ];

    /// The counters, in [`NAMES`](Self::NAMES) order.
    pub fn counters(&self) -> [u64; 13] {
        [
            self.requests,
            self.fpm_time_us,
            self.bytes_in,
            self.bytes_out,
            self.status_1xx,
            self.status_2xx,
            self.status_3xx,
            self.status_4xx,
            self.status_5xx,
            self.cache_hits,
            self.cache_stale,
            self.cache_misses,
            self.cache_bytes_out,
        ]
    }

    /// The counters from their values in [`NAMES`](Self::NAMES) order.
    pub fn from_counters(counters: [u64; 13]) -> Self {
        let [requests, fpm_time_us, bytes_in, bytes_out, status_1xx, status_2xx, status_3xx, status_4xx, status_5xx, cache_hits, cache_stale, cache_misses, cache_bytes_out] =
            counters;
        Self {
            requests,
            fpm_time_us,
            bytes_in,
            bytes_out,
            status_1xx,
            status_2xx,
            status_3xx,
            status_4xx,
            status_5xx,
            cache_hits,
            cache_stale,
            cache_misses,
            cache_bytes_out,
        }
    }

    /// Responses by status class (`"1xx"` to `"5xx"`).
    pub fn status_classes(&self) -> [(&'static str, u64); 5] {
        [
            ("1xx", self.status_1xx),
            ("2xx", self.status_2xx),
            ("3xx", self.status_3xx),
            ("4xx", self.status_4xx),
            ("5xx", self.status_5xx),
        ]
    }

    /// Adds one request.
    pub fn add_request(&mut self, usage: &RequestUsage) {
        self.requests += 1;
        self.fpm_time_us += usage.fpm_time.as_micros() as u64;
        self.bytes_in += usage.bytes_in;
        self.bytes_out += usage.bytes_out;
        match usage.status / 100 {
            1 => self.status_1xx += 1,
            2 => self.status_2xx += 1,
            3 => self.status_3xx += 1,
            4 => self.status_4xx += 1,
            _ => self.status_5xx += 1,
        }
        match usage.cache {
            CacheOutcome::None => {}
            CacheOutcome::Hit => self.cache_hits += 1,
            CacheOutcome::Stale => self.cache_stale += 1,
            CacheOutcome::Miss => self.cache_misses += 1,
        }
        if matches!(usage.cache, CacheOutcome::Hit | CacheOutcome::Stale) {
            self.cache_bytes_out += usage.bytes_out;
        }
    }

    /// Adds another set of counters.
    pub fn merge(&mut self, other: &TenantUsage) {
        let mut sum = self.counters();
        for (total, add) in sum.iter_mut().zip(other.counters()) {
            *total += add;
        }
        *self = Self::from_counters(sum);
    }
}

/// Upper bounds of the request latency buckets, in seconds: from a static-file hit (1ms)
/// to the longest a PHP request should be allowed to run (30s). Fixed so every tenant's
/// histogram has the same series and they can be summed across tenants.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A request latency histogram over [`LATENCY_BUCKETS`]. Guarded by the meter's mutex, so
/// plain integers: the lock is taken per request anyway for the usage counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Observations per bucket, not cumulative; the last slot is above the last bound.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of all observations, in microseconds (integer, so no float drift).
    sum_us: u64,
}

impl LatencyHistogram {
    /// Records one request's duration.
    pub fn observe(&mut self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let slot = LATENCY_BUCKETS.partition_point(|&bound| bound < seconds);
        self.buckets[slot] += 1;
        self.sum_us = self
            .sum_us
            .saturating_add(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    /// Cumulative counts, one per bound of [`LATENCY_BUCKETS`] (observations at or below
    /// it), as Prometheus `le` buckets want them; `+Inf` is [`count`](Self::count).
    pub fn cumulative(&self) -> [u64; LATENCY_BUCKETS.len()] {
        let mut out = [0; LATENCY_BUCKETS.len()];
        let mut running = 0;
        for (slot, count) in out.iter_mut().zip(self.buckets) {
            running += count;
            *slot = running;
        }
        out
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Sum of all observations.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us)
    }
}

/// Everything counted for one tenant since the process started.
#[derive(Debug, Clone, Copy, Default)]
struct TenantTotals {
    usage: TenantUsage,
    latency: LatencyHistogram,
}

/// Everything counted for one tenant: since the process started (for `/metrics`), and
/// since the last flush to the database.
#[derive(Debug, Default)]
struct Counts {
    totals: TenantTotals,
    pending: TenantUsage,
}

/// The in-memory meter every request reports to.
#[derive(Debug, Default)]
pub struct UsageMeter {
    /// Per tenant; a fast hasher, since tenant names come from the configuration.
    counts: Mutex<HashMap<Arc<str>, Counts, RandomState>>,
}

impl UsageMeter {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Counts, RandomState>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one finished request for `tenant`.
    pub fn record(&self, tenant: &Arc<str>, usage: &RequestUsage) {
        let mut counts = self.lock();
        // `get_mut` first: the common case must not clone the `Arc` (an atomic increment).
        let entry = match counts.get_mut(tenant) {
            Some(entry) => entry,
            None => counts.entry(tenant.clone()).or_default(),
        };
        entry.totals.usage.add_request(usage);
        entry.totals.latency.observe(usage.duration);
        entry.pending.add_request(usage);
    }

    /// Counters since the process started, per tenant.
    pub fn totals(&self) -> HashMap<Arc<str>, TenantUsage> {
        let counts = self.lock();
        counts
            .iter()
            .map(|(tenant, entry)| (tenant.clone(), entry.totals.usage))
            .collect()
    }

    /// Counters and latency histogram since the process started, per tenant, taken under
    /// one lock so a histogram's count matches its tenant's request count.
    pub fn totals_with_latency(&self) -> HashMap<Arc<str>, (TenantUsage, LatencyHistogram)> {
        let counts = self.lock();
        counts
            .iter()
            .map(|(tenant, entry)| {
                let totals = &entry.totals;
                (tenant.clone(), (totals.usage, totals.latency))
            })
            .collect()
    }

    /// Takes the counts since the last call (for persisting them): the tenants that had
    /// any.
    pub fn take_pending(&self) -> HashMap<Arc<str>, TenantUsage> {
        let mut counts = self.lock();
        counts
            .iter_mut()
            .filter(|(_, entry)| entry.pending != TenantUsage::default())
            .map(|(tenant, entry)| (tenant.clone(), std::mem::take(&mut entry.pending)))
            .collect()
    }

    /// Puts counts back that could not be persisted, so the next flush retries them.
    pub fn restore_pending(&self, pending: HashMap<Arc<str>, TenantUsage>) {
        let mut counts = self.lock();
        for (tenant, usage) in pending {
            counts.entry(tenant).or_default().pending.merge(&usage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_tenant_and_status_class() {
        let meter = UsageMeter::default();
        let a: Arc<str> = Arc::from("a");
        for status in [200, 204, 404, 502] {
            meter.record(
                &a,
                &RequestUsage {
                    status,
                    bytes_in: 1,
                    bytes_out: 10,
                    fpm_time: Duration::from_millis(2),
                    duration: Duration::from_millis(3),
                    cache: CacheOutcome::None,
                },
            );
        }
        let totals = meter.totals();
        let usage = totals[&a];
        assert_eq!(usage.requests, 4);
        assert_eq!(usage.status_2xx, 2);
        assert_eq!(usage.status_4xx, 1);
        assert_eq!(usage.status_5xx, 1);
        assert_eq!(usage.fpm_time_us, 8000);
        assert_eq!(usage.bytes_out, 40);
        let pending = meter.take_pending();
        assert_eq!(pending[&a].requests, 4);
        assert!(meter.take_pending().is_empty());
        meter.restore_pending(pending);
        assert_eq!(meter.take_pending()[&a].requests, 4);
        assert_eq!(meter.totals()[&a].requests, 4);
    }

    #[test]
    fn latency_lands_in_the_first_bucket_at_or_above_it() {
        let mut histogram = LatencyHistogram::default();
        for ms in [0, 1, 2, 30_000, 60_000] {
            histogram.observe(Duration::from_millis(ms));
        }
        let cumulative = histogram.cumulative();
        // 0ms and 1ms are in le=0.001 (bounds are inclusive); 2ms in le=0.0025.
        assert_eq!(cumulative[0], 2);
        assert_eq!(cumulative[1], 3);
        // 30s is in the last bound; 60s only in +Inf.
        assert_eq!(cumulative[LATENCY_BUCKETS.len() - 2], 3);
        assert_eq!(cumulative[LATENCY_BUCKETS.len() - 1], 4);
        assert_eq!(histogram.count(), 5);
        assert_eq!(histogram.sum(), Duration::from_millis(90_003));
    }

    #[test]
    fn the_meter_feeds_each_tenants_latency_histogram() {
        let meter = UsageMeter::default();
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let request = |ms| RequestUsage {
            status: 200,
            duration: Duration::from_millis(ms),
            ..RequestUsage::default()
        };
        meter.record(&a, &request(3));
        meter.record(&a, &request(700));
        meter.record(&b, &request(1));
        let totals = meter.totals_with_latency();
        let (usage, latency) = totals[&a];
        assert_eq!(latency.count(), usage.requests);
        assert_eq!(latency.sum(), Duration::from_millis(703));
        assert_eq!(totals[&b].1.count(), 1);
    }
}
