//! The last hour of activity per tenant for the admin API's `GET /usage/recent` (the
//! dashboard's sparklines): the usage meter's totals sampled once a minute into a ring,
//! answered as per-minute differences.
//!
//! The meter only counts up since the process started; the usage database buckets by
//! hour. Neither tells what happened in the last few minutes, so the admin listener
//! samples the meter itself. A sample is a copy of every tenant's counters; the ring keeps
//! [`WINDOW`] of them (about 1 MiB at 2,000 tenants), and an answer adds one more taken
//! at request time, so the newest point is the minute in progress.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::usage::{TenantUsage, UsageMeter};

/// Time between samples.
pub const STEP: Duration = Duration::from_secs(60);

/// Samples kept: one hour of steps, plus the one the oldest difference starts from.
const WINDOW: usize = 61;

/// The meter's totals at one moment.
#[derive(Debug)]
struct Sample {
    /// Unix seconds.
    time: i64,
    /// Every tenant's counters since the process started.
    totals: HashMap<Arc<str>, TenantUsage>,
}

/// The ring of samples, shared by the sampling task and the requests reading it.
#[derive(Debug, Default)]
pub struct RecentUsage {
    samples: Mutex<VecDeque<Sample>>,
}

/// The `GET /usage/recent` answer: per tenant, one value per interval and counter,
/// oldest first, columns rather than rows (sixty points per tenant stay small).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RecentReport {
    /// The nominal interval length, in seconds.
    pub step_seconds: u64,
    /// Each interval's start (unix seconds).
    pub starts: Vec<i64>,
    /// Each interval's length in seconds (the last one, in progress, is shorter; any
    /// can be longer when the sampler was late). At least 1, so rates divide safely.
    pub seconds: Vec<i64>,
    /// The tenants with any request in the window, by name.
    pub tenants: Vec<RecentTenant>,
}

/// One tenant's counts per interval of a [`RecentReport`].
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RecentTenant {
    /// The tenant.
    pub tenant: String,
    /// Counter name ([`TenantUsage::NAMES`]) → one count per interval.
    #[serde(flatten)]
    pub counts: BTreeMap<&'static str, Vec<u64>>,
}

impl RecentUsage {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Sample>> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the meter's totals now, dropping the oldest sample beyond the window.
    pub fn sample(&self, meter: &UsageMeter) {
        self.push(now(), meter.totals());
    }

    fn push(&self, time: i64, totals: HashMap<Arc<str>, TenantUsage>) {
        let mut samples = self.lock();
        samples.push_back(Sample { time, totals });
        while samples.len() > WINDOW {
            samples.pop_front();
        }
    }

    /// The report up to now, for one tenant or all.
    pub fn report(&self, meter: &UsageMeter, tenant: Option<&str>) -> RecentReport {
        let current = Sample {
            time: now(),
            totals: meter.totals(),
        };
        self.report_with(current, tenant)
    }

    fn report_with(&self, current: Sample, tenant: Option<&str>) -> RecentReport {
        let samples = self.lock();
        let points: Vec<&Sample> = samples.iter().chain(std::iter::once(&current)).collect();
        let pairs: Vec<(&Sample, &Sample)> = points.windows(2).map(|w| (w[0], w[1])).collect();
        let mut tenants: Vec<&Arc<str>> = current
            .totals
            .keys()
            .filter(|name| tenant.is_none_or(|t| t == &***name))
            .collect();
        tenants.sort_unstable();
        let mut rows = Vec::new();
        for name in tenants {
            let counts_at = |sample: &Sample| {
                sample
                    .totals
                    .get(name)
                    .copied()
                    .unwrap_or_default()
                    .counters()
            };
            let mut columns = vec![Vec::with_capacity(pairs.len()); TenantUsage::NAMES.len()];
            for (before, after) in &pairs {
                let (before, after) = (counts_at(before), counts_at(after));
                for (column, (b, a)) in columns.iter_mut().zip(before.iter().zip(after)) {
                    // Counters only grow; saturate rather than trust that blindly.
                    column.push(a.saturating_sub(*b));
                }
            }
            let requests = &columns[0];
            if requests.iter().all(|&n| n == 0) {
                continue;
            }
            rows.push(RecentTenant {
                tenant: name.to_string(),
                counts: TenantUsage::NAMES.into_iter().zip(columns).collect(),
            });
        }
        RecentReport {
            step_seconds: STEP.as_secs(),
            starts: pairs.iter().map(|(before, _)| before.time).collect(),
            seconds: pairs
                .iter()
                .map(|(before, after)| (after.time - before.time).max(1))
                .collect(),
            tenants: rows,
        }
    }
}

/// Samples `meter` into `recent` every [`STEP`], forever (the caller aborts the task).
pub async fn run_sampler(recent: Arc<RecentUsage>, meter: Arc<UsageMeter>) {
    let mut ticks = tokio::time::interval(STEP);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; the first sample was taken at bind time.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        recent.sample(&meter);
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(entries: &[(&str, u64, u64)]) -> HashMap<Arc<str>, TenantUsage> {
        entries
            .iter()
            .map(|&(name, requests, status_5xx)| {
                let usage = TenantUsage {
                    requests,
                    status_5xx,
                    ..TenantUsage::default()
                };
                (Arc::from(name), usage)
            })
            .collect()
    }

    fn at(time: i64, entries: &[(&str, u64, u64)]) -> Sample {
        Sample {
            time,
            totals: totals(entries),
        }
    }

    #[test]
    fn points_are_differences_between_samples_ending_with_the_current_one() {
        let recent = RecentUsage::default();
        recent.push(1000, totals(&[]));
        recent.push(1060, totals(&[("a", 5, 1)]));
        let report = recent.report_with(at(1090, &[("a", 8, 1), ("b", 2, 2)]), None);
        assert_eq!(report.starts, [1000, 1060]);
        assert_eq!(report.seconds, [60, 30]);
        let names: Vec<&str> = report.tenants.iter().map(|t| t.tenant.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(report.tenants[0].counts["requests"], [5, 3]);
        assert_eq!(report.tenants[0].counts["status_5xx"], [1, 0]);
        assert_eq!(report.tenants[1].counts["requests"], [0, 2]);
        assert_eq!(report.tenants[1].counts.len(), TenantUsage::NAMES.len());
    }

    #[test]
    fn idle_tenants_are_left_out_and_a_filter_keeps_one() {
        let recent = RecentUsage::default();
        recent.push(1000, totals(&[("idle", 7, 0), ("busy", 1, 0)]));
        let report = recent.report_with(at(1030, &[("idle", 7, 0), ("busy", 4, 0)]), None);
        assert_eq!(report.tenants.len(), 1);
        assert_eq!(report.tenants[0].tenant, "busy");
        let report = recent.report_with(at(1030, &[("idle", 7, 0), ("busy", 4, 0)]), Some("x"));
        assert!(report.tenants.is_empty());
    }

    #[test]
    fn the_ring_keeps_one_hour() {
        let recent = RecentUsage::default();
        for minute in 0..100 {
            recent.push(minute * 60, totals(&[("a", minute as u64, 0)]));
        }
        let report = recent.report_with(at(100 * 60, &[("a", 100, 0)]), None);
        assert_eq!(report.starts.len(), WINDOW);
        assert_eq!(report.starts[0], 39 * 60);
        assert!(report.tenants[0].counts["requests"].iter().all(|&n| n == 1));
    }
}
