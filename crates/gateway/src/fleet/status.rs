//! The registry connection's state, as `/healthz` and `/metrics` report it.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// Updated by the listener, read by the admin API.
#[derive(Debug, Default)]
pub struct RegistryStatus {
    /// Whether the listening connection is up.
    connected: AtomicBool,
    /// The last version PostgreSQL confirmed (read, notified or checked).
    confirmed_version: AtomicI64,
    /// When PostgreSQL last confirmed the registry in service is current.
    confirmed_at: Mutex<Option<Instant>>,
    /// Connections lost since start.
    disconnects: AtomicU64,
    /// Registries refused (invalid) since start.
    rejected: AtomicU64,
    /// The last error (connection or rejection), for `/healthz`.
    last_error: Mutex<Option<String>>,
}

/// A copy of the state, for the answers.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryHealth {
    /// `"connected"` or `"disconnected"`.
    pub state: &'static str,
    /// The version served.
    pub version: i64,
    /// Seconds since PostgreSQL last confirmed it current; `None`: never (started from
    /// the snapshot file).
    pub age_seconds: Option<f64>,
    /// Connections lost since start.
    pub disconnects: u64,
    /// Registries refused since start.
    pub rejected: u64,
    /// The last error.
    pub last_error: Option<String>,
}

impl RegistryStatus {
    pub(super) fn set_connected(&self, connected: bool) {
        let was = self.connected.swap(connected, Ordering::SeqCst);
        if was && !connected {
            self.disconnects.fetch_add(1, Ordering::Relaxed);
        }
        if connected {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    pub(super) fn record_version(&self, version: i64) {
        self.confirmed_version.store(version, Ordering::SeqCst);
        *self.confirmed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    pub(super) fn record_error(&self, error: &dyn std::fmt::Display) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }

    /// A registry refused; `version`: the one that keeps serving.
    pub(super) fn record_rejected(&self, version: i64, error: &dyn std::fmt::Display) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
            "registry rejected (version {version} keeps serving): {error}"
        ));
    }

    /// The state now; `version` is the version in service.
    pub fn health(&self, version: i64) -> RegistryHealth {
        let connected = self.connected.load(Ordering::SeqCst);
        RegistryHealth {
            state: if connected {
                "connected"
            } else {
                "disconnected"
            },
            version,
            age_seconds: self
                .confirmed_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map(|at| at.elapsed().as_secs_f64()),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Appends the registry's Prometheus metrics to `out`.
    pub fn render_metrics(&self, version: i64, out: &mut String) {
        use std::fmt::Write as _;
        let health = self.health(version);
        let _ = write!(
            out,
            "# HELP gateway_registry_connected Whether the registry's LISTEN connection to PostgreSQL is up.\n\
             # TYPE gateway_registry_connected gauge\n\
             gateway_registry_connected {}\n\
             # HELP gateway_registry_version The registry version in service.\n\
             # TYPE gateway_registry_version gauge\n\
             gateway_registry_version {}\n\
             # HELP gateway_registry_age_seconds Seconds since PostgreSQL last confirmed the registry in service is current.\n\
             # TYPE gateway_registry_age_seconds gauge\n\
             gateway_registry_age_seconds {}\n\
             # HELP gateway_registry_disconnects_total Registry connections lost.\n\
             # TYPE gateway_registry_disconnects_total counter\n\
             gateway_registry_disconnects_total {}\n\
             # HELP gateway_registry_rejected_total Registries refused as invalid (the previous one kept serving).\n\
             # TYPE gateway_registry_rejected_total counter\n\
             gateway_registry_rejected_total {}\n",
            u8::from(health.state == "connected"),
            health.version,
            health.age_seconds.map_or(-1.0, |age| (age * 1000.0).round() / 1000.0),
            health.disconnects,
            health.rejected,
        );
    }
}
