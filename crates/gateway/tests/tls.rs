//! HTTPS with certificate files: the certificate chosen by SNI from the tenant registry,
//! unknown names refused, 421 for a Host of another tenant, HTTP/2 and HTTP/1.1 by ALPN,
//! a replaced certificate file served on the next handshake, the CGI params of a TLS
//! connection, uploads and big downloads (a big static file too, read over TLS and sent
//! with sendfile on plain HTTP), and plain HTTP's redirect to HTTPS.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use fpm_harness::{fixtures_dir, Crc32, Fpm, FpmConfig, Listen};
use gateway::config::Config;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use rustls::pki_types::CertificateDer;
use support::multi_tenant::send_to;
use support::tls_client::{client_config, connect, get, peer_leaf, send, TestCa};
use support::{start_fpm, within, Served, REQUEST_LIMIT};

/// PHP-FPM and a gateway with a plain and a TLS listener, tenants with file certificates.
struct TlsGateway {
    plain: SocketAddr,
    tls: SocketAddr,
    ca: TestCa,
    dir: tempfile::TempDir,
    leaf_a: CertificateDer<'static>,
    leaf_b: CertificateDer<'static>,
    _served: Served,
    fpm: Fpm,
}

impl TlsGateway {
    async fn start() -> TlsGateway {
        let fpm = start_fpm(FpmConfig::new().listen(Listen::Unix).workers(3));
        let dir = tempfile::tempdir().expect("scratch dir");
        let ca = TestCa::new();
        let path = |name: &str| dir.path().join(name);
        let leaf_a = ca.issue(&["a.example"], &path("a.crt"), &path("a.key"));
        let leaf_b = ca.issue(&["b.example"], &path("b.crt"), &path("b.key"));
        ca.issue(&["*.w.example"], &path("w.crt"), &path("w.key"));
        let text = format!(
            r#"[server]
listen = "127.0.0.1:0"
tls_listen = "127.0.0.1:0"
hsts = "max-age=31536000"

[fastcgi]
upstream = {upstream:?}
root = {root:?}
max_connections = 3

[tenants.a]
hosts = ["a.example"]
params = {{ TENANT_ID = "a" }}
tls = {{ cert = "a.crt", key = "a.key" }}

[tenants.b]
hosts = ["b.example"]
params = {{ TENANT_ID = "b" }}
tls = {{ cert = "b.crt", key = "b.key" }}

[tenants.wild]
hosts = ["*.w.example"]
params = {{ TENANT_ID = "wild" }}
tls = {{ cert = "w.crt", key = "w.key" }}

[tenants.plain]
hosts = ["plain.example"]
params = {{ TENANT_ID = "plain" }}
tls = "off"
"#,
            upstream = fpm.address().to_upstream_string(),
            root = fixtures_dir().display().to_string(),
        );
        let config = Config::parse(&text, "tenants.toml", dir.path())
            .unwrap_or_else(|err| panic!("test config is valid: {err}"));
        let served = Served::bind(config).await;
        TlsGateway {
            plain: served.addr,
            tls: served.tls[0],
            ca,
            dir,
            leaf_a,
            leaf_b,
            _served: served,
            fpm,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client(&self, alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
        client_config(&[self.ca.der()], alpn)
    }

    /// GET over a fresh HTTPS connection (SNI `sni`, Host `host`).
    async fn get(&self, sni: &str, host: &str, target: &str) -> (support::Reply, Version) {
        let tls = connect(self.tls, self.client(&[b"http/1.1"]), sni)
            .await
            .expect("handshake");
        send(tls, get(host, target)).await
    }
}

/// The alert a refused handshake ended with, as the client saw it.
fn alert_of(err: &std::io::Error) -> Option<rustls::AlertDescription> {
    let inner = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    match inner {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_gets_its_own_certificate_by_sni() {
    let gw = TlsGateway::start().await;
    let tls = connect(gw.tls, gw.client(&[]), "a.example").await.unwrap();
    assert_eq!(peer_leaf(&tls), gw.leaf_a);
    let (reply, _) = send(tls, get("a.example", "/params.php?only=TENANT_ID")).await;
    assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "a"));

    let tls = connect(gw.tls, gw.client(&[]), "b.example").await.unwrap();
    assert_eq!(peer_leaf(&tls), gw.leaf_b);
    // SNI is case-insensitive, like Host.
    let tls = connect(gw.tls, gw.client(&[]), "B.Example").await.unwrap();
    assert_eq!(peer_leaf(&tls), gw.leaf_b);

    // A wildcard host with a file certificate.
    let (reply, _) = gw
        .get("x.w.example", "x.w.example", "/params.php?only=TENANT_ID")
        .await;
    assert_eq!(reply.text(), "wild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_no_tenant_serves_over_tls_are_refused_with_unrecognized_name() {
    let gw = TlsGateway::start().await;
    for sni in ["nobody.example", "plain.example", "w.example"] {
        let err = connect(gw.tls, gw.client(&[]), sni)
            .await
            .expect_err("no certificate for this name");
        assert_eq!(
            alert_of(&err),
            Some(rustls::AlertDescription::UnrecognisedName),
            "{sni}: {err}"
        );
    }
    // An IP address as the name: the client sends no SNI, and there is no default_tenant.
    let err = connect(gw.tls, gw.client(&[]), "127.0.0.1")
        .await
        .expect_err("SNI-less clients are refused");
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::UnrecognisedName)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_of_another_tenant_than_the_sni_gets_421() {
    let gw = TlsGateway::start().await;
    let (reply, _) = gw
        .get("a.example", "b.example", "/params.php?only=TENANT_ID")
        .await;
    assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST);
    assert_ne!(reply.text(), "b", "b's page leaked");
    let (reply, _) = gw
        .get("a.example", "a.example", "/params.php?only=TENANT_ID")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_chooses_http2_or_http1() {
    let gw = TlsGateway::start().await;
    let tls = connect(gw.tls, gw.client(&[b"h2", b"http/1.1"]), "a.example")
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (reply, version) = send(tls, get("a.example", "/params.php?only=SERVER_PROTOCOL")).await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(reply.text(), "HTTP/2.0");

    let tls = connect(gw.tls, gw.client(&[b"http/1.1"]), "a.example")
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (reply, version) = send(tls, get("a.example", "/params.php?only=SERVER_PROTOCOL")).await;
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(reply.text(), "HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_file_replaced_on_disk_is_served_on_the_next_handshake() {
    let gw = TlsGateway::start().await;
    let tls = connect(gw.tls, gw.client(&[]), "a.example").await.unwrap();
    assert_eq!(peer_leaf(&tls), gw.leaf_a);
    let renewed = gw
        .ca
        .issue(&["a.example"], &gw.path("a.crt"), &gw.path("a.key"));
    assert_ne!(renewed, gw.leaf_a);
    let tls = connect(gw.tls, gw.client(&[]), "a.example").await.unwrap();
    assert_eq!(peer_leaf(&tls), renewed);
    // The connection works with the new key.
    let (reply, _) = send(tls, get("a.example", "/params.php?only=TENANT_ID")).await;
    assert_eq!(reply.text(), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgi_params_describe_the_tls_connection() {
    let gw = TlsGateway::start().await;
    for (alpn, protocol) in [(&b"h2"[..], "HTTP/2.0"), (&b"http/1.1"[..], "HTTP/1.1")] {
        let tls = connect(gw.tls, gw.client(&[alpn]), "a.example")
            .await
            .unwrap();
        let (reply, _) = send(tls, get("a.example", "/params.php")).await;
        let params = reply.json();
        assert_eq!(params["HTTPS"], "on");
        assert_eq!(params["REQUEST_SCHEME"], "https");
        assert_eq!(params["SERVER_PORT"], gw.tls.port().to_string());
        assert_eq!(params["SERVER_PROTOCOL"], protocol);
        assert_eq!(params["SSL_PROTOCOL"], "TLSv1.3");
        assert_eq!(params["SSL_CIPHER"], "TLS_AES_256_GCM_SHA384");
    }
    // Plain HTTP for a tenant without a certificate: none of them.
    let reply = send_to(
        gw.plain,
        Request::get("/params.php")
            .header("host", "plain.example")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let params = reply.json();
    assert_eq!(params["REQUEST_SCHEME"], "http");
    assert!(params.get("HTTPS").is_none() && params.get("SSL_PROTOCOL").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_big_downloads_work_over_https() {
    let gw = TlsGateway::start().await;
    let body: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
    let mut crc = Crc32::default();
    crc.update(&body);
    let tls = connect(gw.tls, gw.client(&[b"h2"]), "a.example")
        .await
        .unwrap();
    let upload = Request::post("https://a.example/upload.php")
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (reply, _) = send(tls, upload).await;
    assert_eq!(reply.status, StatusCode::OK);
    let answer = reply.json();
    assert_eq!(answer["bytes"], 8u64 << 20);
    assert_eq!(answer["crc32"], crc.hex());

    let tls = connect(gw.tls, gw.client(&[b"http/1.1"]), "a.example")
        .await
        .unwrap();
    let (reply, _) = send(tls, get("a.example", "/download.php?mib=32")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 32 << 20);
    assert!(reply
        .body
        .iter()
        .enumerate()
        .all(|(k, b)| *b as usize == (k % 65536) % 251));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_to_https_for_tenants_with_a_certificate() {
    let gw = TlsGateway::start().await;
    let plain = |host: &str, target: &str| {
        Request::get(target)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let reply = send_to(gw.plain, plain("a.example", "/some/page?x=1")).await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        reply.header("location"),
        Some(format!("https://a.example:{}/some/page?x=1", gw.tls.port()).as_str())
    );
    // No certificate: served over plain HTTP as before.
    let reply = send_to(
        gw.plain,
        plain("plain.example", "/params.php?only=TENANT_ID"),
    )
    .await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "plain")
    );
    // ACME HTTP-01 paths are never redirected (no challenge pending here: routed as usual).
    let reply = send_to(
        gw.plain,
        plain("a.example", "/.well-known/acme-challenge/abc"),
    )
    .await;
    assert_ne!(reply.status, StatusCode::PERMANENT_REDIRECT);
    // HTTPS answers carry HSTS; plain ones do not.
    let (reply, _) = gw
        .get("a.example", "a.example", "/params.php?only=TENANT_ID")
        .await;
    assert_eq!(
        reply.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert!(reply.header("strict-transport-security").is_some());
    let reply = send_to(gw.plain, plain("plain.example", "/")).await;
    assert!(reply.header("strict-transport-security").is_none());
}

#[tokio::test]
async fn a_stalled_handshake_does_not_hold_the_listener() {
    let gw = TlsGateway::start().await;
    // A client that connects and sends nothing.
    let _idle = tokio::net::TcpStream::connect(gw.tls).await.unwrap();
    let (reply, _) = within(
        REQUEST_LIMIT,
        "a request beside a stalled handshake",
        async {
            gw.get("a.example", "a.example", "/params.php?only=TENANT_ID")
                .await
        },
    )
    .await;
    assert_eq!(reply.text(), "a");
}

#[test]
fn a_wildcard_host_with_acme_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("app")).unwrap();
    let text = "[server]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\
                [fastcgi]\nupstream = \"127.0.0.1:9000\"\nroot = \"app\"\n\
                [tls]\nacme_directory = \"https://127.0.0.1:14000/dir\"\n\
                [tenants.w]\nhosts = [\"w.example\", \"*.w.example\"]\ntls = \"acme\"\n";
    let err = Config::parse(text, "tenants.toml", dir.path()).unwrap_err();
    assert_eq!(err.tenant(), Some("w"));
    assert!(
        err.to_string().contains("needs a file certificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_answered_over_https_as_over_http() {
    let mut gw = TlsGateway::start().await;
    gw.fpm.kill().expect("stop php-fpm");
    let (reply, _) = gw.get("a.example", "a.example", "/params.php").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let reply = send_to(
        gw.plain,
        Request::get("/params.php")
            .header("host", "plain.example")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_client_resumes_its_tls_session() {
    let gw = TlsGateway::start().await;
    let client = gw.client(&[b"http/1.1"]);
    let first = connect(gw.tls, client.clone(), "a.example").await.unwrap();
    assert_eq!(
        first.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    // A request, so the client reads the session tickets sent after the handshake.
    let (reply, _) = send(first, get("a.example", "/params.php?only=TENANT_ID")).await;
    assert_eq!(reply.text(), "a");
    let second = connect(gw.tls, client, "a.example").await.unwrap();
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert_eq!(peer_leaf(&second), gw.leaf_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_static_file_arrives_intact_over_https_and_over_plain_http() {
    // Over TLS the file is read (pread), on plain HTTP sent with sendfile(2): both must
    // give the file's bytes, with HTTP/2 and HTTP/1.1, whole and by range.
    let fpm = start_fpm(FpmConfig::new().listen(Listen::Unix).workers(1));
    let dir = tempfile::tempdir().expect("scratch dir");
    let root = dir.path().join("www");
    std::fs::create_dir(&root).unwrap();
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(root.join("big.bin"), &content).unwrap();
    let ca = TestCa::new();
    ca.issue(
        &["a.example"],
        &dir.path().join("a.crt"),
        &dir.path().join("a.key"),
    );
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\nredirect_https = false\n\n\
         [fastcgi]\nupstream = {upstream:?}\nroot = {root:?}\nmax_connections = 1\n\n\
         [tenants.a]\nhosts = [\"a.example\"]\ntls = {{ cert = \"a.crt\", key = \"a.key\" }}\n",
        upstream = fpm.address().to_upstream_string(),
        root = root.display().to_string(),
    );
    let config = Config::parse(&text, "tenants.toml", dir.path())
        .unwrap_or_else(|err| panic!("test config is valid: {err}"));
    let served = Served::bind(config).await;
    let (plain, tls_addr) = (served.addr, served.tls[0]);

    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let tls = connect(tls_addr, client_config(&[ca.der()], &[alpn]), "a.example")
            .await
            .expect("handshake");
        let (reply, _) = send(tls, get("a.example", "/big.bin")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.body[..] == content[..],
            "whole file over TLS ({alpn:?})"
        );

        let tls = connect(tls_addr, client_config(&[ca.der()], &[alpn]), "a.example")
            .await
            .expect("handshake");
        let ranged = Request::get("https://a.example/big.bin")
            .header("host", "a.example")
            .header("range", "bytes=1000000-2199999")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (reply, _) = send(tls, ranged).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
        assert!(
            reply.body[..] == content[1_000_000..2_200_000],
            "range over TLS"
        );
    }
    let reply = send_to(
        plain,
        Request::get("/big.bin")
            .header("host", "a.example")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body[..] == content[..], "whole file over plain HTTP");
}
