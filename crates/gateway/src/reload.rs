//! Hot reload: the config file is re-read when it changes (editors and Kubernetes
//! ConfigMaps replace it by rename or symlink swap, so the directory is watched, not the
//! file), on SIGHUP, and on the admin API's `POST /reload`.
//!
//! A reload parses and validates the whole file and builds a complete snapshot before
//! swapping it in; a file that fails keeps the old snapshot serving, and the error (file,
//! line, reason) is logged, kept for the admin API, and counted in `/metrics`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::metrics::ReloadStats;
use crate::snapshot::{SharedState, Snapshot, SnapshotError};

/// Why a reload was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not parse or validate.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The config is valid but a snapshot could not be built from it.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new snapshot is serving.
    Applied,
    /// The file says what is already served; nothing was swapped.
    Unchanged,
}

/// Re-reads the config file and swaps in new snapshots, one reload at a time.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    state: Arc<SharedState>,
    /// Reload counters for `/metrics`.
    pub stats: Arc<ReloadStats>,
    /// The last rejection, shown by the admin API until a reload succeeds.
    last_error: Mutex<Option<String>>,
    /// Serializes reloads: the watcher, SIGHUP and the admin API may fire together.
    lock: tokio::sync::Mutex<()>,
    /// In a fleet, the tenants of the last registry put in service (read from
    /// PostgreSQL by `fleet`): a reload of the file keeps them in place of the file's
    /// (absent) `[tenants]`. `None` on a single machine.
    registry_tenants: Mutex<Option<RegistryTenants>>,
}

/// A fleet registry's tenants, as written (validated with the file at each reload).
pub type RegistryTenants = Arc<std::collections::BTreeMap<String, crate::config::TenantSettings>>;

impl Reloader {
    /// A reloader for the config at `path`, swapping snapshots into `state`.
    pub fn new(path: impl Into<PathBuf>, state: Arc<SharedState>) -> Self {
        Self {
            path: path.into(),
            state,
            stats: Arc::new(ReloadStats::default()),
            last_error: Mutex::new(None),
            lock: tokio::sync::Mutex::new(()),
            registry_tenants: Mutex::new(None),
        }
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shared state reloads are applied to.
    pub fn state(&self) -> &Arc<SharedState> {
        &self.state
    }

    /// The reason the last reload was rejected, if the last one was.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads, validates and applies the file. On error the old snapshot keeps serving.
    pub async fn reload(&self) -> Result<ReloadOutcome, ReloadError> {
        self.put_in_service(None).await
    }

    /// Applies `config`, which its caller has just loaded from this reloader's file (an
    /// edit's [`ConfigDocument::save`](crate::config::ConfigDocument::save) returns the
    /// config it validated), so the file is not read and parsed a second time. Otherwise
    /// as [`reload`](Self::reload).
    pub async fn apply(&self, config: Config) -> Result<ReloadOutcome, ReloadError> {
        self.put_in_service(Some(config)).await
    }

    /// Puts a fleet registry's `tenants` in service with the config file's other
    /// settings, validated as a reload of a file listing them would be; refused (the
    /// snapshot in service stays) when they are not valid. Later reloads of the file
    /// keep them.
    pub async fn apply_registry(
        &self,
        tenants: RegistryTenants,
    ) -> Result<ReloadOutcome, ReloadError> {
        self.put_in_service_from(None, Some(tenants)).await
    }

    /// The fleet registry's tenants last put in service; `None` on a single machine.
    pub fn registry_tenants(&self) -> Option<RegistryTenants> {
        self.registry_tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes later reloads use `tenants` (the registry the first snapshot was built
    /// with) without building a snapshot now.
    pub fn set_registry_tenants(&self, tenants: RegistryTenants) {
        *self
            .registry_tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tenants);
    }

    /// [`reload`](Self::reload) with the file's config already `loaded`, or not.
    async fn put_in_service(&self, loaded: Option<Config>) -> Result<ReloadOutcome, ReloadError> {
        self.put_in_service_from(loaded, None).await
    }

    /// [`put_in_service`](Self::put_in_service), with a new fleet registry or not.
    async fn put_in_service_from(
        &self,
        loaded: Option<Config>,
        new_tenants: Option<RegistryTenants>,
    ) -> Result<ReloadOutcome, ReloadError> {
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        let state = self.state.clone();
        let tenants = new_tenants.clone().or_else(|| self.registry_tenants());
        // Parsing 10,000 tenants and reading files is blocking work.
        let result = tokio::task::spawn_blocking(move || -> Result<_, ReloadError> {
            let config = match (loaded, tenants) {
                (Some(config), _) => config,
                (None, Some(tenants)) => Config::load_with_tenants(&path, &tenants)?,
                (None, None) => Config::load(&path)?,
            };
            let previous = state.load();
            if *previous.config == config && !suspended_page_changed(&previous) {
                return Ok(None);
            }
            Ok(Some(Snapshot::build(config, Some(&*previous))?))
        })
        .await;
        let result = match result {
            Ok(result) => result,
            Err(join) => {
                tracing::error!(error = %join, "reload task failed");
                return Err(ReloadError::Snapshot(SnapshotError::Config(
                    crate::config::ConfigError::io(
                        &self.path,
                        std::io::Error::other(join.to_string()),
                    ),
                )));
            }
        };
        if let (Ok(_), Some(tenants)) = (&result, new_tenants) {
            self.set_registry_tenants(tenants);
        }
        match result {
            Ok(None) => {
                // The file is valid and already served: the last reload did not fail.
                self.stats.record_success();
                self.set_error(None);
                Ok(ReloadOutcome::Unchanged)
            }
            Ok(Some(snapshot)) => {
                let tenants = snapshot.registry.len();
                // Freeing a 10,000-tenant snapshot is ~20 ms of `free` calls: hand our
                // reference to a blocking thread rather than stall this runtime worker.
                // (Requests still holding it free it when they finish, as before.) Then
                // give the parse's and the old snapshot's free pages back to the system,
                // or each reload of a large config leaves the idle RSS higher.
                let previous = self.state.load();
                self.state.swap(snapshot);
                tokio::task::spawn_blocking(move || {
                    drop(previous);
                    crate::memory::release_free_memory();
                });
                self.stats.record_success();
                self.set_error(None);
                tracing::info!(path = %self.path.display(), tenants, "config reloaded");
                Ok(ReloadOutcome::Applied)
            }
            Err(err) => {
                self.stats.record_failure();
                self.set_error(Some(err.to_string()));
                tracing::error!(error = %err, "config reload rejected; the previous config keeps serving");
                Err(err)
            }
        }
    }

    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// Reloads on every change to the file (or to the symlink chain leading to it) and on
    /// SIGHUP, until `stop` completes.
    pub async fn watch(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let watcher = match self.start_watcher(tx) {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::warn!(error = %err, path = %self.path.display(), "cannot watch the config file; reload with SIGHUP or the admin API");
                None
            }
        };
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP");
                None
            }
        };
        let mut stop = std::pin::pin!(stop);
        loop {
            let mut hangup_received = false;
            tokio::select! {
                () = &mut stop => break,
                Some(()) = rx.recv() => {
                    // Editors write in several steps: let the burst settle, then reload once.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while rx.try_recv().is_ok() {}
                }
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::info!("SIGHUP: reloading config");
                    hangup_received = true;
                }
            }
            // systemd (`ExecReload` sends SIGHUP) shows the unit reloading meanwhile.
            if hangup_received {
                crate::systemd::notify_reloading();
            }
            // Errors are logged and recorded by `reload` itself.
            let _ = self.reload().await;
            if hangup_received {
                crate::systemd::notify_ready();
            }
        }
        drop(watcher);
    }

    /// Watches the directories of the config path and of its final target: a rename over
    /// the file or a swap of a symlink in the chain shows up as an event there.
    fn start_watcher(
        &self,
        tx: mpsc::UnboundedSender<()>,
    ) -> notify::Result<notify::RecommendedWatcher> {
        let names = relevant_names(&self.path);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                // The directory holds other files (logs, the usage database, editors' swap
                // files): only events naming the config or a link on its way count.
                let relevant = !event.kind.is_access()
                    && event.paths.iter().any(|path| {
                        path.file_name()
                            .is_some_and(|name| names.iter().any(|n| n.as_os_str() == name))
                    });
                if relevant {
                    let _ = tx.send(());
                }
            })?;
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        // The target's directory only matters for in-place writes through a symlink to
        // another directory. It can vanish under us (a ConfigMap swap deletes the old
        // `..vN` right after switching `..data`), and the config's own directory still
        // sees every swap, so failing to watch it must not cost the whole watcher.
        if let Some(target_dir) = std::fs::canonicalize(&self.path)
            .ok()
            .and_then(|target| target.parent().map(Path::to_path_buf))
            .filter(|target_dir| *target_dir != dir)
        {
            if let Err(err) = watcher.watch(&target_dir, RecursiveMode::NonRecursive) {
                tracing::warn!(error = %err, dir = %target_dir.display(), "cannot watch the config's target directory; in-place writes there go unnoticed");
            }
        }
        Ok(watcher)
    }
}

/// Whether the suspended page on disk differs from the one `snapshot` serves. The page is
/// named by the config, not part of it, so an edit to it alone leaves the config equal;
/// without this check a SIGHUP or `POST /reload` after editing the page did nothing.
/// A page that cannot be read counts as changed, so the rebuild reports why.
fn suspended_page_changed(snapshot: &Snapshot) -> bool {
    match &snapshot.config.server.suspended_page {
        Some(path) => !std::fs::read(path).is_ok_and(|page| page == snapshot.suspended_page),
        None => false,
    }
}

/// File names whose change may change what `path` reads: its own name, and the first
/// component of a symlink target (`..data` in a Kubernetes ConfigMap mount, where
/// `tenants.toml -> ..data/tenants.toml` and `..data` is swapped atomically).
fn relevant_names(path: &Path) -> Vec<PathBuf> {
    let mut names = Vec::new();
    if let Some(name) = path.file_name() {
        names.push(PathBuf::from(name));
    }
    if let Ok(target) = std::fs::read_link(path) {
        if let Some(first) = target.components().next() {
            names.push(PathBuf::from(first.as_os_str()));
        }
        if let Some(name) = target.file_name() {
            names.push(PathBuf::from(name));
        }
    }
    names
}
