//! Accepting client connections: one task per connection served by hyper (HTTP/1.1 and
//! cleartext HTTP/2), header limits, keep-alive timeout, and a graceful shutdown that
//! stops accepting and lets in-flight requests finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::service::{ConnInfo, GatewayService};

/// Limits applied to every client connection.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Longest wait for a request's headers, idle keep-alive time included.
    pub keepalive_timeout: Duration,
    /// Most header lines in a request.
    pub max_headers: usize,
    /// Largest header section in bytes (431 beyond). The HTTP/1 read buffer is this plus
    /// [`REQUEST_LINE_ALLOWANCE`]; the service checks the headers themselves.
    pub max_header_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
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
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `service` on every listener (and HTTPS on `tls`'s) until `shutdown` completes, then waits (up to the
/// grace period) for open connections to finish their requests.
pub async fn serve(
    listeners: Vec<TcpListener>,
    tls: Option<crate::tls::listener::TlsListeners>,
    service: GatewayService,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.keepalive_timeout)
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
    let mut accept_tasks: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(accept_loop(
                listener,
                service.clone(),
                builder.clone(),
                graceful.clone(),
                stop.clone(),
            ))
        })
        .collect();
    if let Some(tls) = tls {
        accept_tasks.extend(tls.spawn(
            service.clone(),
            builder.clone(),
            graceful.clone(),
            stop.clone(),
        ));
    }
    shutdown.await;
    stop.cancel();
    for task in accept_tasks {
        let _ = task.await;
    }
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

/// Accepts connections on one listener and spawns a task serving each, until `stop`.
async fn accept_loop(
    listener: TcpListener,
    service: GatewayService,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    stop: CancellationToken,
) {
    let listen_addr = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
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
        let hyper_service = service_fn(move |req: hyper::Request<Incoming>| {
            // Boxed: the request's future (about 4 KB) then lives only while a request
            // runs, not inline in every connection's task, idle keep-alive ones included.
            let response = Box::pin(svc.serve_request(req, info));
            async move { Ok::<_, std::convert::Infallible>(response.await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), hyper_service)
            .into_owned();
        let conn = graceful.watcher().watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%remote, error = %err, "client connection ended with an error");
            }
        });
    }
}
