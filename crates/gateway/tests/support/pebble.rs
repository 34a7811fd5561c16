//! Let's Encrypt's test CA for the ACME tests: `pebble` with a listener certificate made
//! here (rcgen), validating challenges against the gateway's own ports, and
//! `pebble-challtestsrv` as its DNS server answering 127.0.0.1 for every name. Both are
//! Debian packages; [`Pebble::available`] says whether they are installed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::tls_client::{client_config, connect, send, TestCa};
use super::{eventually, SOON};

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// A free loopback port (bound and released: the OS does not hand it out again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running pebble and its DNS server, killed on drop.
pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    /// The root certificate pebble's listener uses (give it to the gateway as
    /// `acme_ca_root`).
    pub listener_root: PathBuf,
    management: SocketAddr,
    ca: TestCa,
    pebble: Child,
    dns: Child,
}

impl Pebble {
    /// Whether pebble and pebble-challtestsrv are installed; prints why a test skips when
    /// they are not.
    pub fn available() -> bool {
        let found = Path::new(PEBBLE).exists() && Path::new(CHALLTESTSRV).exists();
        if !found {
            eprintln!("skipped: {PEBBLE} or {CHALLTESTSRV} is missing (apt-get install pebble)");
        }
        found
    }

    /// Starts pebble (ACME on a free port) validating HTTP-01 on `http_port` and
    /// TLS-ALPN-01 on `tls_port` of 127.0.0.1, issuing certificates valid for
    /// `validity_secs`; files go to `dir`. Returns once the directory answers.
    pub async fn start(
        dir: &Path,
        acme_port: u16,
        http_port: u16,
        tls_port: u16,
        validity_secs: u64,
    ) -> Pebble {
        let ca = TestCa::new();
        let cert = dir.join("pebble-listener.crt");
        let key = dir.join("pebble-listener.key");
        ca.issue(&["localhost", "127.0.0.1"], &cert, &key);
        let listener_root = dir.join("pebble-root.pem");
        std::fs::write(&listener_root, ca.pem()).expect("write pebble root");
        let management = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dns_port = free_port();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": management.to_string(),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity_secs,
            }
        });
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble config");
        let log =
            |name: &str| Stdio::from(std::fs::File::create(dir.join(name)).expect("log file"));
        let dns = Command::new(CHALLTESTSRV)
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{}", free_port()),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("start pebble-challtestsrv");
        let pebble = Command::new(PEBBLE)
            .args([
                "-config",
                &config_path.display().to_string(),
                "-dnsserver",
                &format!("127.0.0.1:{dns_port}"),
            ])
            // Validate at once instead of after a random sleep; reject 5 % of nonces
            // (pebble's default, set here so the retry path is always exercised).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "5")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("start pebble");
        // Both of pebble's listeners: the ACME one and the management one (its roots).
        let up = eventually(SOON, || {
            std::net::TcpStream::connect(("127.0.0.1", acme_port)).is_ok()
                && std::net::TcpStream::connect(management).is_ok()
        })
        .await;
        assert!(
            up,
            "pebble did not start listening on {acme_port} and {management}"
        );
        Pebble {
            directory: format!("https://127.0.0.1:{acme_port}/dir"),
            listener_root,
            management,
            ca,
            pebble,
            dns,
        }
    }

    /// The CA of pebble's listener certificate (to make more servers the same
    /// `acme_ca_root` trusts).
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The root of the certificates pebble issues (it makes a new one at each start).
    pub async fn issuing_root(&self) -> CertificateDer<'static> {
        let tls = connect(
            self.management,
            client_config(&[self.ca.der()], &[b"http/1.1"]),
            "127.0.0.1",
        )
        .await
        .expect("pebble management handshake");
        let req = Request::get("https://127.0.0.1/roots/0")
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (reply, _) = send(tls, req).await;
        CertificateDer::from_pem_slice(&reply.body).expect("pebble root PEM")
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.dns.kill();
        let _ = self.pebble.wait();
        let _ = self.dns.wait();
    }
}

/// Waits until `check` holds, polling every 100 ms, up to `limit`.
pub async fn until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
