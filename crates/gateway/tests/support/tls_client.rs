//! HTTPS for the TLS tests: a private CA made with rcgen (and leaf certificates it signs,
//! written as PEM files), and a client that connects with a chosen SNI and ALPN, trusts
//! that CA, and speaks HTTP/1.1 or HTTP/2 with hyper.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{within, Reply, REQUEST_LIMIT};

/// A test certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A new CA.
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gateway test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(params, key);
        TestCa { cert, issuer }
    }

    /// The CA certificate (DER).
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a leaf certificate for `names` and writes chain and key to `cert`, `key`;
    /// returns the leaf (DER) to compare with what a server sends.
    pub fn issue(&self, names: &[&str], cert: &Path, key: &Path) -> CertificateDer<'static> {
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let leaf = params
            .signed_by(&leaf_key, &self.issuer)
            .expect("leaf certificate");
        // Written by rename, as deploy tools do, so a reader never sees half a file.
        let write = |path: &Path, text: String| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write PEM");
            std::fs::rename(&tmp, path).expect("rename PEM");
        };
        write(key, leaf_key.serialize_pem());
        write(cert, format!("{}{}", leaf.pem(), self.cert.pem()));
        leaf.der().clone()
    }
}

/// A client config trusting `roots`, offering `alpn`.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("root certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Opens a TLS connection to `addr` asking for `server_name` (an IP address sends no SNI).
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    within(
        REQUEST_LIMIT,
        "the TLS handshake",
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
}

/// The leaf certificate the server sent.
pub fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("server certificates")[0]
        .clone()
}

/// Sends `req` on `tls` with HTTP/2 when ALPN chose it, HTTP/1.1 otherwise; the answer
/// read whole, and the HTTP version it came in.
pub async fn send(tls: TlsStream<TcpStream>, req: Request<Full<Bytes>>) -> (Reply, http::Version) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    within(REQUEST_LIMIT, "an HTTPS request", async move {
        let response = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .expect("h2 handshake");
            tokio::spawn(conn);
            sender.send_request(req).await.expect("h2 request")
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .expect("http1 handshake");
            tokio::spawn(conn);
            sender.send_request(req).await.expect("http1 request")
        };
        let version = response.version();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        (
            Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            },
            version,
        )
    })
    .await
}

/// A GET for `target` naming `host` (Host header for HTTP/1.1, :authority for HTTP/2).
pub fn get(host: &str, target: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://{host}{target}"))
        .header(http::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .expect("request")
}
