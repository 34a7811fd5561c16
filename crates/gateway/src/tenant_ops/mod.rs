//! Tenant operations, shared by both front ends: the CLI (`gateway tenants …`, on the
//! file) and the admin API (`/tenants…`, on the running gateway). One file per command,
//! as mini-redis's `cmd/`: each takes its input already parsed by the front end (CLI
//! arguments or a JSON body, both into [`TenantSettings`](crate::config::TenantSettings)),
//! applies it to the config file, and answers with the one [`TenantView`] both front
//! ends print, secrets masked.
//!
//! # Layout
//! - `view.rs`: [`TenantView`], the masking of secret params;
//! - [`list`], [`show`]: reads;
//! - `put.rs` ([`PutTenant`]), [`remove`], [`set_enabled`]: edits of a [`ConfigDocument`], run through
//!   [`edit`] (load, change, save validated and atomically, return the saved config).

mod list;
mod put;
mod remove;
mod set_enabled;
mod show;
mod view;

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigDocument, EditError};

pub use list::list;
pub use put::{PutMode, PutTenant};
pub use remove::remove;
pub use set_enabled::set_enabled;
pub use show::{show, TenantDetail};
pub use view::{TenantView, MASK};

/// Why a tenant operation failed. Messages name the file and tenant, never a param value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantOpError {
    /// The config file could not be edited, or the edit was refused (the file is
    /// unchanged).
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The tenant named is not in the config.
    #[error("{}: no tenant {tenant:?}", path.display())]
    UnknownTenant {
        /// The config file.
        path: PathBuf,
        /// The tenant asked for.
        tenant: String,
    },
    /// A create-only put of a name that is taken.
    #[error("{}: tenant {tenant:?} already exists (remove it first to replace it)", path.display())]
    TenantExists {
        /// The config file.
        path: PathBuf,
        /// The tenant asked for.
        tenant: String,
    },
    /// A secret param sent as [`MASK`] for a tenant that has no value to keep for it.
    #[error(
        "param {param:?}: \"***\" keeps a secret's current value, \
         but this tenant has none; send the real value"
    )]
    MaskWithoutValue {
        /// The param's name.
        param: String,
    },
}

/// Loads the config file at `path` for editing, applies `change`, and saves it (validated
/// as a load would, atomically, comments kept). Returns what `change` returned and the
/// config just saved, so the caller can put it in service without parsing the file again.
/// Nothing is written when any step fails.
pub fn edit<T>(
    path: &Path,
    change: impl FnOnce(&mut ConfigDocument) -> Result<T, TenantOpError>,
) -> Result<(T, Config), TenantOpError> {
    let mut doc = ConfigDocument::load(path)?;
    let value = change(&mut doc)?;
    let config = doc.save()?;
    Ok((value, config))
}
