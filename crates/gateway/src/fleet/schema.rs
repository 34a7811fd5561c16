//! The fleet's tables in PostgreSQL and their versioned migrations
//! (`gateway registry migrate`).
//!
//! ```text
//! registry_version (one row)   version ── bumped first by every write transaction;
//!                               │          its trigger: pg_notify('gateway_registry', version)
//! tenants                       name PK, spec JSONB, version, deleted (tombstone)
//! tenant_hosts                  host PK (one tenant per host), tenant → tenants
//! usage_hourly                  (gateway_id, tenant, hour) PK, seq, counters
//! ```

use std::sync::LazyLock;

use super::FleetError;
use crate::usage::TenantUsage;

/// The channel the registry's trigger notifies.
pub const CHANNEL: &str = "gateway_registry";

/// Serializes migrations of concurrent `migrate` runs (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x6677_7265_6769_7374;

/// The migrations, in order; the schema's version is how many ran.
static MIGRATIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let counters: String = TenantUsage::NAMES
        .iter()
        .map(|name| format!("    {name} BIGINT NOT NULL DEFAULT 0,\n"))
        .collect();
    vec![format!(
        "
CREATE TABLE registry_version (
    id      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    version BIGINT  NOT NULL
);
INSERT INTO registry_version (id, version) VALUES (TRUE, 0);
CREATE TABLE tenants (
    name       TEXT        PRIMARY KEY,
    spec       JSONB       NOT NULL,
    version    BIGINT      NOT NULL,
    deleted    BOOLEAN     NOT NULL DEFAULT FALSE,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX tenants_by_version ON tenants (version);
CREATE TABLE tenant_hosts (
    host   TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants (name)
);
CREATE INDEX tenant_hosts_by_tenant ON tenant_hosts (tenant);
CREATE FUNCTION gateway_registry_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', NEW.version::text);
    RETURN NEW;
END
$$;
CREATE TRIGGER registry_version_notify AFTER UPDATE ON registry_version
    FOR EACH ROW EXECUTE FUNCTION gateway_registry_notify();
CREATE TABLE usage_hourly (
    gateway_id TEXT   NOT NULL,
    tenant     TEXT   NOT NULL,
    hour       BIGINT NOT NULL, -- unix seconds, floored to the hour (UTC)
    seq        BIGINT NOT NULL,
{counters}    PRIMARY KEY (gateway_id, tenant, hour)
);
CREATE INDEX usage_hourly_by_hour ON usage_hourly (hour);
"
    )]
});

/// The schema version this gateway reads and writes.
pub fn current_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Brings the schema up to [`current_version`], each migration in its own
/// transaction, under an advisory lock so concurrent runs wait for each other. Returns
/// the versions before and after.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<(i64, i64), FleetError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS gateway_schema (
                version    BIGINT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(FleetError::query("creating gateway_schema"))?;
    let tx = client
        .transaction()
        .await
        .map_err(FleetError::query("starting the migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(FleetError::query("locking the schema"))?;
    let before = version_in(&tx).await?;
    if before > current_version() {
        return Err(newer(before));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(before as usize) {
        let version = index as i64 + 1;
        tx.batch_execute(migration)
            .await
            .map_err(FleetError::query("applying a migration"))?;
        tx.execute(
            "INSERT INTO gateway_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(FleetError::query("recording the schema version"))?;
    }
    tx.commit()
        .await
        .map_err(FleetError::query("committing the migration"))?;
    Ok((before, current_version()))
}

/// Refuses a database whose schema is missing, older or newer than this gateway's.
pub async fn check(client: &tokio_postgres::Client) -> Result<(), FleetError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('gateway_schema') IS NOT NULL", &[])
        .await
        .map_err(FleetError::query("reading the schema version"))?
        .get(0);
    let version = if exists { version_in(client).await? } else { 0 };
    match version.cmp(&current_version()) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(newer(version)),
        std::cmp::Ordering::Less => Err(FleetError::Schema(format!(
            "the fleet schema in PostgreSQL is at version {version}, this gateway needs {}: \
             run `gateway registry migrate --config FILE`",
            current_version()
        ))),
    }
}

async fn version_in(client: &impl tokio_postgres::GenericClient) -> Result<i64, FleetError> {
    let row = client
        .query_one("SELECT COALESCE(max(version), 0) FROM gateway_schema", &[])
        .await
        .map_err(FleetError::query("reading the schema version"))?;
    Ok(row.get(0))
}

fn newer(version: i64) -> FleetError {
    FleetError::Schema(format!(
        "the fleet schema in PostgreSQL is at version {version}, newer than this gateway's \
         ({}): upgrade the gateway",
        current_version()
    ))
}
