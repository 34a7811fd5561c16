//! `gateway registry migrate|import|export`: the fleet registry in PostgreSQL
//! (`[registry] postgres` of the config), created and moved in and out of a
//! `tenants.toml`. Also the fleet side of `gateway usage`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::CliError;
use crate::config::{Config, TenantSettings};
use crate::fleet::{connect, schema, Store};
use crate::usage_store::UsageRow;

/// The fleet CLI commands run on a runtime of their own: the rest of the CLI is
/// synchronous.
pub(super) fn block_on<T>(
    fut: impl std::future::Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Runtime(err.to_string()))?
        .block_on(fut)
}

/// `[registry] postgres` of the config at `config_path`, or why there is none.
fn registry_of(config_path: &Path) -> Result<(Config, String), CliError> {
    let config = Config::load(config_path)?;
    match config.registry.postgres.clone() {
        Some(conn) => Ok((config, conn)),
        None => Err(CliError::NotFleet {
            path: config_path.to_path_buf(),
        }),
    }
}

/// `registry migrate`: creates or upgrades the fleet's tables.
pub fn registry_migrate(config_path: &Path) -> Result<String, CliError> {
    let (_, conn) = registry_of(config_path)?;
    block_on(async {
        let (mut client, _notes) = connect(&conn).await?;
        let (before, after) = schema::migrate(&mut client).await?;
        Ok(if before == after {
            format!("fleet schema is current (version {after})\n")
        } else {
            format!("fleet schema migrated from version {before} to {after}\n")
        })
    })
}

/// `registry import FILE`: writes the `[tenants.NAME]` tables of `file` to the registry
/// in one transaction (replacing tenants of the same name), after validating the
/// registry that results with this gateway's config, as every gateway will.
pub fn registry_import(config_path: &Path, file: &Path) -> Result<String, CliError> {
    let (_, conn) = registry_of(config_path)?;
    let text = std::fs::read_to_string(file)
        .map_err(|err| CliError::Config(crate::config::ConfigError::io(file, err)))?;
    let table: toml::Table = toml::from_str(&text).map_err(|err| CliError::Import {
        path: file.to_path_buf(),
        reason: err.message().to_owned(),
    })?;
    let mut specs: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    if let Some(tenants) = table.get("tenants").and_then(toml::Value::as_table) {
        for (name, value) in tenants {
            let spec = serde_json::to_value(value)?;
            specs.insert(name.clone(), spec);
        }
    }
    block_on(async {
        let store = Store::new(&conn)?;
        let (_, existing) = store.export().await?;
        let mut settings: BTreeMap<String, TenantSettings> = BTreeMap::new();
        for (name, spec) in existing.iter().chain(&specs) {
            let parsed = TenantSettings::deserialize(spec).map_err(|err| CliError::Import {
                path: file.to_path_buf(),
                reason: format!("tenant {name:?}: {err}"),
            })?;
            settings.insert(name.clone(), parsed);
        }
        // The whole registry as the gateways will validate it.
        let config = Config::load_with_tenants(config_path, &settings)?;
        let rows = specs
            .into_iter()
            .map(|(name, spec)| {
                let hosts = config
                    .tenants
                    .get(&name)
                    .map(|t| t.hosts.clone())
                    .unwrap_or_default();
                (name, (spec, hosts))
            })
            .collect::<BTreeMap<_, _>>();
        let version = store.import(&rows).await?;
        Ok(format!(
            "imported {} tenants from {} as registry version {version}\n",
            rows.len(),
            file.display()
        ))
    })
}

/// `registry export`: the registry's tenants as `[tenants.NAME]` tables (secrets in
/// clear: this is for moving them, not for showing them).
pub fn registry_export(config_path: &Path) -> Result<String, CliError> {
    let (_, conn) = registry_of(config_path)?;
    block_on(async {
        let (version, specs) = Store::new(&conn)?.export().await?;
        let mut tenants = toml::Table::new();
        for (name, spec) in specs {
            let value =
                toml::Value::try_from(without_nulls(spec)).map_err(|err| CliError::Import {
                    path: config_path.to_path_buf(),
                    reason: format!("tenant {name:?} cannot be written as TOML: {err}"),
                })?;
            tenants.insert(name, value);
        }
        let mut root = toml::Table::new();
        root.insert("tenants".to_owned(), toml::Value::Table(tenants));
        let text = toml::to_string(&root).map_err(|err| CliError::Import {
            path: config_path.to_path_buf(),
            reason: err.to_string(),
        })?;
        Ok(format!(
            "# The fleet registry at version {version} (secrets in clear).\n{text}"
        ))
    })
}

/// TOML has no null: an absent key means the same.
fn without_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(without_nulls).collect())
        }
        other => other,
    }
}

/// `usage` in a fleet: per-tenant totals over every gateway from the ledger.
pub(super) fn fleet_usage(
    conn: &str,
    tenant: Option<&str>,
    since: Option<i64>,
) -> Result<Vec<UsageRow>, CliError> {
    block_on(async {
        let (client, _notes) = connect(conn).await?;
        Ok(crate::fleet::ship::report(&client, tenant, since).await?)
    })
}
