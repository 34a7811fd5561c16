//! The HTTP client the ACME account talks to the CA with: hyper over rustls (the system's
//! roots, plus `acme_ca_root` when set), counting the `badNonce` answers that
//! `instant-acme` retries, so `/metrics` shows how often the CA made us retry.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::tls::certs::CertError;
use crate::tls::TlsRuntime;

type Inner = Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// The problem type of a rejected nonce (RFC 8555 §6.5).
const BAD_NONCE: &[u8] = b"urn:ietf:params:acme:error:badNonce";

/// An ACME HTTP client that counts `badNonce` answers in the runtime's metrics.
pub struct CountingClient {
    inner: Inner,
    runtime: Arc<TlsRuntime>,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `acme_ca_root` is unreadable or not a certificate.
    #[error(transparent)]
    Root(#[from] CertError),
    /// The TLS setup failed (no system roots, ...).
    #[error("TLS client for the ACME server: {0}")]
    Tls(String),
}

impl CountingClient {
    /// A client trusting the platform's roots, or only `ca_root` when given (as
    /// `instant-acme`'s own `builder_with_root` does).
    pub fn new(ca_root: Option<&Path>, runtime: Arc<TlsRuntime>) -> Result<Self, ClientError> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match ca_root {
            None => builder
                .try_with_platform_verifier()
                .map_err(|err| ClientError::Tls(err.to_string()))?,
            Some(path) => {
                let root = CertificateDer::from_pem_file(path).map_err(|err| CertError::Pem {
                    path: path.to_path_buf(),
                    reason: err.to_string(),
                })?;
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(root)
                    .map_err(|err| ClientError::Tls(err.to_string()))?;
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|err| ClientError::Tls(err.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
                builder.with_tls_config(config)
            }
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        let connector = builder
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            inner: Client::builder(TokioExecutor::new()).build(connector),
            runtime,
        })
    }
}

impl HttpClient for CountingClient {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let sent = HttpClient::request(&self.inner, req);
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let mut response = sent.await?;
            if response.parts.status != http::StatusCode::BAD_REQUEST {
                return Ok(response);
            }
            // Problem documents are small; read it to see its type, then hand it on.
            let body = response
                .body
                .into_bytes()
                .await
                .map_err(instant_acme::Error::Other)?;
            if body.windows(BAD_NONCE.len()).any(|w| w == BAD_NONCE) {
                runtime.count_bad_nonce();
            }
            Ok(BytesResponse {
                parts: response.parts,
                body: Box::new(body),
            })
        })
    }
}
