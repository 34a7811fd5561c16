//! Writes to the registry (the admin API and the CLI in a fleet): one transaction each,
//! which bumps the registry version first (its row lock orders all writers, so the
//! checks below see every earlier commit), checks `If-Match` against the tenant's
//! version, and keeps `tenant_hosts` in step, whose primary key is what finally refuses
//! a host claimed twice.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction,
};
use tokio_postgres::error::SqlState;

use super::{pg_config, FleetError};

/// Connections in the writers' pool: writes are rare, and serialized by the version row.
const POOL_SIZE: usize = 4;

/// How long a writer waits for a connection (PostgreSQL down: answer quickly).
const POOL_WAIT: Duration = Duration::from_secs(5);

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// `If-Match` named another version than the tenant's (or the tenant is gone).
    #[error("tenant {tenant:?} is at version {}, not {expected} (someone else changed it; read it again)", current.map_or_else(|| "none (it does not exist)".to_owned(), |v| v.to_string()))]
    Precondition {
        /// The tenant.
        tenant: String,
        /// The version `If-Match` named.
        expected: i64,
        /// Its version now; `None`: it does not exist.
        current: Option<i64>,
    },
    /// A host another tenant already has.
    #[error("host {host:?} already belongs to tenant {owner:?}")]
    HostTaken {
        /// The host.
        host: String,
        /// The tenant that has it.
        owner: String,
    },
    /// No such tenant.
    #[error("no tenant {0:?}")]
    UnknownTenant(String),
    /// A create-only write of a name that is taken.
    #[error("tenant {0:?} already exists")]
    Exists(String),
    /// PostgreSQL could not be reached or failed.
    #[error(transparent)]
    Unavailable(#[from] FleetError),
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The registry version it committed as (the tenant's new `ETag`).
    pub version: i64,
    /// Whether the tenant was created rather than replaced.
    pub created: bool,
}

/// What a write transaction's body decided.
enum Outcome<T> {
    /// Commit, then return this.
    Written(T),
    /// Nothing to write: roll back (the version bump too), then return this.
    Unchanged(T),
}

/// The writers' connection pool.
pub struct Store {
    pool: Pool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// A pool for `conn` (connections are opened on first use).
    pub fn new(conn: &str) -> Result<Store, FleetError> {
        let manager = Manager::from_config(
            pg_config(conn)?,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|err| FleetError::Pool(err.to_string()))?;
        Ok(Store { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, FleetError> {
        self.pool
            .get()
            .await
            .map_err(|err| FleetError::Pool(err.to_string()))
    }

    /// Runs `body` in one write transaction, after bumping the registry version (passed
    /// to it: the version this write commits as); commits unless `body` fails or says
    /// [`Outcome::Unchanged`] (then dropping the transaction rolls the bump back).
    /// `begin` and `commit` name the steps in errors.
    async fn write<T>(
        &self,
        begin: &'static str,
        commit: &'static str,
        body: impl AsyncFnOnce(&Transaction<'_>, i64) -> Result<Outcome<T>, WriteError>,
    ) -> Result<T, WriteError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(FleetError::query(begin))?;
        let version = bump(&tx).await?;
        match body(&tx, version).await? {
            Outcome::Unchanged(value) => Ok(value),
            Outcome::Written(value) => {
                tx.commit().await.map_err(FleetError::query(commit))?;
                Ok(value)
            }
        }
    }

    /// Creates or replaces tenant `name` with `spec` (validated by the caller) serving
    /// `hosts` (normalised). `if_match`: only if the tenant is at that version;
    /// `create_only`: only if it does not exist.
    pub async fn put(
        &self,
        name: &str,
        spec: &serde_json::Value,
        hosts: &[String],
        if_match: Option<i64>,
        create_only: bool,
    ) -> Result<Written, WriteError> {
        self.write(
            "starting a write",
            "committing the tenant",
            async |tx: &Transaction<'_>, version| {
                let current = live_version(tx, name).await?;
                check_precondition(name, if_match, current)?;
                if create_only && current.is_some() {
                    return Err(WriteError::Exists(name.to_owned()));
                }
                let taken = tx
                    .query_opt(
                        "SELECT host, tenant FROM tenant_hosts WHERE host = ANY($1) AND tenant <> $2 LIMIT 1",
                        &[&hosts, &name],
                    )
                    .await
                    .map_err(FleetError::query("checking hosts"))?;
                if let Some(row) = taken {
                    return Err(WriteError::HostTaken {
                        host: row.get(0),
                        owner: row.get(1),
                    });
                }
                upsert_tenant(tx, name, spec, version, "writing the tenant").await?;
                tx.execute("DELETE FROM tenant_hosts WHERE tenant = $1", &[&name])
                    .await
                    .map_err(FleetError::query("writing hosts"))?;
                insert_hosts(tx, name, hosts).await?;
                Ok(Outcome::Written(Written {
                    version,
                    created: current.is_none(),
                }))
            },
        )
        .await
    }

    /// Deletes tenant `name` (a tombstone, so listeners see it go); `if_match` as in
    /// [`put`](Self::put). Returns the version it committed as.
    pub async fn delete(&self, name: &str, if_match: Option<i64>) -> Result<i64, WriteError> {
        self.write(
            "starting a write",
            "committing the delete",
            async |tx: &Transaction<'_>, version| {
                let current = live_version(tx, name).await?;
                check_precondition(name, if_match, current)?;
                if current.is_none() {
                    return Err(WriteError::UnknownTenant(name.to_owned()));
                }
                tx.execute("DELETE FROM tenant_hosts WHERE tenant = $1", &[&name])
                    .await
                    .map_err(FleetError::query("deleting hosts"))?;
                tx.execute(
                    "UPDATE tenants SET deleted = TRUE, version = $2, updated_at = now() WHERE name = $1",
                    &[&name, &version],
                )
                .await
                .map_err(FleetError::query("deleting the tenant"))?;
                Ok(Outcome::Written(version))
            },
        )
        .await
    }

    /// Sets tenant `name`'s `enabled`; returns the version it committed as, or `None`
    /// when it already was (nothing written).
    pub async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        if_match: Option<i64>,
    ) -> Result<Option<i64>, WriteError> {
        self.write(
            "starting a write",
            "committing the tenant",
            async |tx: &Transaction<'_>, version| {
                let row = tx
                    .query_opt(
                        "SELECT version, (spec->>'enabled')::boolean FROM tenants WHERE name = $1 AND NOT deleted",
                        &[&name],
                    )
                    .await
                    .map_err(FleetError::query("reading the tenant"))?;
                let current = row.as_ref().map(|row| row.get::<_, i64>(0));
                check_precondition(name, if_match, current)?;
                let Some(row) = row else {
                    return Err(WriteError::UnknownTenant(name.to_owned()));
                };
                let was: Option<bool> = row.get(1);
                if was.unwrap_or(true) == enabled {
                    return Ok(Outcome::Unchanged(None));
                }
                tx.execute(
                    "UPDATE tenants SET spec = jsonb_set(spec, '{enabled}', to_jsonb($2::boolean)), \
                     version = $3, updated_at = now() WHERE name = $1",
                    &[&name, &enabled, &version],
                )
                .await
                .map_err(FleetError::query("writing the tenant"))?;
                Ok(Outcome::Written(Some(version)))
            },
        )
        .await
    }

    /// Writes every tenant of `tenants` (name → spec and normalised hosts) in one
    /// transaction, replacing those of the same name (`gateway registry import`).
    /// Returns the version it committed as.
    pub async fn import(
        &self,
        tenants: &BTreeMap<String, (serde_json::Value, Vec<String>)>,
    ) -> Result<i64, WriteError> {
        self.write(
            "starting the import",
            "committing the import",
            async |tx: &Transaction<'_>, version| {
                let names: Vec<&String> = tenants.keys().collect();
                tx.execute("DELETE FROM tenant_hosts WHERE tenant = ANY($1)", &[&names])
                    .await
                    .map_err(FleetError::query("replacing hosts"))?;
                for (name, (spec, hosts)) in tenants {
                    upsert_tenant(tx, name, spec, version, "writing a tenant").await?;
                    insert_hosts(tx, name, hosts).await?;
                }
                Ok(Outcome::Written(version))
            },
        )
        .await
    }

    /// The live tenants' specs and the registry version (`gateway registry export`).
    pub async fn export(&self) -> Result<(i64, BTreeMap<String, serde_json::Value>), FleetError> {
        let mut client = self.client().await?;
        let view = super::registry::read_full(&mut client).await?;
        Ok((
            view.version,
            view.tenants
                .into_iter()
                .map(|(name, entry)| (name, entry.spec))
                .collect(),
        ))
    }

    /// Tenant `name`'s version now (its `ETag`), `None` when it does not exist: what a
    /// writer without `If-Match` writes against, so a change committed between this
    /// read and its write is a conflict, not an overwrite.
    pub async fn version_of(&self, name: &str) -> Result<Option<i64>, FleetError> {
        let client = self.client().await?;
        live_version(&client, name).await
    }

    /// A connection from the pool, for reports (`GET /usage` in a fleet).
    pub async fn reader(&self) -> Result<deadpool_postgres::Object, FleetError> {
        self.client().await
    }
}

/// Bumps the registry version; first in every write, so its row lock orders them.
async fn bump(tx: &Transaction<'_>) -> Result<i64, FleetError> {
    Ok(tx
        .query_one(
            "UPDATE registry_version SET version = version + 1 RETURNING version",
            &[],
        )
        .await
        .map_err(FleetError::query("bumping the registry version"))?
        .get(0))
}

/// The tenant's version, `None` when it does not exist (or is deleted).
async fn live_version(client: &impl GenericClient, name: &str) -> Result<Option<i64>, FleetError> {
    Ok(client
        .query_opt(
            "SELECT version FROM tenants WHERE name = $1 AND NOT deleted",
            &[&name],
        )
        .await
        .map_err(FleetError::query("reading the tenant"))?
        .map(|row| row.get(0)))
}

/// Creates tenant `name` at `version`, or replaces it (a tombstone comes back to life).
async fn upsert_tenant(
    tx: &Transaction<'_>,
    name: &str,
    spec: &serde_json::Value,
    version: i64,
    what: &'static str,
) -> Result<(), FleetError> {
    let spec_text = spec.to_string();
    tx.execute(
        "INSERT INTO tenants (name, spec, version, deleted) VALUES ($1, $2::text::jsonb, $3, FALSE) \
         ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, version = excluded.version, \
         deleted = FALSE, updated_at = now()",
        &[&name, &spec_text, &version],
    )
    .await
    .map_err(FleetError::query(what))?;
    Ok(())
}

/// Gives `hosts` to tenant `name`; the primary key refuses one another tenant has.
async fn insert_hosts(
    tx: &Transaction<'_>,
    name: &str,
    hosts: &[String],
) -> Result<(), WriteError> {
    for host in hosts {
        tx.execute(
            "INSERT INTO tenant_hosts (host, tenant) VALUES ($1, $2)",
            &[host, &name],
        )
        .await
        .map_err(|err| host_error(err, host))?;
    }
    Ok(())
}

fn check_precondition(
    name: &str,
    if_match: Option<i64>,
    current: Option<i64>,
) -> Result<(), WriteError> {
    match if_match {
        Some(expected) if current != Some(expected) => Err(WriteError::Precondition {
            tenant: name.to_owned(),
            expected,
            current,
        }),
        _ => Ok(()),
    }
}

/// A unique violation on `tenant_hosts` is a host taken (by a commit the pre-check could
/// not see: none, as writers are serialized, but the constraint is the rule).
fn host_error(err: tokio_postgres::Error, host: &str) -> WriteError {
    if err.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        WriteError::HostTaken {
            host: host.to_owned(),
            owner: "another tenant".to_owned(),
        }
    } else {
        WriteError::Unavailable(FleetError::Query {
            what: "writing hosts",
            source: err,
        })
    }
}
