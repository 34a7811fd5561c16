//! The multi-tenant FastCGI gateway: one HTTP front server that routes each request by
//! Host to a tenant and forwards it to a shared PHP-FPM pool with that tenant's params.
//!
//! # Layout
//! Data flows one way: accept ([`server`]; the client's identity in [`peer`]) → route
//! (`routing`, [`tenant`]; the path on disk in `resolve`, parsed by `request_path`) →
//! static file (`static_files`) or CGI mapping (`cgi`) → pool and FastCGI (`fastcgi`, on
//! the `fcgi-core` crate) → response mapping (`response`, [`body`]) → client.
//! [`service::GatewayService`] puts the steps together as a `tower::Service`, for
//! embedders; [`run`] is the whole server.
//!
//! - [`config`]: `tenants.toml`, parsed, validated, immutable.
//! - [`snapshot`]: what requests are served from, swapped atomically on reload.
//! - [`error`]: every failure, its cause, and its status code, in one place.
//! - [`access`], [`usage`], [`usage_store`], [`metrics`]: the access log, per-tenant usage
//!   metering for billing, and Prometheus metrics.
//! - `admin`: the admin API on its own listener (tenants, reload, usage, metrics).
//! - [`tenant_ops`]: the tenant commands both the CLI ([`cli`]) and the admin API run.
//! - [`systemd`], [`takeover`]: listening sockets handed over (socket activation, or by
//!   the process being upgraded), readiness and watchdog notifications.
//! - [`fleet`]: several gateways sharing the tenants and the usage ledger in PostgreSQL.

// No `unwrap`/`expect` outside tests: what comes from the network, a file or the
// config fails with a typed error instead.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod acme;
pub(crate) mod admin;
pub mod body;
pub mod cache;
pub(crate) mod cached_origin;
pub(crate) mod cgi;
pub mod cli;
pub mod compression;
pub mod config;
pub mod connection;
pub mod error;
pub(crate) mod fastcgi;
pub(crate) mod file_body;
pub mod fleet;
pub mod https;
pub mod logging;
pub mod memory;
pub mod metrics;
pub(crate) mod open_file_cache;
pub mod peer;
pub(crate) mod private_files;
pub mod reload;
pub(crate) mod request_path;
pub(crate) mod resolve;
pub(crate) mod response;
pub(crate) mod routing;
pub(crate) mod sendfile;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod spool;
pub(crate) mod static_files;
pub mod systemd;
pub mod takeover;
pub mod tenant;
pub mod tenant_ops;
pub mod tls;
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
    /// The TLS listeners could not be set up.
    #[error(transparent)]
    Tls(#[from] server::tls::TlsSetupError),
    /// The sockets systemd passed could not be taken.
    #[error(transparent)]
    ListenFds(#[from] systemd::ListenFdsError),
    /// Taking over from the running process failed.
    #[error(transparent)]
    Takeover(#[from] takeover::TakeoverError),
    /// `serve --takeover` without `[server] takeover_socket` in the config.
    #[error("--takeover needs [server] takeover_socket in the config")]
    NoTakeoverSocket,
    /// The fleet registry could not be read (PostgreSQL down and no snapshot file).
    #[error(transparent)]
    Fleet(#[from] fleet::FleetError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A gateway bound to its listen addresses, ready to serve.
///
/// Binding and serving are apart so a caller (a test, an embedder) can bind port 0 and
/// learn the address before traffic starts.
#[derive(Debug)]
pub struct Gateway {
    state: std::sync::Arc<snapshot::SharedState>,
    reloader: std::sync::Arc<reload::Reloader>,
    listeners: Vec<tokio::net::TcpListener>,
    limits: server::ServerLimits,
    /// The admin API listener, when `[server] admin` is set.
    admin: Option<admin::AdminServer>,
    /// The HTTPS listeners (`[server] tls_listen`), when any.
    tls: Option<server::tls::TlsListeners>,
    /// Copies of every listening socket, handed to a process taking over; empty without
    /// `[server] takeover_socket`.
    handover_fds: Vec<std::os::fd::OwnedFd>,
    /// The takeover this process is completing, when started with one.
    handover: Option<takeover::Handover>,
    /// The fleet registry, when `[registry] postgres` is set.
    fleet: Option<std::sync::Arc<fleet::Fleet>>,
}

impl Gateway {
    /// Builds the first snapshot from `config` and binds every listen address.
    pub async fn bind(config: config::Config) -> Result<Self, RunError> {
        Self::bind_with(config, systemd::InheritedListeners::none(), None).await
    }

    /// [`bind`](Self::bind), taking each listen, tls_listen and admin address's socket
    /// from `inherited` when it holds one bound there (socket activation, takeover), and
    /// binding the others. `handover` is the takeover in progress, completed once this
    /// gateway serves.
    pub async fn bind_with(
        config: config::Config,
        mut inherited: systemd::InheritedListeners,
        handover: Option<takeover::Handover>,
    ) -> Result<Self, RunError> {
        let keep_copies = config.server.takeover_socket.is_some();
        let mut handover_fds = Vec::new();
        // In a fleet the tenants come from PostgreSQL (or, when it is down, from the
        // last good registry on disk), validated with the file's other settings.
        let (config, registry) = if config.registry.postgres.is_some() {
            let (view, source) = fleet::boot(&config).await?;
            tracing::info!(
                version = view.version,
                tenants = view.tenants.len(),
                ?source,
                "fleet registry read"
            );
            let with_tenants =
                config::Config::load_with_tenants(&config.path, &view.tenant_settings())?;
            (with_tenants, Some((view, config.clone())))
        } else {
            (config, None)
        };
        let listen = config.server.listen.clone();
        let tls_listen = config.server.tls_listen.clone();
        let admin_addr = config.server.admin;
        // A front server needs far more descriptors than a distribution's soft default.
        let nofile = match connection::limit::raise_nofile_limit() {
            Ok(nofile) => nofile,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the open-file limit; assuming 1024");
                1024
            }
        };
        let max_connections = config.server.max_connections.unwrap_or_else(|| {
            connection::limit::default_max_connections(nofile, config.fastcgi.max_connections)
        });
        tracing::debug!(nofile, max_connections, "client connection bound");
        let limits = server::ServerLimits {
            drain_settle: config.server.drain_settle,
            keepalive_timeout: config.server.keepalive_timeout,
            header_timeout: config.server.header_timeout,
            max_connections,
            max_headers: config.server.max_headers,
            max_header_bytes: config.server.max_header_bytes,
            ..server::ServerLimits::default()
        };
        let telemetry = std::sync::Arc::new(access::Telemetry {
            access_log: true,
            ..access::Telemetry::default()
        });
        let path = config.path.clone();
        let snapshot = snapshot::Snapshot::build(config, None)?;
        // Parsing left the whole file's worth of temporaries freed but mapped.
        memory::release_free_memory();
        let state = std::sync::Arc::new(snapshot::SharedState::new(snapshot, telemetry));
        let reloader = std::sync::Arc::new(reload::Reloader::new(path, state.clone()));
        let fleet = match registry {
            Some((view, config)) => Some(fleet::Fleet::new(&config, reloader.clone(), view)?),
            None => None,
        };
        let mut listeners = Vec::new();
        for addr in listen {
            listeners.push(
                listen_on(
                    addr,
                    &mut inherited,
                    keep_copies.then_some(&mut handover_fds),
                )
                .await?,
            );
        }
        let tls = if tls_listen.is_empty() {
            None
        } else {
            let mut tls_listeners = Vec::new();
            for addr in tls_listen {
                tls_listeners.push(
                    listen_on(
                        addr,
                        &mut inherited,
                        keep_copies.then_some(&mut handover_fds),
                    )
                    .await?,
                );
            }
            Some(server::tls::TlsListeners::new(
                tls_listeners,
                state.clone(),
            )?)
        };
        let admin = match admin_addr {
            Some(addr) => {
                let listener = listen_on(
                    addr,
                    &mut inherited,
                    keep_copies.then_some(&mut handover_fds),
                )
                .await?;
                Some(
                    admin::AdminServer::from_listener(listener, state.clone(), reloader.clone())
                        .map_err(|source| RunError::Bind { addr, source })?
                        .with_fleet(fleet.clone()),
                )
            }
            None => None,
        };
        inherited.warn_unclaimed();
        Ok(Self {
            state,
            reloader,
            listeners,
            limits,
            admin,
            tls,
            handover_fds,
            handover,
            fleet,
        })
    }

    /// The fleet registry (`[registry] postgres`); `None` on a single machine.
    pub fn fleet(&self) -> Option<&std::sync::Arc<fleet::Fleet>> {
        self.fleet.as_ref()
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The HTTPS listeners' addresses actually bound (port 0 resolved); empty without
    /// `tls_listen`.
    pub fn tls_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.tls
            .as_ref()
            .map(server::tls::TlsListeners::local_addrs)
            .unwrap_or_default()
    }

    /// The admin API's address actually bound (port 0 resolved); `None` when it is off.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin
            .as_ref()
            .and_then(|admin| admin.local_addr().ok())
    }

    /// The shared state: current snapshot and telemetry.
    pub fn state(&self) -> &std::sync::Arc<snapshot::SharedState> {
        &self.state
    }

    /// The reloader: `reload()` re-reads the config file now.
    pub fn reloader(&self) -> &std::sync::Arc<reload::Reloader> {
        &self.reloader
    }

    /// The request-handling service, for mounting elsewhere.
    pub fn service(&self) -> service::GatewayService {
        service::GatewayService::new(self.state.clone())
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests. Meanwhile the
    /// config file is watched for changes, usage is flushed to the database (when one is
    /// configured), the admin API listens (when configured), and freed memory is handed back to
    /// the system in the background ([`memory`]).
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        for addr in self.local_addrs() {
            tracing::info!(%addr, "listening");
        }
        for addr in self.tls_addrs() {
            tracing::info!(%addr, "listening (HTTPS)");
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let mut background = Vec::new();
        if self.reloader.path().exists() {
            let reloader = self.reloader.clone();
            let stop = stop.clone();
            background.push(tokio::spawn(async move {
                reloader.watch(stop.cancelled_owned()).await;
            }));
        }
        if let Some(fleet) = &self.fleet {
            let stop = stop.clone();
            background.push(tokio::spawn(fleet.clone().listen(stop.cancelled_owned())));
        }
        let snapshot = self.state.load();
        if let Some(database) = &snapshot.config.usage.database {
            match usage_store::UsageStore::open(database) {
                Ok(store) => {
                    let meter = self.state.telemetry.usage.clone();
                    let interval = snapshot.config.usage.flush_interval;
                    let flusher = tokio::spawn(usage_store::run_flusher(
                        meter,
                        store,
                        interval,
                        stop.clone().cancelled_owned(),
                    ));
                    if let Some(shipping) = snapshot.config.usage.shipping.clone() {
                        // Ships what the flusher wrote; its last round after the
                        // flusher's last flush.
                        let stop = stop.clone();
                        background.push(tokio::spawn(fleet::ship::run(
                            shipping,
                            database.clone(),
                            interval,
                            stop.cancelled_owned(),
                            async move {
                                let _ = flusher.await;
                            },
                        )));
                    } else {
                        background.push(flusher);
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "usage metering disabled: cannot open the database")
                }
            }
        }
        let takeover_socket = snapshot.config.server.takeover_socket.clone();
        drop(snapshot);
        // Cancelled when a new process took the listeners over: this one then drains.
        let taken_over = tokio_util::sync::CancellationToken::new();
        if let Some(path) = takeover_socket {
            background.push(tokio::spawn(takeover::run_control(
                path,
                self.handover_fds,
                self.handover,
                taken_over.clone(),
                stop.clone(),
            )));
        }
        {
            let stop = stop.clone();
            background.push(tokio::spawn(systemd::run_watchdog(stop.cancelled_owned())));
        }
        if self.tls.is_some() {
            background.push(tokio::spawn(acme::run(self.state.clone(), stop.clone())));
        }
        {
            let stop = stop.clone();
            background.push(tokio::spawn(memory::run_scavenger(stop.cancelled_owned())));
        }
        // The admin listener stops accepting together with the main ones.
        let admin_stop = tokio_util::sync::CancellationToken::new();
        if let Some(admin) = self.admin {
            background.push(tokio::spawn(
                admin.serve(admin_stop.clone().cancelled_owned()),
            ));
        }
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                () = taken_over.cancelled() => {}
            }
            systemd::notify_stopping();
            admin_stop.cancel();
        };
        // The listeners are bound (or inherited) and accept from here on; connections
        // that came meanwhile wait in their backlogs.
        systemd::notify_ready();
        let service = service::GatewayService::new(self.state.clone());
        server::serve(self.listeners, self.tls, service, self.limits, shutdown).await;
        stop.cancel();
        for task in background {
            let _ = task.await;
        }
    }
}

/// The listener for `addr`: the socket `inherited` holds for it, or a new one bound
/// there; a copy of it goes to `copies` (for a later takeover) when given.
async fn listen_on(
    addr: std::net::SocketAddr,
    inherited: &mut systemd::InheritedListeners,
    copies: Option<&mut Vec<std::os::fd::OwnedFd>>,
) -> Result<tokio::net::TcpListener, RunError> {
    let listener = match inherited.take(addr) {
        Some(listener) => tokio::net::TcpListener::from_std(listener),
        None => tokio::net::TcpListener::bind(addr).await,
    }
    .map_err(|source| RunError::Bind { addr, source })?;
    if let Some(copies) = copies {
        use std::os::fd::AsFd;
        let copy = listener
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| RunError::Bind { addr, source })?;
        copies.push(copy);
    }
    Ok(listener)
}

/// Runs the gateway for the config at `path` until `shutdown` completes, then finishes
/// in-flight requests.
pub async fn run(
    path: &std::path::Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let config = config::Config::load(path)?;
    Gateway::bind(config).await?.serve(shutdown).await;
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
