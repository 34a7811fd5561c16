//! Accepting client connections: one task per connection served by hyper (HTTP/1.1 and
//! cleartext HTTP/2), header limits, the connection bound, header and keep-alive timeouts
//! ([`crate::connection`]), and a graceful shutdown that stops accepting and lets
//! in-flight requests finish.
//!
//! - [`tls`]: the TLS accept path in front of the same connection serving.

pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::body::GatewayBody;
use crate::connection::{
    Activity, ConnectionLimit, ConnectionPermit, Expired, GuardedBody, RequestGuard, Timeouts,
    TrackedIo,
};
use crate::peer::ConnInfo;
use crate::service::GatewayService;

/// Limits applied to every client connection.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Longest idle time between two requests on one connection.
    pub keepalive_timeout: Duration,
    /// Longest time from accepting a connection (or from the first byte after a
    /// keep-alive pause) to a complete request head.
    pub header_timeout: Duration,
    /// Most client connections open at once, over every listener; beyond it new ones
    /// are closed at once.
    pub max_connections: usize,
    /// Most header lines in a request.
    pub max_headers: usize,
    /// Largest header section in bytes (431 beyond). The HTTP/1 read buffer is this plus
    /// [`REQUEST_LINE_ALLOWANCE`]; the service checks the headers themselves.
    pub max_header_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// On shutdown, how long HTTP/1.1 connections keep being served, each answer with
    /// `Connection: close`, before idle ones are closed (`[server] drain_settle`).
    pub drain_settle: Duration,
}

/// Room in hyper's HTTP/1 read buffer for the request line, on top of the header limit.
/// hyper answers a URI over 65534 bytes with 414, but only once the whole head is in its
/// buffer; a buffer sized for the headers alone fills first and turns every long URI into
/// a 431 instead.
pub const REQUEST_LINE_ALLOWANCE: usize = 66 * 1024;

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            keepalive_timeout: Duration::from_secs(75),
            header_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(30),
            drain_settle: crate::config::server::DEFAULT_DRAIN_SETTLE,
        }
    }
}

/// Serves `service` on every listener (and HTTPS on `tls`'s) until `shutdown` completes,
/// then waits (up to the grace period) for open connections to finish their requests.
pub async fn serve(
    listeners: Vec<TcpListener>,
    tls: Option<tls::TlsListeners>,
    service: GatewayService,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header timer would start only after hyper-util's protocol sniffing has
    // read the first bytes; the connection's own watchdog covers the whole wait instead.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        .max_buf_size(
            limits
                .max_header_bytes
                .max(8192)
                .saturating_add(REQUEST_LINE_ALLOWANCE),
        );
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = Arc::new(GracefulShutdown::new());
    let stop = CancellationToken::new();
    let connections = Connections {
        limit: ConnectionLimit::new(limits.max_connections),
        timeouts: Timeouts {
            header: limits.header_timeout,
            keepalive: limits.keepalive_timeout,
        },
        draining: Draining::default(),
    };
    let mut accept_tasks: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(accept_loop(
                listener,
                service.clone(),
                builder.clone(),
                graceful.clone(),
                connections.clone(),
                stop.clone(),
            ))
        })
        .collect();
    if let Some(tls) = tls {
        accept_tasks.extend(tls.spawn(
            service.clone(),
            builder.clone(),
            graceful.clone(),
            connections.clone(),
            stop.clone(),
        ));
    }
    shutdown.await;
    stop.cancel();
    for task in accept_tasks {
        let _ = task.await;
    }
    settle(&connections.draining, &graceful, limits.drain_settle).await;
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        tracing::warn!("connection watcher still shared; closing without grace");
        return;
    };
    tracing::info!(
        connections = graceful.count(),
        "shutting down: finishing in-flight requests"
    );
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

/// What every listener, plain or TLS, applies to its connections.
#[derive(Debug, Clone)]
pub(crate) struct Connections {
    /// `max_connections`, shared by every listener.
    pub(crate) limit: Arc<ConnectionLimit>,
    /// `header_timeout` and `keepalive_timeout`.
    pub(crate) timeouts: Timeouts,
    /// Set once shutdown began: HTTP/1.1 answers then close their connection.
    pub(crate) draining: Draining,
}

/// Whether the server drains: shared by every connection, set once at shutdown.
#[derive(Debug, Clone, Default)]
pub(crate) struct Draining(Arc<std::sync::atomic::AtomicBool>);

impl Draining {
    fn start(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_on(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The settle window between "stop accepting" and closing idle connections. Closing a
/// kept HTTP/1.1 connection races with a request the client may be sending on it that
/// moment (the client then sees a reset, not an answer); so for `window` every answer
/// carries `Connection: close` and its connection closes right after it, cleanly, and
/// only connections idle through the whole window are closed by the graceful shutdown.
async fn settle(draining: &Draining, graceful: &GracefulShutdown, window: Duration) {
    draining.start();
    if window.is_zero() || graceful.count() == 0 {
        return;
    }
    tracing::info!(
        connections = graceful.count(),
        ?window,
        "draining: answering with Connection: close"
    );
    let deadline = tokio::time::Instant::now() + window;
    while graceful.count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Accepts connections on one listener and spawns a task serving each, until `stop`.
async fn accept_loop(
    listener: TcpListener,
    service: GatewayService,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    connections: Connections,
    stop: CancellationToken,
) {
    let listen_addr = listener.local_addr().ok();
    while let Some((stream, remote)) = accept(&listener, stop.cancelled()).await {
        let Some(permit) = connections.limit.try_acquire() else {
            // Closed at once: the client learns now, instead of timing out in the backlog.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok().or(listen_addr).unwrap_or(remote);
        let info = ConnInfo {
            remote,
            local,
            tls: false,
            tls_session: None,
        };
        let svc = service.clone();
        let respond: Respond = Arc::new(move |req: hyper::Request<Incoming>| -> ResponseFuture {
            // Boxed: the request's future (about 4 KB) then lives only while a request
            // runs, not inline in every connection's task, idle keep-alive ones included.
            Box::pin(svc.serve_request(req, info))
        });
        let io = ClientIo::Plain(stream);
        let timeouts = connections.timeouts;
        spawn_connection(
            io,
            remote,
            &builder,
            &graceful,
            (timeouts, &connections.draining),
            respond,
            permit,
        );
    }
}

/// A request's answer on its way; boxed so idle connections do not carry it.
pub(crate) type ResponseFuture =
    std::pin::Pin<Box<dyn Future<Output = http::Response<GatewayBody>> + Send>>;

/// Starts serving HTTP on one accepted connection, plain or TLS, in a task of its own
/// that holds `permit` until the connection ends: hyper with
/// `respond` per request, watched by `graceful`, and closed by the connection's watchdog
/// at `header_timeout` (no complete head yet) or `keepalive_timeout` (idle); its HTTP/1.x
/// answers close it once `draining` is on.
pub(crate) fn spawn_connection(
    io: ClientIo,
    remote: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    (timeouts, draining): (Timeouts, &Draining),
    respond: Respond,
    permit: ConnectionPermit,
) {
    let activity = Activity::new();
    let requests = activity.clone();
    let draining = draining.clone();
    let hyper_service = service_fn(move |req: hyper::Request<Incoming>| {
        let guard = requests.request_started();
        let http1 = req.version() < http::Version::HTTP_2;
        guarded(respond(req), guard, http1.then(|| draining.clone()))
    });
    let io = TrackedIo::new(io, activity.clone());
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), hyper_service)
        .into_owned();
    let conn = graceful.watcher().watch(conn);
    tokio::spawn(async move {
        match activity.watch(conn, timeouts).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(%remote, error = %err, "client connection ended with an error");
            }
            Err(Expired::Header) => {
                tracing::debug!(%remote, "closing a connection that sent no complete request head in time");
            }
            Err(Expired::KeepAlive) => {
                tracing::debug!(%remote, "closing an idle keep-alive connection");
            }
        }
        drop(permit);
    });
}

/// One request's answer, its body holding `guard` so the connection counts as active
/// until the body is sent. An HTTP/1.x answer (`draining` given) made once the server
/// drains carries `Connection: close`, so hyper closes the connection right after it
/// (see [`settle`]).
async fn guarded(
    response: ResponseFuture,
    guard: RequestGuard,
    draining: Option<Draining>,
) -> Result<http::Response<GuardedBody<GatewayBody>>, std::convert::Infallible> {
    let mut response = response.await;
    if draining.is_some_and(|draining| draining.is_on()) {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    Ok(response.map(|body| GuardedBody::new(body, guard)))
}

/// How one connection answers its requests (plain: the service; TLS: the service behind
/// the 421 check and HSTS).
pub(crate) type Respond = Arc<dyn Fn(hyper::Request<Incoming>) -> ResponseFuture + Send + Sync>;

/// A client connection's byte stream: plain TCP, or TLS over it. One concrete type, so
/// the hyper connection's future is the same for both listeners.
pub(crate) enum ClientIo {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS, after the handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => std::pin::Pin::new(io).poll_read(cx, buf),
            Self::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => {
                crate::sendfile::poll_write_vectored(io, cx, &[std::io::IoSlice::new(buf)])
            }
            Self::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => crate::sendfile::poll_write_vectored(io, cx, bufs),
            Self::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => io.is_write_vectored(),
            Self::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => std::pin::Pin::new(io).poll_flush(cx),
            Self::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => std::pin::Pin::new(io).poll_shutdown(cx),
            Self::Tls(io) => std::pin::Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The next connection on `listener`, or `None` once `stop` completes. Shared by the
/// client and admin listeners. A failed accept (out of file descriptors and the like) is
/// logged and retried after a pause instead of spinning.
pub(crate) async fn accept(
    listener: &TcpListener,
    stop: impl Future<Output = ()>,
) -> Option<(TcpStream, SocketAddr)> {
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => return None,
        };
        match accepted {
            Ok(accepted) => return Some(accepted),
            Err(err) => {
                let listener = listener.local_addr().ok();
                tracing::warn!(error = %err, ?listener, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
