//! Which servers of a pool are up: each server's verdicts (passive failures from requests,
//! active checks over FastCGI with PHP-FPM's `ping.path`), and the task that runs the
//! checks.
//!
//! ```text
//!            `fails` failed checks in a row, or one passive failure
//!      ┌────┐ ───────────────────────────────────────────────────▶ ┌──────┐
//!      │ Up │                                                      │ Down │
//!      └────┘ ◀─────────────────────────────────────────────────── └──────┘
//!            `passes` good checks in a row (without a ping: `interval` elapsed)
//! ```

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::servers::{HealthConfig, Ping};
use super::Shared;
use crate::client::{ClientConfig, Connection, Request};
use crate::error::Error;
use crate::proto::params::Params;
use crate::upstream::Upstream;

/// One check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    Pass,
    Fail,
    /// Nothing learnt (all connections busy, or a timeout while it had no idle capacity).
    Skip,
}

/// One server's health.
#[derive(Debug)]
pub(super) struct ServerHealth {
    up: bool,
    /// Failed checks in a row.
    fails: u32,
    /// Good checks in a row.
    passes: u32,
    /// When it was last marked down: without a ping, it is tried again `interval` later.
    down_at: Instant,
    /// The completed-requests count at the last check: more since then is a pass.
    completed_seen: u64,
    /// The protocol-fault count at the last check (faults in a response body, which the
    /// slots mark at once; here they restart the way back up).
    faults_seen: u64,
    pub(super) failures: u64,
    pub(super) checks: u64,
    pub(super) checks_failed: u64,
}

impl ServerHealth {
    pub(super) fn new() -> Self {
        Self {
            up: true,
            fails: 0,
            passes: 0,
            down_at: Instant::now(),
            completed_seen: 0,
            faults_seen: 0,
            failures: 0,
            checks: 0,
            checks_failed: 0,
        }
    }

    /// A request failed on this server in a way that marks it. Returns whether it was up
    /// and is now down.
    pub(super) fn failed_request(&mut self, marks: bool) -> bool {
        self.failures += 1;
        if !marks || !self.up {
            return false;
        }
        self.up = false;
        self.passes = 0;
        self.down_at = Instant::now();
        true
    }

    /// Records a check; returns the new state when it changed.
    pub(super) fn record(&mut self, check: Check, config: &HealthConfig) -> Option<bool> {
        match check {
            Check::Skip => return None,
            Check::Pass => {
                self.checks += 1;
                self.fails = 0;
                self.passes = self.passes.saturating_add(1);
                if !self.up && self.passes >= config.passes {
                    self.up = true;
                    return Some(true);
                }
            }
            Check::Fail => {
                self.checks += 1;
                self.checks_failed += 1;
                self.passes = 0;
                self.fails = self.fails.saturating_add(1);
                if self.up && self.fails >= config.fails {
                    self.up = false;
                    self.down_at = Instant::now();
                    return Some(false);
                }
            }
        }
        None
    }
}

/// Runs the checks every `interval` until the pool is dropped.
pub(super) async fn watch(shared: Weak<Shared>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        check_all(&shared).await;
    }
}

/// One round of checks over every server.
async fn check_all(shared: &Arc<Shared>) {
    let config = &shared.health;
    let slots = shared.slots.server_stats();
    let mut checks = vec![Check::Skip; slots.len()];
    let mut probes = JoinSet::new();
    {
        let mut health = shared.lock_health();
        for (index, (server, slot)) in health.iter_mut().zip(&slots).enumerate() {
            let completed = slot.completed - server.completed_seen;
            server.completed_seen = slot.completed;
            if slot.faults > server.faults_seen && !slot.healthy && server.up {
                server.up = false;
                server.passes = 0;
                server.down_at = Instant::now();
            }
            server.faults_seen = slot.faults;
            checks[index] = match &config.ping {
                None if !server.up && server.down_at.elapsed() >= config.interval => {
                    // Left out for an interval: try it again (a lone pass brings it back).
                    server.passes = config.passes.saturating_sub(1);
                    Check::Pass
                }
                None => Check::Skip,
                Some(_) if completed > 0 => Check::Pass,
                // All its connections are busy: PHP-FPM would answer a ping only once a
                // worker frees up, so a probe would measure the load, not the server.
                Some(_) if !slot.has_room() => Check::Skip,
                Some(ping) => {
                    let address = shared.addresses[index].clone();
                    let ping = ping.clone();
                    let timeout = config.timeout;
                    probes.spawn(async move { (index, probe(address, &ping, timeout).await) });
                    Check::Skip
                }
            };
        }
    }
    while let Some(joined) = probes.join_next().await {
        let Ok((index, outcome)) = joined else {
            continue;
        };
        checks[index] = match outcome {
            Ok(()) => Check::Pass,
            Err(err) if err.is_timeout() => {
                // A slow answer under load is not a dead server; with a worker free it is.
                let room = shared.slots.server_stats()[index].has_room();
                if room {
                    tracing::debug!(server = %shared.addresses[index], error = %err, "FastCGI ping timed out");
                    Check::Fail
                } else {
                    Check::Skip
                }
            }
            Err(err) => {
                tracing::debug!(server = %shared.addresses[index], error = %err, "FastCGI ping failed");
                Check::Fail
            }
        };
    }
    let changes: Vec<(usize, bool)> = {
        let mut health = shared.lock_health();
        health
            .iter_mut()
            .zip(checks)
            .enumerate()
            .filter_map(|(index, (server, check))| Some((index, server.record(check, config)?)))
            .collect()
    };
    for (index, up) in changes {
        let server = &shared.addresses[index];
        if up {
            tracing::info!(%server, "FastCGI server is back up");
        } else {
            tracing::warn!(%server, "FastCGI server marked down: health checks failed");
        }
        shared.slots.set_healthy(index, up);
    }
}

/// Why a ping failed: the answer was not the expected one.
#[derive(Debug, thiserror::Error)]
#[error("unexpected ping answer: status {status}, {len} bytes")]
struct WrongAnswer {
    status: http::StatusCode,
    len: usize,
}

/// Asks PHP-FPM for its ping page on a connection of its own; `Ok` when it answers the
/// expected body within `timeout` (connect included).
async fn probe(address: Arc<Upstream>, ping: &Ping, timeout: Duration) -> Result<(), Error> {
    let exchange = async {
        let config = ClientConfig {
            connect_timeout: timeout,
            read_timeout: timeout,
            keep_conn: false,
            ..ClientConfig::default()
        };
        let conn = Connection::open(address, config).await?;
        let mut params = Params::with_capacity(256);
        for (name, value) in [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_METHOD", "GET"),
            ("QUERY_STRING", ""),
            ("SCRIPT_NAME", ping.path.as_str()),
            ("SCRIPT_FILENAME", ping.path.as_str()),
            ("REQUEST_URI", ping.path.as_str()),
            ("DOCUMENT_URI", ping.path.as_str()),
        ] {
            params.insert(name, value)?;
        }
        let response = conn.send(Request::new(params)).await?;
        let status = response.status();
        let body = response.collect().await?;
        if status.is_success() && body.trim_ascii() == ping.response.as_bytes() {
            Ok(())
        } else {
            Err(Error::with(
                crate::error::Kind::Protocol,
                WrongAnswer {
                    status,
                    len: body.len(),
                },
            ))
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(crate::error::Kind::ReadTimeout(timeout))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HealthConfig {
        HealthConfig {
            fails: 2,
            passes: 3,
            ..HealthConfig::default()
        }
    }

    #[test]
    fn fails_in_a_row_mark_down_and_passes_in_a_row_bring_back() {
        let config = config();
        let mut server = ServerHealth::new();
        assert_eq!(server.record(Check::Fail, &config), None);
        assert_eq!(
            server.record(Check::Pass, &config),
            None,
            "the run was broken"
        );
        assert_eq!(server.record(Check::Fail, &config), None);
        assert_eq!(
            server.record(Check::Skip, &config),
            None,
            "a skip breaks no run"
        );
        assert_eq!(server.record(Check::Fail, &config), Some(false));
        assert_eq!(server.record(Check::Pass, &config), None);
        assert_eq!(server.record(Check::Pass, &config), None);
        assert_eq!(server.record(Check::Pass, &config), Some(true));
        assert_eq!((server.checks, server.checks_failed), (7, 3));
    }

    #[test]
    fn a_passive_failure_marks_down_at_once_only_when_marking_applies() {
        let config = config();
        let mut server = ServerHealth::new();
        assert!(
            !server.failed_request(false),
            "a lone server is never marked"
        );
        assert!(server.up);
        assert!(server.failed_request(true));
        assert!(!server.failed_request(true), "already down");
        assert_eq!(server.failures, 3);
        for _ in 0..2 {
            assert_eq!(server.record(Check::Pass, &config), None);
        }
        assert_eq!(server.record(Check::Pass, &config), Some(true));
    }
}
