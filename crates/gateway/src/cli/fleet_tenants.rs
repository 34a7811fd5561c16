//! `gateway tenants list|show|add|remove|suspend|resume` in a fleet (`[registry]
//! postgres`): the tenants are read from and written to the registry in PostgreSQL, never
//! the config file (which has no `[tenants]` there), through the same
//! [`Store`](crate::fleet::Store) writes as the admin API.
//!
//! Every write is versioned: with `--if-match VERSION` it happens only if the tenant is
//! still at that version (what `tenants show` printed); without it the CLI reads the
//! tenant's version and writes against that, so a change committed in between is a
//! conflict ([`WriteError::Precondition`]), never an overwrite. A host another tenant has
//! is refused by the database ([`WriteError::HostTaken`], naming the owner).

use std::collections::BTreeMap;
use std::path::Path;

use super::registry::block_on;
use super::CliError;
use crate::config::{Config, TenantSettings};
use crate::fleet::{connect, registry, schema, RegistryView, Store, WriteError};

/// `[registry] postgres` of the config file at `path`, when it names one: the tenant
/// commands then act on the registry. Read from the raw TOML, so a file that does not
/// validate still gets the file commands (and their precise errors).
pub(super) fn registry_conn(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    let conn = table.get("registry")?.get("postgres")?.as_str()?.trim();
    (!conn.is_empty()).then(|| conn.to_owned())
}

/// The registry now, and the config file loaded with its tenants (validated as a
/// gateway would).
pub(super) fn load(path: &Path, conn: &str) -> Result<(Config, RegistryView), CliError> {
    let view = block_on(async {
        let (mut client, _notes) = connect(conn).await?;
        schema::check(&client).await?;
        Ok(registry::read_full(&mut client).await?)
    })?;
    let config = Config::load_with_tenants(path, &view.tenant_settings())?;
    Ok((config, view))
}

/// `tenants add` in a fleet: validated with the registry and the file's other settings
/// (what every gateway will build), then created in PostgreSQL (create-only). Hosts are
/// the database's to decide: a host another tenant has is refused by the write, naming
/// the tenant that has it.
pub(super) fn add(
    path: &Path,
    conn: &str,
    name: &str,
    settings: TenantSettings,
) -> Result<String, CliError> {
    let tenant = settings.clone().validate(name)?;
    let spec = spec_of(&settings);
    block_on(async {
        let (mut client, _notes) = connect(conn).await?;
        schema::check(&client).await?;
        let view = registry::read_full(&mut client).await?;
        drop(client);
        // The other tenants, less those claiming one of the new hosts: that conflict is
        // the write's to report; everything else must validate together.
        let mut tenants: BTreeMap<String, TenantSettings> = view
            .tenants
            .iter()
            .filter(|(other, entry)| {
                *other != name
                    && !entry
                        .settings
                        .clone()
                        .validate(other)
                        .is_ok_and(|t| t.hosts.iter().any(|h| tenant.hosts.contains(h)))
            })
            .map(|(other, entry)| (other.clone(), entry.settings.clone()))
            .collect();
        tenants.insert(name.to_owned(), settings.clone());
        Config::load_with_tenants(path, &tenants)?;
        let written = Store::new(conn)?
            .put(name, &spec, &tenant.hosts, None, true)
            .await?;
        let state = if settings.enabled {
            "enabled"
        } else {
            "suspended"
        };
        Ok(format!(
            "added tenant {name:?} ({}, {} params, {state}) to the fleet registry as version {}\n",
            tenant.hosts.join(", "),
            settings.params.len(),
            written.version
        ))
    })
}

/// `tenants remove` in a fleet.
pub(super) fn remove(conn: &str, name: &str, if_match: Option<i64>) -> Result<String, CliError> {
    block_on(async {
        let store = Store::new(conn)?;
        let expected = expected_version(&store, name, if_match).await?;
        let version = store.delete(name, Some(expected)).await?;
        Ok(format!(
            "removed tenant {name:?} from the fleet registry (version {version})\n"
        ))
    })
}

/// `tenants suspend|resume` in a fleet.
pub(super) fn set_enabled(
    conn: &str,
    name: &str,
    enabled: bool,
    if_match: Option<i64>,
) -> Result<String, CliError> {
    block_on(async {
        let store = Store::new(conn)?;
        let expected = expected_version(&store, name, if_match).await?;
        match store.set_enabled(name, enabled, Some(expected)).await? {
            None => {
                let state = if enabled { "enabled" } else { "suspended" };
                Ok(format!(
                    "tenant {name:?} is already {state}; nothing to do\n"
                ))
            }
            Some(version) => {
                let verb = if enabled { "resumed" } else { "suspended" };
                Ok(format!(
                    "{verb} tenant {name:?} in the fleet registry as version {version}\n"
                ))
            }
        }
    })
}

/// The version a write is made against: `--if-match`, else the tenant's version read now.
async fn expected_version(
    store: &Store,
    name: &str,
    if_match: Option<i64>,
) -> Result<i64, CliError> {
    if let Some(version) = if_match {
        return Ok(version);
    }
    store
        .version_of(name)
        .await?
        .ok_or_else(|| CliError::FleetWrite(WriteError::UnknownTenant(name.to_owned())))
}

/// A tenant as the registry stores it: the admin API's JSON body, keys left unset
/// omitted (they follow `[defaults]`).
fn spec_of(settings: &TenantSettings) -> serde_json::Value {
    let mut spec = serde_json::Map::new();
    spec.insert("hosts".to_owned(), settings.hosts.clone().into());
    if !settings.params.is_empty() {
        let params: serde_json::Map<String, serde_json::Value> = settings
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        spec.insert("params".to_owned(), params.into());
    }
    spec.insert("enabled".to_owned(), settings.enabled.into());
    if let Some(limit) = settings.max_concurrency {
        spec.insert("max_concurrency".to_owned(), limit.into());
    }
    if let Some(upstream) = &settings.upstream {
        spec.insert("upstream".to_owned(), upstream.clone().into());
    }
    if let Some(root) = &settings.private_root {
        spec.insert("private_root".to_owned(), root.clone().into());
    }
    serde_json::Value::Object(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_named_by_the_raw_file_even_when_it_does_not_validate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "[registry]\npostgres = \" host=/x \"\n[nonsense]\n").unwrap();
        assert_eq!(registry_conn(&path).as_deref(), Some("host=/x"));
        std::fs::write(&path, "[registry]\npostgres = \"\"\n").unwrap();
        assert_eq!(registry_conn(&path), None);
        std::fs::write(&path, "[tenants.a]\nhosts = [\"a.example\"]\n").unwrap();
        assert_eq!(registry_conn(&path), None);
    }

    #[test]
    fn a_spec_round_trips_through_tenant_settings() {
        let settings = TenantSettings {
            hosts: vec!["a.example".into()],
            params: [("DBPASS".to_owned(), "x".to_owned())]
                .into_iter()
                .collect(),
            enabled: false,
            max_concurrency: Some(3),
            request_buffering: None,
            tls: None,
            compression: None,
            private_root: Some("/data/{tenant}".into()),
            upstream: None,
            cache: None,
        };
        let spec = spec_of(&settings);
        let back: TenantSettings = serde::Deserialize::deserialize(&spec).unwrap();
        assert!(back == settings);
    }
}
