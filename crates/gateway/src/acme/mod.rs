//! Automatic certificates (RFC 8555) with `instant-acme`. The tenant registry is the
//! approval list: a certificate is only ever ordered for an exact host of an enabled tenant
//! whose `tls` is `"acme"`. The manager reconciles that list with what it holds whenever
//! a snapshot is swapped in (start, reload, admin API, CLI), when an order ends, and when a
//! renewal or a retry falls due.
//!
//! Per host:
//! ```text
//!   (none) --start/added--> pending --order ok--> valid --renewal due--> renewing
//!                              |                    ^                       |
//!                              +---order failed--> failed <--order failed---+
//!                                  (backoff, then ordered again)   ok: valid
//! ```
//! Certificates, keys and the account are written atomically (0600) to `state_dir` and
//! read back at start, so a restart orders nothing. A host that leaves the list is dropped:
//! its certificate is no longer served nor renewed (its files stay, for a return).
//!
//! This file is the renewal scheduling (which host is due, backoff, the order rate limit,
//! ARI); `order` places one order; [`client`] is the account's HTTP client (counts
//! `badNonce` retries).

pub mod client;
mod order;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{Account, CertificateIdentifier};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{AcmeConfig, TlsSetting};
use crate::snapshot::{SharedState, Snapshot};
use crate::tls::certs::{self, now_secs, CertError, LoadedCert};
use crate::tls::TlsRuntime;

/// Orders allowed per [`ORDER_WINDOW`], all hosts together: a broken DNS name or a mass
/// import cannot burn the CA's limits (Let's Encrypt: 300 new orders per 3 h).
pub const MAX_ORDERS_PER_WINDOW: usize = 20;
/// The window of [`MAX_ORDERS_PER_WINDOW`].
pub const ORDER_WINDOW: Duration = Duration::from_secs(60);
/// First retry delay after a failed order; doubled per failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// Longest delay between retries for one host.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);
/// Orders running at once.
const MAX_CONCURRENT_ORDERS: usize = 4;
/// Longest one order may take, challenges and polling included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the account to be loaded or created.
const ACCOUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often renewal information (ARI) is asked again at most.
const ARI_MIN_INTERVAL: i64 = 3600;

/// Why an order (or the account) failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA answered with an error, or could not be reached.
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    /// The CA's answer was not what the protocol promises.
    #[error("ACME: {0}")]
    Protocol(String),
    /// A key or CSR could not be made.
    #[error("key generation: {0}")]
    Key(#[from] rcgen::Error),
    /// State could not be written or read.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The account file is unreadable.
    #[error("account file {path}: {reason}")]
    Account {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client for the CA could not be set up.
    #[error(transparent)]
    Client(#[from] client::ClientError),
    /// The order took longer than allowed.
    #[error("the order did not finish within {0:?}")]
    Timeout(Duration),
}

/// A host whose tenant has `tls = "acme"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeHost {
    /// The tenant.
    pub tenant: String,
    /// Whether the tenant is enabled: only then is a certificate ordered or renewed. A
    /// suspended tenant's certificate stays in service (its 503 page is served over HTTPS).
    pub enabled: bool,
}

/// The exact hosts of tenants with `tls = "acme"`, by host.
pub fn acme_hosts(snapshot: &Snapshot) -> BTreeMap<String, AcmeHost> {
    let config = &snapshot.config;
    let mut wanted = BTreeMap::new();
    if config.tls.acme.is_none() || config.server.tls_listen.is_empty() {
        return wanted;
    }
    for (name, tenant) in &config.tenants {
        if *config.tls.setting_for(tenant) != TlsSetting::Acme {
            continue;
        }
        for host in tenant.hosts.iter().filter(|h| !h.starts_with("*.")) {
            let entry = AcmeHost {
                tenant: name.clone(),
                enabled: tenant.enabled,
            };
            wanted.insert(host.clone(), entry);
        }
    }
    wanted
}

/// Where `host`'s certificate and key are kept.
fn cert_paths(state_dir: &Path, host: &str) -> (PathBuf, PathBuf) {
    let dir = state_dir.join("certificates");
    (
        dir.join(format!("{host}.crt")),
        dir.join(format!("{host}.key")),
    )
}

/// When a certificate is due for renewal: a third of its lifetime before it ends.
fn renew_at(cert: &LoadedCert) -> i64 {
    let lifetime = (cert.not_after - cert.not_before).max(0);
    cert.not_after - lifetime / 3
}

/// What the manager knows of one host besides the runtime's public status.
#[derive(Debug, Default)]
struct HostState {
    /// When it may be ordered again after failures.
    retry_at: i64,
    failures: u32,
    /// Renewal time suggested by the CA (ARI), if any.
    ari_renew_at: Option<i64>,
    /// When to ask the CA for renewal information again.
    ari_next_check: i64,
}

/// An order's outcome, sent back to the manager loop.
struct Finished {
    host: String,
    tenant: String,
    result: Result<LoadedCert, AcmeError>,
}

/// Runs the manager until `stop`.
pub async fn run(state: Arc<SharedState>, stop: tokio_util::sync::CancellationToken) {
    let runtime = &state.tls;
    let mut swaps = runtime.subscribe_swaps();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
    let (ari_tx, mut ari_rx) = mpsc::unbounded_channel::<AriAnswer>();
    let ari_slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_ORDERS));
    let mut hosts: HashMap<String, HostState> = HashMap::new();
    let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut recent_orders: VecDeque<tokio::time::Instant> = VecDeque::new();
    let mut account: Option<(AcmeConfig, Account)> = None;
    let mut account_failures = 0u32;
    let mut account_retry_at = 0i64;
    let mut account_error: Option<String> = None;
    // The settings the last failed account attempt used: new ones are tried at once.
    let mut failed_with: Option<AcmeConfig> = None;
    loop {
        // Outcomes first: a finished order must be installed before its host is looked
        // at, or the pass would see no certificate and order a second one.
        while let Ok(finished) = done_rx.try_recv() {
            running.remove(&finished.host);
            finish(runtime, &mut hosts, finished);
        }
        let snapshot = state.load();
        let wanted = acme_hosts(&snapshot);
        // Hosts no longer wanted: stop serving, renewing and ordering for them.
        runtime.retain_hosts(|host| wanted.contains_key(host));
        hosts.retain(|host, _| wanted.contains_key(host));
        // A task that finished without reporting (it panicked) is forgotten too.
        running.retain(|host, task| {
            let keep = wanted.contains_key(host) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        let mut wake = tokio::time::Instant::now() + Duration::from_secs(3600);
        if let Some(acme) = snapshot.config.tls.acme.clone() {
            let state_dir = snapshot.config.tls.state_dir.clone();
            if account.as_ref().is_some_and(|(config, _)| *config != acme) {
                account = None;
            }
            if failed_with.as_ref().is_some_and(|config| *config != acme) {
                failed_with = None;
                account_retry_at = 0;
            }
            let now = now_secs();
            let mut from_disk = Vec::new();
            for (host, AcmeHost { tenant, enabled }) in &wanted {
                let host_state = hosts.entry(host.clone()).or_default();
                let mut current = runtime.acme_cert(host);
                if current.is_none() {
                    let (cert_path, key_path) = cert_paths(&state_dir, host);
                    if let Ok(loaded) = certs::load_pair(&cert_path, &key_path) {
                        if loaded.not_after > now {
                            tracing::info!(
                                host,
                                tenant,
                                not_after = loaded.not_after,
                                "certificate loaded from the state directory"
                            );
                            from_disk.push((host.clone(), loaded.clone()));
                            current = Some(loaded);
                        }
                    }
                }
                if running.contains_key(host) || !enabled {
                    continue;
                }
                let due = match &current {
                    None => now,
                    Some(cert) => {
                        if let Some((_, acct)) = &account {
                            if host_state.ari_next_check <= now {
                                host_state.ari_next_check = now + ARI_MIN_INTERVAL;
                                tokio::spawn(check_ari(
                                    acct.clone(),
                                    cert.clone(),
                                    host.clone(),
                                    ari_slots.clone(),
                                    ari_tx.clone(),
                                ));
                            }
                        }
                        let due = host_state
                            .ari_renew_at
                            .map_or(renew_at(cert), |ari| ari.min(renew_at(cert)));
                        runtime.update_status(host, tenant, |s| {
                            if s.state != "failed" {
                                s.state = "valid";
                            }
                            s.not_after = Some(cert.not_after);
                            s.renew_at = Some(due);
                        });
                        due
                    }
                };
                if current.is_none() {
                    runtime.update_status(host, tenant, |_| {});
                }
                let start = due.max(host_state.retry_at);
                if start > now {
                    wake = wake.min(instant_in(start - now));
                    continue;
                }
                // Global rate limit on orders.
                let window_start = tokio::time::Instant::now() - ORDER_WINDOW;
                while recent_orders.front().is_some_and(|t| *t < window_start) {
                    recent_orders.pop_front();
                }
                if recent_orders.len() >= MAX_ORDERS_PER_WINDOW
                    || running.len() >= MAX_CONCURRENT_ORDERS
                {
                    if let Some(oldest) = recent_orders.front() {
                        wake = wake.min(*oldest + ORDER_WINDOW);
                    }
                    continue;
                }
                // Without an account nothing can be ordered: one attempt (and one
                // backoff) for all hosts, not one per host.
                if account.is_none() && account_retry_at <= now {
                    let attempt = tokio::time::timeout(
                        ACCOUNT_TIMEOUT,
                        order::load_or_create_account(&acme, &state_dir, &state.tls),
                    )
                    .await
                    .unwrap_or(Err(AcmeError::Timeout(ACCOUNT_TIMEOUT)));
                    match attempt {
                        Ok(acct) => {
                            account = Some((acme.clone(), acct));
                            account_failures = 0;
                            account_error = None;
                            failed_with = None;
                        }
                        Err(err) => {
                            account_failures += 1;
                            account_retry_at = now + backoff(account_failures).as_secs() as i64;
                            tracing::error!(error = %err, directory = %acme.directory, retry_in_secs = account_retry_at - now, "ACME account unavailable; no certificate can be ordered");
                            account_error = Some(format!("ACME account unavailable: {err}"));
                            failed_with = Some(acme.clone());
                        }
                    }
                }
                let Some((_, acct)) = &account else {
                    let (error, retry_at) = (account_error.clone(), account_retry_at);
                    runtime.update_status(host, tenant, |s| {
                        s.state = "failed";
                        s.failures = account_failures;
                        s.last_error = error;
                        s.retry_at = Some(retry_at);
                    });
                    wake = wake.min(instant_in(account_retry_at - now));
                    continue;
                };
                let acct = acct.clone();
                recent_orders.push_back(tokio::time::Instant::now());
                runtime.count_order();
                runtime.update_status(host, tenant, |s| {
                    if current.is_some() {
                        s.state = "renewing";
                    }
                });
                let replaces = current.as_ref().and_then(|cert| identifier_of(cert));
                tracing::info!(
                    host,
                    tenant,
                    renewal = current.is_some(),
                    "ordering a certificate"
                );
                let task_state = state.clone();
                let done = done_tx.clone();
                let (host, tenant) = (host.clone(), tenant.clone());
                let challenge = acme.challenge;
                let dir = state_dir.clone();
                running.insert(
                    host.clone(),
                    tokio::spawn(async move {
                        let order =
                            order::issue(&acct, &task_state.tls, &host, challenge, &dir, replaces);
                        let result = match tokio::time::timeout(ORDER_TIMEOUT, order).await {
                            Ok(result) => result,
                            Err(_) => Err(AcmeError::Timeout(ORDER_TIMEOUT)),
                        };
                        task_state.tls.clear_challenges(&host);
                        let _ = done.send(Finished {
                            host,
                            tenant,
                            result,
                        });
                    }),
                );
            }
            runtime.install_many(from_disk);
        }
        drop(snapshot);
        tokio::select! {
            () = stop.cancelled() => break,
            changed = swaps.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(finished) = done_rx.recv() => {
                running.remove(&finished.host);
                finish(runtime, &mut hosts, finished);
            }
            Some(answer) = ari_rx.recv() => {
                if let Some(host) = hosts.get_mut(&answer.host) {
                    if answer.renew_at.is_some() {
                        host.ari_renew_at = answer.renew_at;
                    }
                    host.ari_next_check = answer.next_check;
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    for (_, task) in running {
        task.abort();
    }
}

fn instant_in(secs: i64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(u64::try_from(secs.max(1)).unwrap_or(1))
}

fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Records an order's outcome.
fn finish(runtime: &TlsRuntime, hosts: &mut HashMap<String, HostState>, finished: Finished) {
    let Finished {
        host,
        tenant,
        result,
    } = finished;
    // A host removed while its order ran is not installed.
    let Some(host_state) = hosts.get_mut(&host) else {
        return;
    };
    match result {
        Ok(cert) => {
            tracing::info!(
                host,
                tenant,
                not_after = cert.not_after,
                "certificate issued"
            );
            host_state.failures = 0;
            host_state.retry_at = 0;
            host_state.ari_renew_at = None;
            host_state.ari_next_check = 0;
            let (not_after, due) = (cert.not_after, renew_at(&cert));
            runtime.install(&host, cert);
            runtime.update_status(&host, &tenant, |s| {
                s.state = "valid";
                s.not_after = Some(not_after);
                s.renew_at = Some(due);
                s.failures = 0;
                s.last_error = None;
                s.retry_at = None;
            });
        }
        Err(err) => {
            runtime.count_order_failure();
            host_state.failures += 1;
            let delay = backoff(host_state.failures);
            host_state.retry_at = now_secs() + delay.as_secs() as i64;
            tracing::warn!(host, tenant, error = %err, failures = host_state.failures, retry_in = ?delay, "certificate order failed");
            let (failures, retry_at) = (host_state.failures, host_state.retry_at);
            runtime.update_status(&host, &tenant, |s| {
                s.state = "failed";
                s.failures = failures;
                s.last_error = Some(err.to_string());
                s.retry_at = Some(retry_at);
            });
        }
    }
}

/// The ARI identifier of a certificate (authority key id and serial).
fn identifier_of(cert: &LoadedCert) -> Option<CertificateIdentifier<'static>> {
    let leaf: &CertificateDer<'_> = cert.key.cert.first()?;
    CertificateIdentifier::try_from(leaf)
        .ok()
        .map(CertificateIdentifier::into_owned)
}

/// The CA's renewal information for one host.
struct AriAnswer {
    host: String,
    /// The start of the suggested renewal window, when the CA gave one.
    renew_at: Option<i64>,
    /// When to ask again.
    next_check: i64,
}

/// Asks the CA when to renew (RFC 9773) in a task of its own (a slow CA must not hold up
/// the manager), at most once per [`ARI_MIN_INTERVAL`] per host; a CA without ARI leaves
/// the third-of-lifetime rule alone.
async fn check_ari(
    account: Account,
    cert: LoadedCert,
    host: String,
    slots: Arc<tokio::sync::Semaphore>,
    answers: mpsc::UnboundedSender<AriAnswer>,
) {
    let Ok(_slot) = slots.acquire().await else {
        return;
    };
    let now = now_secs();
    let mut answer = AriAnswer {
        host,
        renew_at: None,
        next_check: now + ARI_MIN_INTERVAL,
    };
    if let Some(id) = identifier_of(&cert) {
        let info = tokio::time::timeout(Duration::from_secs(10), account.renewal_info(&id)).await;
        if let Ok(Ok((info, retry_after))) = info {
            answer.renew_at = Some(info.suggested_window.start.unix_timestamp());
            let retry = i64::try_from(retry_after.as_secs()).unwrap_or(i64::MAX / 2);
            answer.next_check = now.saturating_add(retry.max(ARI_MIN_INTERVAL));
        }
    }
    let _ = answers.send(answer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_minute_up_to_a_day() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(120));
        assert_eq!(backoff(5), Duration::from_secs(16 * 60));
        assert_eq!(backoff(30), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn renewal_falls_due_with_a_third_of_the_lifetime_left() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = cert.pem();
        let loaded = certs::parse_pair(
            pem.as_bytes(),
            key.serialize_pem().as_bytes(),
            Path::new("a.crt"),
            Path::new("a.key"),
        )
        .unwrap();
        let lifetime = loaded.not_after - loaded.not_before;
        assert_eq!(renew_at(&loaded), loaded.not_after - lifetime / 3);
    }
}
