//! The multi-tenant FastCGI gateway: one HTTP front server that routes each request by
//! Host to a tenant and forwards it to a shared PHP-FPM pool with that tenant's params.
//!
//! # Layout
//! Data flows one way: accept ([`server`]) → route ([`routing`], [`tenant`]) → static file
//! ([`static_files`]) or CGI mapping ([`cgi`]) → pool and FastCGI ([`fastcgi`], on the
//! `fcgi-core` crate) → response mapping → client. [`service::GatewayService`] is that flow
//! as a `tower::Service`, for embedders; [`run`] is the whole server.
//!
//! - [`config`]: `tenants.toml`, parsed, validated, immutable.
//! - [`snapshot`]: what requests are served from, swapped atomically on reload.
//! - [`error`]: every failure and its status code, in one place.
//! - [`access`], [`usage`], [`usage_store`], [`metrics`]: the access log, per-tenant usage
//!   metering for billing, and Prometheus metrics.

pub mod access;
pub mod body;
pub mod cgi;
pub mod cli;
pub mod config;
pub mod error;
pub mod fastcgi;
pub mod logging;
pub mod metrics;
pub mod routing;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod spool;
pub mod static_files;
pub mod tenant;
pub mod usage;
pub mod usage_store;

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The config is valid but could not be turned into a running snapshot.
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs the gateway for the config at `path` until `shutdown` completes, then finishes
/// in-flight requests.
pub async fn run(
    path: &std::path::Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let config = config::Config::load(path)?;
    let listen = config.server.listen.clone();
    let limits = server::ServerLimits {
        keepalive_timeout: config.server.keepalive_timeout,
        max_headers: config.server.max_headers,
        max_header_bytes: config.server.max_header_bytes,
        ..server::ServerLimits::default()
    };
    let telemetry = std::sync::Arc::new(access::Telemetry {
        access_log: true,
        ..access::Telemetry::default()
    });
    let snapshot = snapshot::Snapshot::build(config, None)?;
    let state = std::sync::Arc::new(snapshot::SharedState::new(snapshot, telemetry));
    let mut listeners = Vec::new();
    for addr in listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Bind { addr, source })?;
        tracing::info!(%addr, "listening");
        listeners.push(listener);
    }
    let service = service::GatewayService::new(state);
    server::serve(listeners, service, limits, shutdown).await;
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
