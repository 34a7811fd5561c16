//! The TLS accept path: read the ClientHello, refuse names no tenant serves (alert
//! `unrecognized_name`), wait a bounded time for a certificate still being issued, finish
//! the handshake (10 s in all), then serve HTTP/2 or HTTP/1.1 as ALPN chose, with a 421
//! for a request whose Host belongs to another tenant than the SNI's, and HSTS.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::server::{Accepted, Acceptor};
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::body::GatewayBody;
use crate::connection::ConnectionPermit;
use crate::error::{ErrorKind, GatewayError};
use crate::https::sni::{self, AlpnChallengeResolver, Choice, SniResolver};
use crate::peer::{ConnInfo, TlsSession};
use crate::server::{ClientIo, Connections, Respond, ResponseFuture};
use crate::service::GatewayService;
use crate::snapshot::{SharedState, Snapshot};

/// The whole handshake, ClientHello to Finished, waits included (nginx's
/// `ssl_handshake_timeout` default is 60 s; Caddy's read-header timeout 10 s).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a handshake for a host whose certificate is being issued waits for it.
pub const PENDING_WAIT: Duration = Duration::from_secs(8);

/// ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Why a TLS connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The rustls configuration could not be built.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS listeners with their rustls configurations.
#[derive(Debug)]
pub struct TlsListeners {
    listeners: Vec<TcpListener>,
    main: Arc<ServerConfig>,
    challenge: Arc<ServerConfig>,
    state: Arc<SharedState>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsListeners {
    /// TLS on `listeners`, choosing certificates from `state`.
    pub fn new(
        listeners: Vec<TcpListener>,
        state: Arc<SharedState>,
    ) -> Result<Self, TlsSetupError> {
        let mut main = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver::new(state.clone())));
        main.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Stateless resumption (tickets, rotated every 6 h); the default in-memory session
        // cache stays for TLS 1.2 clients without ticket support.
        main.ticketer = rustls::crypto::ring::Ticketer::new()?;
        let mut challenge = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(AlpnChallengeResolver::new(state.clone())));
        challenge.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        if let Some(port) = listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
        {
            state.tls.set_https_port(port);
        }
        Ok(Self {
            listeners,
            main: Arc::new(main),
            challenge: Arc::new(challenge),
            state,
        })
    }

    /// The addresses actually bound.
    pub fn local_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Starts one accept task per listener; they stop at `stop`, and the connections
    /// they serve are watched by `graceful`.
    pub(crate) fn spawn(
        self,
        service: GatewayService,
        builder: Arc<auto::Builder<TokioExecutor>>,
        graceful: Arc<GracefulShutdown>,
        connections: Connections,
        stop: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let shared = Arc::new(Shared {
            main: self.main,
            challenge: self.challenge,
            state: self.state,
            service,
            builder,
            graceful,
            connections,
        });
        self.listeners
            .into_iter()
            .map(|listener| tokio::spawn(accept_loop(listener, shared.clone(), stop.clone())))
            .collect()
    }
}

/// What every TLS connection task needs.
struct Shared {
    main: Arc<ServerConfig>,
    challenge: Arc<ServerConfig>,
    state: Arc<SharedState>,
    service: GatewayService,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    connections: Connections,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let listen_addr = listener.local_addr().ok();
    while let Some((stream, remote)) = crate::server::accept(&listener, stop.cancelled()).await {
        // One bound for plain and TLS connections alike; the handshake counts.
        let Some(permit) = shared.connections.limit.try_acquire() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok().or(listen_addr).unwrap_or(remote);
        let shared = shared.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, &shared));
            let (tls, tenant) = match handshake.await {
                Ok(Ok(Some(done))) => done,
                Ok(Ok(None)) => return,
                Ok(Err(err)) => {
                    tracing::debug!(%remote, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let session = session_of(tls.get_ref().1);
            let info = ConnInfo {
                remote,
                local,
                tls: true,
                tls_session: Some(session),
            };
            serve(tls, info, tenant, &shared, permit);
        });
    }
}

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Runs the handshake; `None` when the connection was answered already (refused, or a
/// TLS-ALPN-01 validation).
async fn handshake(
    mut stream: TcpStream,
    shared: &Shared,
) -> std::io::Result<Option<(TlsStream, Arc<str>)>> {
    let Some(accepted) = read_client_hello(&mut stream).await? else {
        return Ok(None);
    };
    let hello = accepted.client_hello();
    let sni = hello.server_name().map(str::to_owned);
    let validation = hello
        .alpn()
        .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
    if validation {
        let mut tls = tokio_rustls::StartHandshake::from_parts(accepted, stream)
            .into_stream(shared.challenge.clone())
            .await?;
        // The validator only looks at the certificate.
        let _ = tls.shutdown().await;
        return Ok(None);
    }
    let runtime = &shared.state.tls;
    let mut installed = runtime.subscribe_installed();
    let deadline = tokio::time::Instant::now() + PENDING_WAIT;
    let tenant = loop {
        match sni::choose(runtime, &shared.state.load(), sni.as_deref()) {
            Choice::Cert { tenant, .. } => break tenant,
            Choice::Unknown => {
                tracing::debug!(
                    sni = sni.as_deref().unwrap_or("-"),
                    "TLS refused: no tenant serves this name"
                );
                send_alert(&mut stream, ALERT_UNRECOGNIZED_NAME).await;
                return Ok(None);
            }
            Choice::Pending => {
                let wait = tokio::time::timeout_at(deadline, installed.changed()).await;
                if !matches!(wait, Ok(Ok(()))) {
                    tracing::info!(
                        sni = sni.as_deref().unwrap_or("-"),
                        "TLS refused: the certificate is still being issued"
                    );
                    send_alert(&mut stream, ALERT_INTERNAL_ERROR).await;
                    return Ok(None);
                }
            }
        }
    };
    let tls = tokio_rustls::StartHandshake::from_parts(accepted, stream)
        .into_stream(shared.main.clone())
        .await?;
    Ok(Some((tls, tenant)))
}

/// TLS alert `unrecognized_name` (RFC 6066 §3).
const ALERT_UNRECOGNIZED_NAME: u8 = 112;
/// TLS alert `internal_error`.
const ALERT_INTERNAL_ERROR: u8 = 80;

/// Sends a fatal alert in a plaintext record (no keys exist yet) and closes.
async fn send_alert(stream: &mut TcpStream, description: u8) {
    let record = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description];
    let _ = stream.write_all(&record).await;
    let _ = stream.shutdown().await;
}

/// Reads until rustls has the whole ClientHello. `None` when the client went away or
/// sent something that is not TLS (rustls' alert is sent back first).
async fn read_client_hello(stream: &mut TcpStream) -> std::io::Result<Option<Accepted>> {
    let mut acceptor = Acceptor::default();
    let mut buf = [0u8; 4096];
    loop {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            return Ok(None);
        }
        let mut input = &buf[..read];
        while !input.is_empty() {
            acceptor.read_tls(&mut input)?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(Some(accepted)),
            Ok(None) => continue,
            Err((err, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = stream.write_all(&out).await;
                tracing::debug!(error = %err, "not a TLS ClientHello");
                return Ok(None);
            }
        }
    }
}

/// Serves HTTP on an established TLS connection.
fn serve(
    tls: TlsStream,
    info: ConnInfo,
    sni_tenant: Arc<str>,
    shared: &Shared,
    permit: ConnectionPermit,
) {
    let svc = shared.service.clone();
    let state = shared.state.clone();
    let respond: Respond = Arc::new(move |req: Request<Incoming>| -> ResponseFuture {
        let snapshot = state.load();
        let early = misdirected(&snapshot, &req, &sni_tenant);
        let hsts = snapshot
            .config
            .server
            .hsts
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok());
        let response: ResponseFuture = match early {
            Some(response) => Box::pin(std::future::ready(response)),
            None => Box::pin(svc.serve_request(req, info)),
        };
        Box::pin(async move {
            let mut response = response.await;
            if let Some(hsts) = hsts {
                response
                    .headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
            }
            response
        })
    });
    crate::server::spawn_connection(
        ClientIo::Tls(Box::new(tls)),
        info.remote,
        &shared.builder,
        &shared.graceful,
        (shared.connections.timeouts, &shared.connections.draining),
        respond,
        permit,
    );
}

/// 421 when the request's Host is served by another tenant than the one whose name the
/// TLS session was set up for: a certificate must not let one tenant's connection reach
/// another (domain fronting).
fn misdirected<B>(
    snapshot: &Snapshot,
    req: &Request<B>,
    sni_tenant: &str,
) -> Option<Response<GatewayBody>> {
    let authority = match req.uri().authority() {
        Some(authority) => authority.as_str(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    let host = crate::routing::normalize_host(authority)?;
    let tenant = snapshot.registry.lookup(&host)?;
    if *tenant.name == *sni_tenant {
        return None;
    }
    tracing::debug!(host = %host, sni_tenant, "421: Host of another tenant than the TLS name");
    Some(
        GatewayError::new(
            ErrorKind::Misdirected,
            "the Host is not served on this TLS connection",
        )
        .into_response(snapshot.config.server.retry_after),
    )
}

/// The names nginx gives the negotiated protocol and cipher suite.
fn session_of(conn: &rustls::ServerConnection) -> TlsSession {
    use rustls::CipherSuite as C;
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    };
    let cipher = match conn.negotiated_cipher_suite().map(|s| s.suite()) {
        Some(C::TLS13_AES_128_GCM_SHA256) => "TLS_AES_128_GCM_SHA256",
        Some(C::TLS13_AES_256_GCM_SHA384) => "TLS_AES_256_GCM_SHA384",
        Some(C::TLS13_CHACHA20_POLY1305_SHA256) => "TLS_CHACHA20_POLY1305_SHA256",
        Some(C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) => "ECDHE-ECDSA-AES128-GCM-SHA256",
        Some(C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384) => "ECDHE-ECDSA-AES256-GCM-SHA384",
        Some(C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256) => "ECDHE-ECDSA-CHACHA20-POLY1305",
        Some(C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) => "ECDHE-RSA-AES128-GCM-SHA256",
        Some(C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) => "ECDHE-RSA-AES256-GCM-SHA384",
        Some(C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256) => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => "",
    };
    TlsSession { protocol, cipher }
}
