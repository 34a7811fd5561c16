//! Renewal information (ARI, RFC 9773) in front of a pebble that has none: Debian's pebble
//! (2.4) lists no `renewalInfo` in its directory. This HTTPS front serves pebble's
//! directory with a `renewalInfo` URL of its own added, and answers that URL the way a CA
//! that wants a certificate replaced early does: the first certificate it is asked about
//! gets a renewal window that has already begun, every later one a window a month away.
//! Everything else (accounts, orders, challenges) still goes to pebble itself, whose
//! directory URLs the front leaves alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::pebble::Pebble;
use super::tls_client::{client_config, connect, send};

/// How long the front tells the client to wait before asking again (`Retry-After`).
const RETRY_AFTER_SECS: u64 = 6 * 3600;

/// A running ARI front; stops on drop.
pub struct AriFront {
    /// The directory URL to give the gateway as `acme_directory`.
    pub directory: String,
    /// Renewal-information requests seen, by certificate identifier, in order of first
    /// request.
    asked: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl AriFront {
    /// Starts the front for `pebble`, with a listener certificate from pebble's own test
    /// CA (so the gateway's `acme_ca_root` trusts both).
    pub async fn start(pebble: &Pebble, dir: &std::path::Path) -> AriFront {
        let (cert, key) = (dir.join("ari-front.crt"), dir.join("ari-front.key"));
        pebble.ca().issue(&["127.0.0.1", "localhost"], &cert, &key);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .expect("front chain")
            .collect::<Result<_, _>>()
            .expect("front chain PEM");
        let key = PrivateKeyDer::from_pem_file(&key).expect("front key");
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("front certificate");
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
        let addr = listener.local_addr().expect("front address");
        let upstream: SocketAddr = pebble
            .directory
            .trim_start_matches("https://")
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("pebble's address in its directory URL");
        let shared = Arc::new(Front {
            base: format!("https://{addr}"),
            pebble: upstream,
            root: pebble.ca().der(),
            asked: Arc::new(Mutex::new(Vec::new())),
            windows: Mutex::new(HashMap::new()),
        });
        let asked = shared.asked.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, shared) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(shared.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        AriFront {
            directory: format!("https://{addr}/dir"),
            asked,
            task,
        }
    }

    /// The certificate identifiers asked about so far, first request first.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("asked").clone()
    }
}

impl Drop for AriFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The front's state, shared by its connections.
struct Front {
    /// `https://127.0.0.1:PORT`, for the `renewalInfo` URL.
    base: String,
    pebble: SocketAddr,
    root: CertificateDer<'static>,
    asked: Arc<Mutex<Vec<String>>>,
    /// The window start given to each certificate, fixed at its first request.
    windows: Mutex<HashMap<String, u64>>,
}

impl Front {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        if path == "/dir" {
            return self.directory().await;
        }
        let Some(id) = path.strip_prefix("/renewal-info/") else {
            return reply(StatusCode::NOT_FOUND, "text/plain", "not here".into());
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let start = {
            let mut asked = self.asked.lock().expect("asked");
            let mut windows = self.windows.lock().expect("windows");
            let first = windows.is_empty();
            *windows.entry(id.to_owned()).or_insert_with(|| {
                asked.push(id.to_owned());
                // The first certificate: replace it now. Later ones: in a month.
                if first {
                    now - 60
                } else {
                    now + 30 * 86_400
                }
            })
        };
        let body = serde_json::json!({
            "suggestedWindow": { "start": rfc3339(start), "end": rfc3339(start + 3600) }
        });
        let mut response = reply(StatusCode::OK, "application/json", body.to_string());
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(RETRY_AFTER_SECS),
        );
        response
    }

    /// Pebble's directory with `renewalInfo` added.
    async fn directory(&self) -> Response<Full<Bytes>> {
        let tls = connect(
            self.pebble,
            client_config(std::slice::from_ref(&self.root), &[b"http/1.1"]),
            "127.0.0.1",
        )
        .await
        .expect("pebble handshake");
        let req = Request::get(format!("https://{}/dir", self.pebble))
            .header(http::header::HOST, self.pebble.to_string())
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (answer, _) = send(tls, req).await;
        let mut directory: serde_json::Value =
            serde_json::from_slice(&answer.body).expect("pebble's directory is JSON");
        directory["renewalInfo"] = serde_json::Value::String(format!("{}/renewal-info", self.base));
        reply(StatusCode::OK, "application/json", directory.to_string())
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type).expect("content type"),
    );
    response
}

/// `secs` since the epoch as an RFC 3339 UTC timestamp.
fn rfc3339(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The ARI identifier (RFC 9773 §4.1) of a certificate: base64url of its authority key
/// identifier, a dot, base64url of its serial number's DER bytes.
pub fn identifier_of(leaf: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("leaf parses");
    let aki = cert
        .extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("leaf has an authority key identifier");
    format!(
        "{}.{}",
        base64url(&aki),
        base64url(cert.tbs_certificate.raw_serial())
    )
}

/// Unpadded base64url.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
