//! The fleet: several gateways sharing one tenant registry and one usage ledger in
//! PostgreSQL (`[registry] postgres`, `[usage] postgres`). Without them the tenants come
//! from the config file and usage stays in SQLite, as on one machine.
//!
//! # Layout
//! - `schema.rs`: the tables, versioned migrations (`gateway registry migrate`);
//! - `registry.rs`: reading the registry (whole, or the rows newer than a version) into a
//!   [`RegistryView`];
//! - `listener.rs`: the one dedicated connection that `LISTEN`s, re-reads and puts the
//!   registry in service through [`Reloader::apply_registry`] (what a file reload does);
//! - `store.rs`: writes (admin API, CLI): versioned, `If-Match`, hosts unique;
//! - `snapshot_file.rs`: the last good registry on disk, for a cold start in an outage;
//! - `ship.rs`: usage shipping, absolute hourly totals made idempotent by a sequence;
//! - `status.rs`: the registry connection's state for `/healthz` and `/metrics`.
//!
//! # Invariants
//! - Every write transaction bumps the one `registry_version` row first: its row lock
//!   orders the commits, so a reader that sees version N sees every write up to N.
//! - A registry that does not validate never replaces the snapshot in service; the
//!   listener keeps its version and reads from there again on the next change.
//! - PostgreSQL unreachable: requests are served from the last good snapshot forever.

pub mod listener;
pub mod registry;
pub mod schema;
pub mod ship;
pub mod snapshot_file;
pub mod status;
pub mod store;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::reload::Reloader;

pub use registry::{RegistryView, TenantEntry};
pub use status::RegistryStatus;
pub use store::{Store, WriteError};

/// How long connecting (TCP and startup) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why talking to PostgreSQL (or reading the snapshot file) failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The connection string does not parse.
    #[error("invalid PostgreSQL connection string: {0}")]
    ConnString(#[source] tokio_postgres::Error),
    /// PostgreSQL could not be reached or refused the session.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// A statement failed.
    #[error("PostgreSQL: {what}: {source}")]
    Query {
        /// What was being done.
        what: &'static str,
        /// What PostgreSQL (or the connection) said.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A step took longer than allowed (a half-open connection, an overloaded server).
    #[error("PostgreSQL: {0} timed out")]
    Timeout(&'static str),
    /// No connection could be had from the writers' pool.
    #[error("PostgreSQL: no connection: {0}")]
    Pool(String),
    /// The schema is missing or from a newer gateway.
    #[error("{0}")]
    Schema(String),
    /// A tenant's stored spec is not a valid tenant.
    #[error("registry tenant {tenant:?}: {reason}")]
    InvalidSpec {
        /// The tenant.
        tenant: String,
        /// Why (names keys, never values).
        reason: String,
    },
    /// The snapshot file could not be read or written.
    #[error("registry snapshot file {}: {source}", path.display())]
    SnapshotFile {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The snapshot file is not a registry snapshot.
    #[error("registry snapshot file {}: {source}", path.display())]
    SnapshotFormat {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// PostgreSQL is down at start and there is no snapshot file to start from.
    #[error("cannot start: the registry is unreachable ({cause}) and there is no snapshot file to start from{}", hint.as_deref().unwrap_or(""))]
    NoRegistry {
        /// Why PostgreSQL could not be read.
        cause: Box<FleetError>,
        /// Where the snapshot file was looked for.
        hint: Option<String>,
    },
}

impl FleetError {
    pub(crate) fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> FleetError {
        move |source| FleetError::Query { what, source }
    }
}

/// The libpq connection string parsed, with the fleet's connection settings: a connect
/// timeout, and TCP keepalive so a half-open connection is noticed.
pub fn pg_config(conn: &str) -> Result<tokio_postgres::Config, FleetError> {
    let mut config = tokio_postgres::Config::from_str(conn).map_err(FleetError::ConnString)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    if config.get_application_name().is_none() {
        config.application_name("fcgi-gateway");
    }
    Ok(config)
}

/// Opens one connection and drives it on a task of its own; the returned receiver gets
/// its notifications, and is closed when the connection ends.
pub async fn connect(
    conn: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    ),
    FleetError,
> {
    let config = pg_config(conn)?;
    let (client, mut connection) =
        tokio::time::timeout(CONNECT_TIMEOUT * 2, config.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| FleetError::Timeout("connecting"))?
            .map_err(FleetError::Connect)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
            match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(note))) => {
                    let _ = tx.send(note);
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "PostgreSQL connection ended");
                    break;
                }
                None => break,
            }
        }
    });
    Ok((client, rx))
}

/// A fleet gateway's registry side: the registry in service, its connection state, and
/// the writers' pool. Shared by the listener, the admin API and `/metrics`.
pub struct Fleet {
    /// `[registry] postgres`.
    conn: String,
    /// `[registry] check_interval`.
    check_interval: Duration,
    /// `[registry] snapshot_file`.
    snapshot_file: Option<PathBuf>,
    /// Puts registries in service, as a file reload does.
    reloader: Arc<Reloader>,
    /// The registry in service.
    view: ArcSwap<RegistryView>,
    /// The version in service, for writers waiting until their commit is served.
    served: watch::Sender<i64>,
    /// Wakes the listener to read now (a writer just committed).
    nudge: Notify,
    /// Connection state for `/healthz` and `/metrics`.
    pub status: RegistryStatus,
    /// The writers' pool.
    store: Store,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("version", &self.version())
            .field("check_interval", &self.check_interval)
            .field("snapshot_file", &self.snapshot_file)
            .finish_non_exhaustive()
    }
}

/// Where a gateway's first registry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootSource {
    /// Read from PostgreSQL.
    Postgres,
    /// PostgreSQL was unreachable: the snapshot file.
    SnapshotFile,
}

/// Reads the first registry: from PostgreSQL, else (down) from the snapshot file.
pub async fn boot(config: &Config) -> Result<(RegistryView, BootSource), FleetError> {
    let conn = config.registry.postgres.as_deref().unwrap_or_default();
    let read = async {
        let (mut client, _notes) = connect(conn).await?;
        schema::check(&client).await?;
        registry::read_full(&mut client).await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, read)
        .await
        .unwrap_or(Err(FleetError::Timeout("reading the registry")))
    {
        Ok(view) => {
            if let Some(path) = &config.registry.snapshot_file {
                if let Err(err) = snapshot_file::save(path, &view) {
                    tracing::warn!(error = %err, "cannot write the registry snapshot file");
                }
            }
            Ok((view, BootSource::Postgres))
        }
        Err(err @ FleetError::Schema(_)) => Err(err),
        Err(cause) => match &config.registry.snapshot_file {
            Some(path) if path.exists() => {
                let view = snapshot_file::load(path)?;
                tracing::warn!(error = %cause, version = view.version, file = %path.display(), "registry unreachable at start: serving the snapshot file's registry");
                Ok((view, BootSource::SnapshotFile))
            }
            other => Err(FleetError::NoRegistry {
                cause: Box::new(cause),
                hint: other.as_ref().map(|path| format!(" at {}", path.display())),
            }),
        },
    }
}

impl Fleet {
    /// The fleet side of a gateway whose first snapshot serves `view`.
    pub fn new(
        config: &Config,
        reloader: Arc<Reloader>,
        view: RegistryView,
    ) -> Result<Arc<Fleet>, FleetError> {
        let conn = config.registry.postgres.clone().unwrap_or_default();
        let store = Store::new(&conn)?;
        let (served, _) = watch::channel(view.version);
        reloader.set_registry_tenants(Arc::new(view.tenant_settings()));
        Ok(Arc::new(Fleet {
            conn,
            check_interval: config.registry.check_interval,
            snapshot_file: config.registry.snapshot_file.clone(),
            reloader,
            view: ArcSwap::from_pointee(view),
            served,
            nudge: Notify::new(),
            status: RegistryStatus::default(),
            store,
        }))
    }

    /// The registry version in service.
    pub fn version(&self) -> i64 {
        *self.served.borrow()
    }

    /// The registry in service.
    pub fn view(&self) -> Arc<RegistryView> {
        self.view.load_full()
    }

    /// The writers' side.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The reloader registries are put in service with.
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Waits until the version in service is at least `version` (a write just
    /// committed), waking the listener to read at once. `false` after `limit`.
    pub async fn wait_served(&self, version: i64, limit: Duration) -> bool {
        let mut served = self.served.subscribe();
        self.nudge.notify_one();
        tokio::time::timeout(limit, served.wait_for(|v| *v >= version))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Puts `view` in service (validated with the config file, as a reload); on
    /// success it is the registry in service and is written to the snapshot file.
    /// Only the listener calls it, one registry at a time.
    pub(crate) async fn apply(&self, view: RegistryView) -> Result<(), crate::reload::ReloadError> {
        let version = view.version;
        self.reloader
            .apply_registry(Arc::new(view.tenant_settings()))
            .await?;
        let view = Arc::new(view);
        self.view.store(view.clone());
        self.served.send_replace(version);
        self.status.record_version(version);
        if let Some(path) = self.snapshot_file.clone() {
            let written =
                tokio::task::spawn_blocking(move || snapshot_file::save(&path, &view)).await;
            if let Ok(Err(err)) = written {
                tracing::warn!(error = %err, "cannot write the registry snapshot file");
            }
        }
        Ok(())
    }

    /// Runs the registry listener until `stop` completes.
    pub async fn listen(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        listener::run(self, stop).await;
    }
}
