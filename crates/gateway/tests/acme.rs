//! Automatic certificates against a real ACME CA (pebble, Let's Encrypt's test server):
//! issuance through TLS-ALPN-01 and HTTP-01, reuse after a restart, a tenant added through
//! the admin API served over HTTPS within seconds, a removed tenant not renewed, no order
//! for a name no tenant serves, early renewal when the CA's renewal information (ARI) says
//! so. Skipped with a message when pebble is not installed.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fpm_harness::{fixtures_dir, Fpm, FpmConfig, Listen};
use gateway::config::Config;
use gateway::snapshot::SharedState;
use http::{Request, StatusCode};
use http_body_util::Full;
use rustls::pki_types::CertificateDer;
use support::ari::{self, AriFront};
use support::logs::LogCapture;
use support::multi_tenant::send_to;
use support::pebble::{free_port, until, Pebble};
use support::tls_client::{client_config, connect, get, peer_leaf, send};
use support::{start_fpm, Reply, Served};

/// How long a first certificate may take: pebble answers at once (`PEBBLE_VA_NOSLEEP`),
/// but the machine may be busy compiling.
const ISSUE_LIMIT: Duration = Duration::from_secs(60);

/// The files of one deployment (config, state_dir) and its fixed ports, which pebble
/// validates against and which a restart binds again.
struct Site {
    dir: tempfile::TempDir,
    plain_port: u16,
    tls_port: u16,
    acme_port: u16,
    _fpm: Fpm,
}

/// A gateway serving the site's config file.
struct Running {
    state: Arc<SharedState>,
    admin: SocketAddr,
    tls: SocketAddr,
    served: Served,
}

impl Site {
    fn new() -> Site {
        Site {
            dir: tempfile::tempdir().expect("scratch dir"),
            plain_port: free_port(),
            tls_port: free_port(),
            acme_port: free_port(),
            _fpm: start_fpm(FpmConfig::new().listen(Listen::Unix).workers(2)),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn pebble(&self, validity_secs: u64) -> Pebble {
        Pebble::start(
            self.dir.path(),
            self.acme_port,
            self.plain_port,
            self.tls_port,
            validity_secs,
        )
        .await
    }

    /// Writes the config: `challenge`, and a tenant per host of `hosts` (named like
    /// its first label).
    fn write_config(&self, pebble: &Pebble, challenge: &str, hosts: &[&str]) {
        self.write_config_for(&pebble.directory, pebble, challenge, hosts);
    }

    /// [`Site::write_config`] with another ACME directory URL (one served by a front
    /// trusting the same root as pebble's listener).
    fn write_config_for(&self, directory: &str, pebble: &Pebble, challenge: &str, hosts: &[&str]) {
        let mut text = format!(
            r#"[server]
listen = "127.0.0.1:{plain}"
tls_listen = "127.0.0.1:{tls}"
admin = "127.0.0.1:0"

[fastcgi]
upstream = {upstream:?}
root = {root:?}
max_connections = 2

[tls]
state_dir = "state"
acme_directory = {directory:?}
acme_email = "ops@example.org"
acme_challenge = {challenge:?}
acme_ca_root = {ca_root:?}
"#,
            plain = self.plain_port,
            tls = self.tls_port,
            upstream = self._fpm.address().to_upstream_string(),
            root = fixtures_dir().display().to_string(),
            directory = directory,
            ca_root = pebble.listener_root.display().to_string(),
        );
        for host in hosts {
            let name = host.split('.').next().unwrap_or("t");
            text.push_str(&format!(
                "\n[tenants.{name}]\nhosts = [{host:?}]\nparams = {{ TENANT_ID = {name:?} }}\n"
            ));
        }
        std::fs::write(self.path("tenants.toml"), text).expect("write config");
    }

    async fn start(&self) -> Running {
        let config = Config::load(self.path("tenants.toml"))
            .unwrap_or_else(|err| panic!("test config: {err}"));
        let served = Served::bind(config).await;
        Running {
            state: served.state.clone(),
            admin: served.admin.expect("admin API"),
            tls: served.tls[0],
            served,
        }
    }
}

impl Running {
    async fn stopped(self) {
        self.served.stopped(Duration::from_secs(40)).await;
    }

    /// The leaf served for `host`, once a handshake trusting `root` succeeds.
    async fn served_leaf(
        &self,
        root: &CertificateDer<'static>,
        host: &str,
    ) -> Option<CertificateDer<'static>> {
        let config = client_config(std::slice::from_ref(root), &[b"http/1.1"]);
        connect(self.tls, config, host)
            .await
            .ok()
            .map(|tls| peer_leaf(&tls))
    }

    async fn wait_for_leaf(
        &self,
        root: &CertificateDer<'static>,
        host: &str,
    ) -> CertificateDer<'static> {
        let mut leaf = None;
        let found = until(ISSUE_LIMIT, async || {
            leaf = self.served_leaf(root, host).await;
            leaf.is_some()
        })
        .await;
        assert!(
            found,
            "no certificate for {host} within {ISSUE_LIMIT:?}: {:?}",
            self.state.tls.status_of(host)
        );
        leaf.expect("found")
    }

    async fn admin(&self, method: &str, target: &str, body: Option<&str>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(target)
            .header("host", "admin");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = Full::new(Bytes::from(body.unwrap_or("").to_owned()));
        send_to(self.admin, req.body(body).expect("request")).await
    }
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow end-to-end (pebble); scripts/test.sh runs it"]
async fn two_tenants_get_certificates_by_tls_alpn_01_and_a_restart_reuses_them() {
    if !Pebble::available() {
        return;
    }
    let site = Site::new();
    let pebble = site.pebble(3600).await;
    site.write_config(&pebble, "tls-alpn-01", &["a.test", "b.test"]);
    let gateway = site.start().await;
    let root = pebble.issuing_root().await;
    let leaf_a = gateway.wait_for_leaf(&root, "a.test").await;
    let leaf_b = gateway.wait_for_leaf(&root, "b.test").await;
    assert_ne!(leaf_a, leaf_b);
    // Served over HTTPS with the tenant's params.
    let tls = connect(
        gateway.tls,
        client_config(std::slice::from_ref(&root), &[b"h2"]),
        "a.test",
    )
    .await
    .unwrap();
    let (reply, _) = send(tls, get("a.test", "/params.php?only=TENANT_ID")).await;
    assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "a"));

    // A name no tenant serves: refused, and never ordered.
    assert!(gateway.served_leaf(&root, "nobody.test").await.is_none());
    assert_eq!(gateway.state.tls.orders_placed(), 2);
    let status = gateway
        .state
        .tls
        .status_of("a.test")
        .expect("a.test has a state");
    assert_eq!((status.state, status.tenant.as_str()), ("valid", "a"));

    // State on disk, private.
    for file in [
        "account.json",
        "certificates/a.test.key",
        "certificates/a.test.crt",
    ] {
        assert_eq!(mode_of(&site.path("state").join(file)), 0o600, "{file}");
    }
    gateway.stopped().await;

    // A restart serves the same certificates and orders nothing.
    let gateway = site.start().await;
    assert_eq!(gateway.wait_for_leaf(&root, "a.test").await, leaf_a);
    assert_eq!(gateway.wait_for_leaf(&root, "b.test").await, leaf_b);
    assert_eq!(gateway.state.tls.orders_placed(), 0);
    gateway.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow end-to-end (pebble); scripts/test.sh runs it"]
async fn http_01_issues_through_the_plain_listener() {
    if !Pebble::available() {
        return;
    }
    let site = Site::new();
    let pebble = site.pebble(3600).await;
    site.write_config(&pebble, "http-01", &["h.test"]);
    let gateway = site.start().await;
    let root = pebble.issuing_root().await;
    gateway.wait_for_leaf(&root, "h.test").await;
    assert_eq!(gateway.state.tls.orders_placed(), 1);
    // Now that it has a certificate, plain HTTP is redirected.
    let reply = send_to(
        SocketAddr::from(([127, 0, 0, 1], site.plain_port)),
        Request::get("/x")
            .header("host", "h.test")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    gateway.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow end-to-end (pebble); scripts/test.sh runs it"]
async fn a_tenant_added_through_the_admin_api_is_served_over_https_and_a_removed_one_is_not_renewed(
) {
    if !Pebble::available() {
        return;
    }
    let site = Site::new();
    // Certificates valid 30 s: renewal falls due 20 s after issuance.
    let pebble = site.pebble(30).await;
    site.write_config(&pebble, "tls-alpn-01", &["a.test"]);
    let gateway = site.start().await;
    let root = pebble.issuing_root().await;
    let first_a = gateway.wait_for_leaf(&root, "a.test").await;

    let added = Instant::now();
    let reply = gateway
        .admin(
            "PUT",
            "/tenants/c",
            Some(r#"{"hosts": ["c.test"], "params": {"TENANT_ID": "c"}}"#),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    gateway.wait_for_leaf(&root, "c.test").await;
    eprintln!(
        "c.test served over HTTPS {:?} after the PUT",
        added.elapsed()
    );
    let view = gateway.admin("GET", "/tenants/c", None).await.json();
    assert_eq!(view["certificates"]["c.test"]["state"], "valid", "{view}");
    assert!(view["certificates"]["c.test"]["not_after"]
        .as_i64()
        .is_some());
    let c_renew_at = view["certificates"]["c.test"]["renew_at"]
        .as_i64()
        .expect("renew_at");
    let c_cert = std::fs::read(site.path("state/certificates/c.test.crt")).unwrap();

    // A suspended tenant keeps its certificate: its 503 page is served over HTTPS.
    let reply = gateway.admin("POST", "/tenants/c/suspend", None).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let tls = connect(
        gateway.tls,
        client_config(std::slice::from_ref(&root), &[b"h2"]),
        "c.test",
    )
    .await
    .expect("a suspended tenant's certificate is still served");
    let (reply, _) = send(tls, get("c.test", "/")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    let reply = gateway.admin("DELETE", "/tenants/c", None).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    assert!(gateway.state.tls.status_of("c.test").is_none());
    assert!(gateway.served_leaf(&root, "c.test").await.is_none());

    // a.test is renewed when due; c.test, removed, is not (its certificate file stays as
    // it was even after its renewal time has passed).
    let renewed = until(Duration::from_secs(60), async || {
        gateway
            .served_leaf(&root, "a.test")
            .await
            .is_some_and(|leaf| leaf != first_a)
    })
    .await;
    assert!(
        renewed,
        "a.test was not renewed: {:?}",
        gateway.state.tls.status_of("a.test")
    );
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    while now() < c_renew_at + 3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        std::fs::read(site.path("state/certificates/c.test.crt")).unwrap(),
        c_cert
    );
    assert!(gateway.state.tls.status_of("c.test").is_none());
    gateway.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow end-to-end (pebble); scripts/test.sh runs it"]
async fn a_certificate_is_renewed_early_when_the_cas_renewal_information_says_so() {
    if !Pebble::available() {
        return;
    }
    let site = Site::new();
    // Valid a day: by the third-of-lifetime rule, renewal would be 16 h away.
    let pebble = site.pebble(86_400).await;
    let front = AriFront::start(&pebble, site.dir.path()).await;
    site.write_config_for(&front.directory, &pebble, "tls-alpn-01", &["r.test"]);
    let gateway = site.start().await;
    let root = pebble.issuing_root().await;
    let first = gateway.wait_for_leaf(&root, "r.test").await;

    // The CA's window for the first certificate has begun: it is replaced now, once.
    let renewed = until(ISSUE_LIMIT, async || {
        gateway
            .served_leaf(&root, "r.test")
            .await
            .is_some_and(|leaf| leaf != first)
    })
    .await;
    assert!(
        renewed,
        "r.test was not renewed early; ARI asked about {:?}; status {:?}",
        front.asked(),
        gateway.state.tls.status_of("r.test")
    );
    let second = gateway.served_leaf(&root, "r.test").await.expect("served");
    // The renewal information was asked for the certificate served, by its identifier.
    let asked = front.asked();
    assert_eq!(
        asked.first(),
        Some(&ari::identifier_of(&first)),
        "{asked:?}"
    );
    // The new certificate is asked about too, and its window (a month away) is kept: no
    // second renewal.
    let asked_second = until(ISSUE_LIMIT, async || {
        front.asked().contains(&ari::identifier_of(&second))
    })
    .await;
    assert!(asked_second, "{:?}", front.asked());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gateway.state.tls.orders_placed(), 2);
    let status = gateway.state.tls.status_of("r.test").expect("status");
    assert_eq!(status.state, "valid", "{status:?}");
    // Whichever comes first: the new window is a month away, so the day-long
    // certificate's own rule (a third of its life before the end) is what shows.
    let renew_at = status.renew_at.expect("renew_at");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(renew_at > now + 3600, "renew_at {renew_at}, now {now}");
    gateway.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow end-to-end (pebble); scripts/test.sh runs it"]
async fn bad_nonce_answers_from_the_ca_are_retried() {
    if !Pebble::available() {
        return;
    }
    // Every thread's logs, to show why an order failed, if one did.
    LogCapture::global();
    let site = Site::new();
    let pebble = site.pebble(3600).await;
    site.write_config(&pebble, "tls-alpn-01", &["n0.test"]);
    let gateway = site.start().await;
    let root = pebble.issuing_root().await;
    gateway.wait_for_leaf(&root, "n0.test").await;
    // Pebble rejects 5 % of nonces at random (PEBBLE_WFE_NONCEREJECT): add tenants until
    // the CA has answered badNonce at least once; every order must still succeed.
    let mut tenants = 1;
    // At least one is added through the admin API, with its tls written out.
    loop {
        let body = format!(r#"{{"hosts": ["n{tenants}.test"], "tls": "acme"}}"#);
        let reply = gateway
            .admin("PUT", &format!("/tenants/n{tenants}"), Some(&body))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        gateway
            .wait_for_leaf(&root, &format!("n{tenants}.test"))
            .await;
        tenants += 1;
        if gateway.state.tls.bad_nonces() > 0 || tenants >= 25 {
            break;
        }
    }
    let view = gateway.admin("GET", "/tenants/n1", None).await.json();
    assert_eq!(view["tls"], "acme", "{view}");
    let bad_nonces = gateway.state.tls.bad_nonces();
    let failures: Vec<String> = LogCapture::global()
        .lines()
        .into_iter()
        .filter(|line| line.contains("order failed"))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(bad_nonces > 0, "no badNonce in {tenants} orders");
    for (host, status) in gateway.state.tls.statuses() {
        assert_eq!((status.state, status.failures), ("valid", 0), "{host}");
    }
    let metrics = gateway.admin("GET", "/metrics", None).await.text();
    assert!(
        metrics.contains(&format!("gateway_tls_acme_bad_nonces_total {bad_nonces}\n")),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_tls_acme_order_failures_total 0\n"));
    assert!(
        metrics.contains("gateway_tls_certificate_expiry_seconds{tenant=\"n0\",host=\"n0.test\"} ")
    );
    eprintln!("{bad_nonces} badNonce answers retried over {tenants} orders");
    gateway.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow end-to-end (pebble); scripts/test.sh runs it"]
async fn handshakes_wait_a_bounded_time_then_fail_cleanly_when_the_ca_is_unreachable() {
    // No CA listens on this port: no pebble needed.
    let site = Site::new();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
tls_listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[fastcgi]
upstream = {upstream:?}
root = {root:?}

[tls]
state_dir = "state"
acme_directory = "https://127.0.0.1:{port}/dir"

[tenants.u]
hosts = ["u.test"]
"#,
        upstream = site._fpm.address().to_upstream_string(),
        root = fixtures_dir().display().to_string(),
        port = free_port(),
    );
    std::fs::write(site.path("tenants.toml"), text).unwrap();
    let gateway = site.start().await;
    let started = Instant::now();
    let err = connect(gateway.tls, client_config(&[], &[b"h2"]), "u.test")
        .await
        .expect_err("no certificate can be issued");
    let waited = started.elapsed();
    let alert = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .cloned();
    assert_eq!(
        alert,
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::InternalError
        )),
        "{err}"
    );
    assert!(
        waited >= Duration::from_secs(7) && waited < Duration::from_secs(15),
        "the handshake waited {waited:?}"
    );
    let view = gateway.admin("GET", "/tenants/u", None).await.json();
    let cert = &view["certificates"]["u.test"];
    assert_eq!(cert["state"], "failed", "{view}");
    assert!(
        cert["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("ACME account unavailable")),
        "{view}"
    );
    assert!(cert["retry_at"].as_i64().is_some());
    let metrics = gateway.admin("GET", "/metrics", None).await.text();
    assert!(
        metrics.contains("gateway_tls_certificate_failures{tenant=\"u\",host=\"u.test\"} 1\n"),
        "{metrics}"
    );
    gateway.stopped().await;
}
