//! The certificate store: the certificates in service (operator files and automatic ones),
//! the ACME challenge answers and the TLS counters. A leaf: it knows nothing of tenants,
//! snapshots or listeners, so the shared state can hold it.
//!
//! - [`certs`]: PEM files in and out, certificate lifetimes, files reloaded on change.
//!
//! The [`TlsRuntime`] lives in the shared state beside the snapshot: certificates change
//! without a reload, and a reload never drops them. Who uses it: `crate::https::sni`
//! (which certificate a ClientHello gets), `crate::acme` (ordering and renewing),
//! `crate::server::tls` (the TLS accept path); the `[tls]` settings are in
//! `crate::config::tls`.

pub mod certs;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use serde::Serialize;

pub use certs::LoadedCert;

/// Where one host's automatic certificate stands, for the admin API and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct HostCertStatus {
    /// The tenant the host belongs to.
    pub tenant: String,
    /// `pending` (no certificate yet), `valid`, `renewing` or `failed`.
    pub state: &'static str,
    /// End of the served certificate's validity (seconds since the epoch).
    pub not_after: Option<i64>,
    /// When it is due for renewal (seconds since the epoch).
    pub renew_at: Option<i64>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt may start after a failure (seconds since the epoch).
    pub retry_at: Option<i64>,
}

/// TLS state shared by the listeners, the plain-HTTP path and the ACME manager: the
/// certificates in service and the challenge answers. Lives as long as the process;
/// snapshots come and go around it.
#[derive(Debug)]
pub struct TlsRuntime {
    /// Operator-provided certificate files.
    pub files: certs::FileCerts,
    /// Automatic certificates by host. Read on every handshake, replaced whole (rare).
    acme: ArcSwap<HashMap<String, LoadedCert>>,
    /// HTTP-01 answers: token → (host, key authorization).
    http01: Mutex<HashMap<String, (String, String)>>,
    /// TLS-ALPN-01 answers: host → the self-signed challenge certificate.
    alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// Per-host state of automatic certificates.
    status: Mutex<BTreeMap<String, HostCertStatus>>,
    /// Orders placed since start (a counter for `/metrics`).
    orders: AtomicU64,
    /// Failed orders since start.
    order_failures: AtomicU64,
    /// `badNonce` answers from the CA (each retried by `instant-acme`).
    bad_nonces: AtomicU64,
    /// Bumped whenever an automatic certificate is installed: handshakes waiting for a
    /// host still being issued watch it.
    installed: tokio::sync::watch::Sender<u64>,
    /// Bumped on every snapshot swap: the ACME manager watches it to issue for tenants
    /// added by a reload, the admin API or the CLI.
    swaps: tokio::sync::watch::Sender<u64>,
    /// The port of the first TLS listener, for `redirect_https` (0: none).
    https_port: AtomicU16,
}

impl Default for TlsRuntime {
    fn default() -> Self {
        Self {
            files: certs::FileCerts::default(),
            acme: ArcSwap::default(),
            http01: Mutex::default(),
            alpn01: Mutex::default(),
            status: Mutex::default(),
            orders: AtomicU64::new(0),
            order_failures: AtomicU64::new(0),
            bad_nonces: AtomicU64::new(0),
            installed: tokio::sync::watch::Sender::new(0),
            swaps: tokio::sync::watch::Sender::new(0),
            https_port: AtomicU16::new(0),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl TlsRuntime {
    /// Called on every snapshot swap.
    pub fn snapshot_swapped(&self) {
        self.swaps.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The automatic certificate for `host`, if one is installed.
    pub fn acme_cert(&self, host: &str) -> Option<LoadedCert> {
        self.acme.load().get(host).cloned()
    }

    /// Installs (or replaces) the automatic certificate for `host`; the next handshake
    /// serves it.
    pub fn install(&self, host: &str, cert: LoadedCert) {
        self.acme.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(host.to_owned(), cert.clone());
            next
        });
        self.installed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Installs many automatic certificates at once (those read back from the state
    /// directory at start): one copy of the map instead of one per certificate.
    pub fn install_many(&self, certs: Vec<(String, LoadedCert)>) {
        if certs.is_empty() {
            return;
        }
        self.acme.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.extend(certs.iter().cloned());
            next
        });
        self.installed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Drops automatic certificates and states of hosts `keep` rejects.
    pub fn retain_hosts(&self, keep: impl Fn(&str) -> bool) {
        if self.acme.load().keys().any(|host| !keep(host)) {
            self.acme.rcu(|current| {
                let mut next = HashMap::clone(current);
                next.retain(|host, _| keep(host));
                next
            });
        }
        lock(&self.status).retain(|host, _| keep(host));
    }

    /// The key authorization answering an HTTP-01 challenge `token`.
    pub fn http01_answer(&self, token: &str) -> Option<String> {
        lock(&self.http01)
            .get(token)
            .map(|(_, answer)| answer.clone())
    }

    /// The TLS-ALPN-01 challenge certificate for `host`.
    pub fn alpn01_cert(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.alpn01).get(host).cloned()
    }

    /// The states of every host with an automatic certificate, by host.
    pub fn statuses(&self) -> BTreeMap<String, HostCertStatus> {
        lock(&self.status).clone()
    }

    /// The state of `host`.
    pub fn status_of(&self, host: &str) -> Option<HostCertStatus> {
        lock(&self.status).get(host).cloned()
    }

    /// Changes (or creates) the state of `host`.
    pub fn update_status(
        &self,
        host: &str,
        tenant: &str,
        change: impl FnOnce(&mut HostCertStatus),
    ) {
        let mut status = lock(&self.status);
        let entry = status
            .entry(host.to_owned())
            .or_insert_with(|| HostCertStatus {
                tenant: tenant.to_owned(),
                state: "pending",
                not_after: None,
                renew_at: None,
                failures: 0,
                last_error: None,
                retry_at: None,
            });
        entry.tenant = tenant.to_owned();
        change(entry);
    }

    /// Records that the TLS listener clients should be redirected to listens on `port`.
    pub fn set_https_port(&self, port: u16) {
        self.https_port.store(port, Ordering::Relaxed);
    }

    /// The TLS listener's port for redirects; 0 when there is none.
    pub fn https_port(&self) -> u16 {
        self.https_port.load(Ordering::Relaxed)
    }

    /// Appends the TLS metrics (Prometheus text) to `out`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let statuses = self.statuses();
        let _ = writeln!(
            out,
            "# HELP gateway_tls_certificate_expiry_seconds End of validity of the automatic certificate served for a host (Unix time).\n# TYPE gateway_tls_certificate_expiry_seconds gauge"
        );
        for (host, status) in &statuses {
            if let Some(not_after) = status.not_after {
                let _ = writeln!(
                    out,
                    "gateway_tls_certificate_expiry_seconds{{tenant=\"{}\",host=\"{}\"}} {not_after}",
                    status.tenant, host
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP gateway_tls_certificate_failures Failed ACME attempts in a row for a host.\n# TYPE gateway_tls_certificate_failures gauge"
        );
        for (host, status) in &statuses {
            let _ = writeln!(
                out,
                "gateway_tls_certificate_failures{{tenant=\"{}\",host=\"{}\"}} {}",
                status.tenant, host, status.failures
            );
        }
        let _ = writeln!(
            out,
            "# HELP gateway_tls_acme_orders_total ACME orders placed.\n# TYPE gateway_tls_acme_orders_total counter\ngateway_tls_acme_orders_total {}",
            self.orders.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP gateway_tls_acme_order_failures_total ACME orders that failed.\n# TYPE gateway_tls_acme_order_failures_total counter\ngateway_tls_acme_order_failures_total {}",
            self.order_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP gateway_tls_acme_bad_nonces_total badNonce answers from the ACME server (each retried).\n# TYPE gateway_tls_acme_bad_nonces_total counter\ngateway_tls_acme_bad_nonces_total {}",
            self.bad_nonces()
        );
    }

    /// How many `badNonce` answers the CA gave since start (each one retried).
    pub fn bad_nonces(&self) -> u64 {
        self.bad_nonces.load(Ordering::Relaxed)
    }

    /// How many ACME orders were placed since start.
    pub fn orders_placed(&self) -> u64 {
        self.orders.load(Ordering::Relaxed)
    }
}

impl TlsRuntime {
    /// Publishes an HTTP-01 answer for `host`'s pending order.
    pub(crate) fn set_http01(&self, host: &str, token: String, key_authorization: String) {
        lock(&self.http01).insert(token, (host.to_owned(), key_authorization));
    }

    /// Publishes the TLS-ALPN-01 certificate for `host`'s pending order.
    pub(crate) fn set_alpn01(&self, host: &str, cert: Arc<CertifiedKey>) {
        lock(&self.alpn01).insert(host.to_owned(), cert);
    }

    /// Counts an ACME order placed.
    pub(crate) fn count_order(&self) {
        self.orders.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an ACME order that failed.
    pub(crate) fn count_order_failure(&self) {
        self.order_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a `badNonce` answer from the CA.
    pub(crate) fn count_bad_nonce(&self) {
        self.bad_nonces.fetch_add(1, Ordering::Relaxed);
    }

    /// Wakes on every snapshot swap (the ACME manager watches it).
    pub(crate) fn subscribe_swaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.swaps.subscribe()
    }

    /// Wakes whenever an automatic certificate is installed (handshakes waiting for a
    /// host still being issued watch it).
    pub(crate) fn subscribe_installed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// Withdraws `host`'s challenge answers once its order is over.
    pub(crate) fn clear_challenges(&self, host: &str) {
        lock(&self.http01).retain(|_, (owner, _)| owner != host);
        lock(&self.alpn01).remove(host);
    }
}
