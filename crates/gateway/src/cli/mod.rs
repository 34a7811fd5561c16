//! Command-line actions that do not run the server: `check`, `tenants list|show|add|
//! remove|suspend|resume`, and `usage`. Each returns the text to print, so `main.rs` only
//! parses arguments and prints, and tests call these directly.
//!
//! Output is an aligned table for people, or JSON (and CSV for usage) for scripts. Param
//! values that look secret ([`is_secret_param`](crate::config::is_secret_param)) are shown
//! as `***` in every format. The tenant commands are the admin API's too
//! ([`tenant_ops`](crate::tenant_ops)); the files here are their command-line side.
//!
//! # Layout
//! One file per command: [`check`](check()), [`tenants_list`] (`list.rs`),
//! [`tenants_show`] (`show.rs`), [`tenants_add`] (`add.rs`), [`tenants_remove`],
//! [`tenants_suspend`] and [`tenants_resume`] (`edit.rs`), [`usage_report`] (`usage.rs`,
//! with `since.rs` for `--since`); `registry.rs`: `registry migrate|import|export` and
//! the fleet side of `usage`; `fleet_tenants.rs`: the tenant commands in a fleet (they
//! read and write the registry in PostgreSQL, not the file); `table.rs` lays out text tables. [`cache_purge`]
//! (`cache.rs`) asks the running gateway's admin API.

mod add;
mod cache;
mod check;
mod edit;
mod fleet_tenants;
mod list;
mod registry;
mod show;
mod since;
mod table;
mod usage;

use std::path::PathBuf;

use serde::Serialize;

use crate::config::ConfigError;
use crate::tenant_ops::TenantOpError;
use crate::usage_store::UsageStoreError;

pub use add::{parse_param_args, tenants_add, Placement};
pub use cache::cache_purge;
pub use check::check;
pub use edit::{tenants_remove, tenants_resume, tenants_suspend};
pub use list::tenants_list;
pub use registry::{registry_export, registry_import, registry_migrate};
pub use show::tenants_show;
pub use since::parse_since;
pub use usage::{usage_report, ReportFormat};

/// Why a CLI action failed. Messages name the file and tenant, and never a param value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The config could not be loaded or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A tenant command failed: no such tenant, a name taken, or an edit refused (the
    /// file is unchanged).
    #[error(transparent)]
    Tenant(#[from] TenantOpError),
    /// A `--param` argument without `NAME=`. The argument is not echoed: it may be a
    /// password typed without its name.
    #[error("--param #{position}: expected NAME=VALUE")]
    InvalidParam {
        /// 1-based position among the `--param` arguments.
        position: usize,
    },
    /// The same param given twice.
    #[error("--param {name} given more than once")]
    DuplicateParam {
        /// The param name.
        name: String,
    },
    /// `usage` with a config that has no `[usage] database`.
    #[error("{}: usage metering is off (set `database` under [usage])", path.display())]
    MeteringOff {
        /// The config file.
        path: PathBuf,
    },
    /// The usage database named in the config does not exist (yet).
    #[error("no usage database at {} (the gateway creates it on its first flush)", path.display())]
    NoUsageDatabase {
        /// The database file.
        path: PathBuf,
    },
    /// The usage database could not be read.
    #[error(transparent)]
    UsageStore(#[from] UsageStoreError),
    /// A `--since` that is neither `YYYY-MM-DD` nor RFC 3339.
    #[error("--since {value:?}: {reason} (use YYYY-MM-DD or RFC 3339, e.g. 2024-05-01T10:00:00Z)")]
    InvalidSince {
        /// As given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `cache purge` with a config that has no `[server] admin` listener to ask.
    #[error("{}: the admin API is off (set `admin` under [server]); the cache lives in the running gateway", path.display())]
    AdminOff {
        /// The config file.
        path: PathBuf,
    },
    /// The admin API could not be reached, or refused the request.
    #[error("{0}")]
    Admin(String),
    /// Encoding the JSON output failed.
    #[error("cannot encode JSON output: {0}")]
    Json(#[from] serde_json::Error),
    /// A `registry` command with a config that has no `[registry] postgres`.
    #[error("{}: no [registry] postgres: this gateway's tenants are in the file", path.display())]
    NotFleet {
        /// The config file.
        path: PathBuf,
    },
    /// The fleet's PostgreSQL could not be used.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// A write to the fleet registry was refused.
    #[error(transparent)]
    FleetWrite(#[from] crate::fleet::WriteError),
    /// `registry import` of a file that is not a tenants file.
    #[error("{}: {reason}", path.display())]
    Import {
        /// The file.
        path: PathBuf,
        /// What is wrong (names keys, never values).
        reason: String,
    },
    /// `--if-match` given for a tenant in the config file (it names a registry version).
    #[error("{}: --if-match names a fleet registry version; this file has no [registry] postgres", path.display())]
    IfMatchWithoutRegistry {
        /// The config file.
        path: PathBuf,
    },
    /// The async runtime for a fleet command could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, CliError> {
    let mut out = serde_json::to_string_pretty(value)?;
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    /// The config the commands' tests start from.
    pub(crate) const CONFIG: &str = r#"[server]
listen = "127.0.0.1:8080"

[fastcgi]
upstream = "127.0.0.1:9000"
root = "app"

[defaults.params]
APP_ENV = "demo"
API_TOKEN = "default-token"

[usage]
database = "usage.db"

[tenants.centro1]
hosts = ["centro1.example.org", "*.centro1.example.org"]
params = { DBHOST = "10.0.0.1", DBPASS = "secret1", PHP_VALUE = "a=1\nb=2" }

[tenants.centro2]
hosts = ["centro2.example.org"]
params = { DBHOST = "10.0.0.2", DBPASS = "secret2", APP_ENV = "prod" }
enabled = false
max_concurrency = 2
"#;
}
