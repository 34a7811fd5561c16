//! Reading the registry: the whole of it (at start, after a reconnect), or the rows
//! written after a version (on a notification), into a [`RegistryView`].
//!
//! Both reads run in one `REPEATABLE READ` transaction, so the version and the rows are
//! of the same moment. Since every writer bumps the version row first and holds its lock
//! to its commit, versions commit in order: seeing version N means seeing every write up
//! to N, and a later read from N misses nothing.

use std::collections::BTreeMap;

use serde::Deserialize;
use tokio_postgres::IsolationLevel;

use super::FleetError;
use crate::config::TenantSettings;

/// One tenant of the registry.
#[derive(Clone)]
pub struct TenantEntry {
    /// The registry version that last wrote it (its `ETag`).
    pub version: i64,
    /// Its settings as stored (the admin API's body; secrets in clear).
    pub spec: serde_json::Value,
    /// The same, parsed (validated with the whole config when put in service).
    pub settings: TenantSettings,
}

impl std::fmt::Debug for TenantEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantEntry")
            .field("version", &self.version)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TenantEntry {
    /// Parses a stored spec.
    pub fn parse(name: &str, version: i64, spec: serde_json::Value) -> Result<Self, FleetError> {
        let settings =
            TenantSettings::deserialize(&spec).map_err(|err| FleetError::InvalidSpec {
                tenant: name.to_owned(),
                reason: err.to_string(),
            })?;
        Ok(Self {
            version,
            spec,
            settings,
        })
    }
}

/// The registry at one version.
#[derive(Debug, Clone, Default)]
pub struct RegistryView {
    /// The registry version.
    pub version: i64,
    /// The live tenants (no tombstones), by name.
    pub tenants: BTreeMap<String, TenantEntry>,
}

impl RegistryView {
    /// The tenants' settings, as a config's `[tenants]` would hold them.
    pub fn tenant_settings(&self) -> BTreeMap<String, TenantSettings> {
        self.tenants
            .iter()
            .map(|(name, entry)| (name.clone(), entry.settings.clone()))
            .collect()
    }

    /// This view with `changes` applied (`None`: deleted), at `version`.
    pub fn with_changes(
        &self,
        version: i64,
        changes: Vec<(String, Option<TenantEntry>)>,
    ) -> RegistryView {
        let mut tenants = self.tenants.clone();
        for (name, entry) in changes {
            match entry {
                Some(entry) => tenants.insert(name, entry),
                None => tenants.remove(&name),
            };
        }
        RegistryView { version, tenants }
    }
}

/// The version in PostgreSQL now.
pub async fn read_version(client: &tokio_postgres::Client) -> Result<i64, FleetError> {
    Ok(client
        .query_one("SELECT version FROM registry_version", &[])
        .await
        .map_err(FleetError::query("reading the registry version"))?
        .get(0))
}

/// The whole registry.
pub async fn read_full(client: &mut tokio_postgres::Client) -> Result<RegistryView, FleetError> {
    let (version, rows) = read_at_one_version(
        client,
        "SELECT name, spec::text, version FROM tenants WHERE NOT deleted",
        &[],
        "reading the tenants",
    )
    .await?;
    let mut tenants = BTreeMap::new();
    for row in rows {
        let name: String = row.get(0);
        let spec = parse_spec(&name, row.get(1))?;
        let entry = TenantEntry::parse(&name, row.get(2), spec)?;
        tenants.insert(name, entry);
    }
    Ok(RegistryView { version, tenants })
}

/// The rows written after `since`: the version now, and each changed tenant (`None`:
/// deleted).
pub async fn read_changes(
    client: &mut tokio_postgres::Client,
    since: i64,
) -> Result<(i64, Vec<(String, Option<TenantEntry>)>), FleetError> {
    let (version, rows) = read_at_one_version(
        client,
        "SELECT name, spec::text, version, deleted FROM tenants WHERE version > $1",
        &[&since],
        "reading the changed tenants",
    )
    .await?;
    let mut changes = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.get(0);
        let deleted: bool = row.get(3);
        let entry = if deleted {
            None
        } else {
            let spec = parse_spec(&name, row.get(1))?;
            Some(TenantEntry::parse(&name, row.get(2), spec)?)
        };
        changes.push((name, entry));
    }
    Ok((version, changes))
}

/// The registry version and the rows of `query`, read in one repeatable-read snapshot so
/// the rows are exactly those of that version.
async fn read_at_one_version(
    client: &mut tokio_postgres::Client,
    query: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    what: &'static str,
) -> Result<(i64, Vec<tokio_postgres::Row>), FleetError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(FleetError::query("starting the registry read"))?;
    let version: i64 = tx
        .query_one("SELECT version FROM registry_version", &[])
        .await
        .map_err(FleetError::query("reading the registry version"))?
        .get(0);
    let rows = tx
        .query(query, params)
        .await
        .map_err(FleetError::query(what))?;
    tx.commit()
        .await
        .map_err(FleetError::query("ending the registry read"))?;
    Ok((version, rows))
}

fn parse_spec(name: &str, text: &str) -> Result<serde_json::Value, FleetError> {
    serde_json::from_str(text).map_err(|err| FleetError::InvalidSpec {
        tenant: name.to_owned(),
        reason: err.to_string(),
    })
}
