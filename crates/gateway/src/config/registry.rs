//! The `[registry]` table and the fleet keys of `[usage]`: where the tenants come from
//! when several gateways share them in PostgreSQL, and where usage is shipped.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::keys;
use super::units::HumanDuration;
use super::ConfigError;

/// Default interval of the registry's periodic version check (a missed notification is
/// caught at the latest this long after it).
pub const DEFAULT_REGISTRY_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// `[registry]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    postgres: Option<String>,
    snapshot_file: Option<PathBuf>,
    check_interval: Option<HumanDuration>,
}

/// The validated `[registry]` table. Without `postgres` the tenants come from the
/// config file, as on a single machine.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The libpq connection string of the shared registry (`host=… dbname=…`); `None`:
    /// tenants come from `[tenants.NAME]` tables in this file.
    pub postgres: Option<String>,
    /// Where the last good registry is kept, to start from when PostgreSQL is down at
    /// start (resolved against the config file's directory).
    pub snapshot_file: Option<PathBuf>,
    /// How often the version in PostgreSQL is compared with the one served, to catch a
    /// lost notification or a half-open connection.
    pub check_interval: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            postgres: None,
            snapshot_file: None,
            check_interval: DEFAULT_REGISTRY_CHECK_INTERVAL,
        }
    }
}

impl fmt::Debug for RegistryConfig {
    // The connection string may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("postgres", &self.postgres.as_ref().map(|_| "…"))
            .field("snapshot_file", &self.snapshot_file)
            .field("check_interval", &self.check_interval)
            .finish()
    }
}

impl RawRegistry {
    /// Validates the table; `has_tenants`: whether the file has `[tenants.NAME]` tables,
    /// which a fleet gateway refuses (they would silently be ignored).
    pub(super) fn validate(
        self,
        base_dir: &Path,
        has_tenants: bool,
    ) -> Result<RegistryConfig, ConfigError> {
        let postgres = self.postgres.filter(|s| !s.trim().is_empty());
        if postgres.is_some() && has_tenants {
            return Err(ConfigError::invalid(
                "tenants",
                "with [registry] postgres the tenants come from PostgreSQL; move these \
                 [tenants] tables there with `gateway registry import FILE`",
            )
            .at(keys(&["tenants"])));
        }
        let check_interval = self
            .check_interval
            .map_or(DEFAULT_REGISTRY_CHECK_INTERVAL, |d| d.0);
        if check_interval.is_zero() {
            return Err(
                ConfigError::invalid("registry.check_interval", "must be above zero")
                    .at(keys(&["registry", "check_interval"])),
            );
        }
        Ok(RegistryConfig {
            postgres,
            snapshot_file: self.snapshot_file.map(|file| base_dir.join(file)),
            check_interval,
        })
    }
}

/// The fleet keys of `[usage]`, validated: where hourly totals are shipped, as whom.
#[derive(Clone, PartialEq, Eq)]
pub struct UsageShipping {
    /// The libpq connection string of the shared usage ledger.
    pub postgres: String,
    /// This gateway's name in the ledger, unique in the fleet (an advisory lock refuses
    /// a second gateway shipping under the same name).
    pub gateway_id: String,
}

impl fmt::Debug for UsageShipping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageShipping")
            .field("postgres", &"…")
            .field("gateway_id", &self.gateway_id)
            .finish()
    }
}

/// Validates `[usage] postgres` and `gateway_id`: both or neither, and a database to
/// buffer in.
pub(super) fn validate_shipping(
    postgres: Option<String>,
    gateway_id: Option<String>,
    has_database: bool,
) -> Result<Option<UsageShipping>, ConfigError> {
    match (postgres, gateway_id) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::invalid(
            "usage.gateway_id",
            "shipping usage to PostgreSQL needs a gateway_id unique in the fleet",
        )
        .at(keys(&["usage", "postgres"]))),
        (None, Some(_)) => Err(ConfigError::invalid(
            "usage.gateway_id",
            "only means something with usage.postgres",
        )
        .at(keys(&["usage", "gateway_id"]))),
        (Some(postgres), Some(gateway_id)) => {
            let valid = !gateway_id.is_empty()
                && gateway_id.len() <= 64
                && gateway_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid {
                return Err(ConfigError::invalid(
                    "usage.gateway_id",
                    "1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.'",
                )
                .at(keys(&["usage", "gateway_id"])));
            }
            if !has_database {
                return Err(ConfigError::invalid(
                    "usage.postgres",
                    "needs usage.database, the local buffer usage is shipped from",
                )
                .at(keys(&["usage", "postgres"])));
            }
            Ok(Some(UsageShipping {
                postgres,
                gateway_id,
            }))
        }
    }
}
