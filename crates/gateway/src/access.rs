//! The per-request record: filled in as the request goes through the gateway, and written
//! when its response body is finished or dropped, to the access log (one line a request)
//! and to the usage meter (billing) and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

use crate::usage::{CacheOutcome, RequestUsage, UsageMeter};

/// Where finished request records go. Shared by every request.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Per-tenant usage counters (billing and `/metrics`).
    pub usage: Arc<UsageMeter>,
    /// Whether to write the access log.
    pub access_log: bool,
}

/// What the access log and the meters need to know about one request.
#[derive(Debug)]
pub struct RequestRecord {
    telemetry: Arc<Telemetry>,
    start: Instant,
    /// The tenant that served it; `None` for unknown hosts.
    pub tenant: Option<Arc<str>>,
    method: Method,
    /// The path only: query strings may carry tokens and are not logged.
    path: String,
    /// The status sent.
    pub status: u16,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Time from sending to PHP-FPM until its END_REQUEST.
    pub fpm_time: Option<Duration>,
    /// The PHP-FPM server that answered (one of its upstream's servers).
    pub upstream: Option<fcgi_core::Upstream>,
    /// Whether the body was sent to its end (else the client left or the upstream broke).
    pub completed: bool,
    /// What broke mid-response, if anything.
    error: Option<String>,
    /// Whether the response cache answered.
    pub cache: CacheOutcome,
}

impl RequestRecord {
    /// Starts a record for a request.
    pub fn new(telemetry: Arc<Telemetry>, method: &Method, path: &str) -> Self {
        Self {
            telemetry,
            start: Instant::now(),
            tenant: None,
            method: method.clone(),
            path: path.to_owned(),
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            fpm_time: None,
            upstream: None,
            completed: false,
            error: None,
            cache: CacheOutcome::None,
        }
    }

    /// Notes an error that ended the response body early.
    pub fn upstream_error(&mut self, err: &fcgi_core::Error) {
        self.error = Some(err.to_string());
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let duration = self.start.elapsed();
        if let Some(tenant) = &self.tenant {
            self.telemetry.usage.record(
                tenant,
                &RequestUsage {
                    status: self.status,
                    bytes_in: self.bytes_in,
                    bytes_out: self.bytes_out,
                    fpm_time: self.fpm_time.unwrap_or_default(),
                    duration,
                    cache: self.cache,
                },
            );
        }
        if !self.telemetry.access_log {
            return;
        }
        let tenant = self.tenant.as_deref().unwrap_or("-");
        // Whole microseconds: exact, and cheap to format. The line's timestamp is the time.
        let fpm_us = self.fpm_time.map(|t| t.as_micros() as u64);
        let duration_us = duration.as_micros() as u64;
        let direct = crate::logging::write_access_line(&crate::logging::AccessLine {
            tenant,
            method: &self.method,
            path: &self.path,
            status: self.status,
            bytes_out: self.bytes_out,
            duration_us,
            fpm_us,
            upstream: self.upstream.as_ref(),
            completed: self.completed,
            error: self.error.as_deref(),
        });
        if direct {
            return;
        }
        if let Some(error) = &self.error {
            tracing::warn!(
                target: crate::logging::ACCESS_TARGET,
                tenant,
                method = %self.method,
                path = %self.path,
                status = self.status,
                bytes_out = self.bytes_out,
                duration_us,
                fpm_us,
                upstream = self.upstream.as_ref().map(tracing::field::display),
                completed = self.completed,
                error = %error,
                "request"
            );
        } else {
            tracing::info!(
                target: crate::logging::ACCESS_TARGET,
                tenant,
                method = %self.method,
                path = %self.path,
                status = self.status,
                bytes_out = self.bytes_out,
                duration_us,
                fpm_us,
                upstream = self.upstream.as_ref().map(tracing::field::display),
                completed = self.completed,
                "request"
            );
        }
    }
}
