//! The registry listener: one dedicated connection (never a pooled one) that `LISTEN`s
//! for the registry's notifications and puts each new registry in service.
//!
//! ```text
//!            ┌──────────── backoff (100 ms … 5 s) ◄──────────────┐
//!            ▼                                                   │ error, timeout,
//!   connect → LISTEN → full re-read → apply ─► wait ─────────────┤ connection gone
//!                                              │  notification,  │
//!                                              │  a writer's     │
//!                                              │  nudge, or the  │
//!                                              │  periodic check │
//!                                              ▼  finds it newer │
//!                                   read rows newer than served ─┘
//! ```
//!
//! `LISTEN` comes before the full re-read, so a change committed in between is seen by
//! one or the other; notifications sent while disconnected are lost, which the full
//! re-read makes up for. The periodic check (`check_interval`) bounds how long a lost
//! notification or a half-open connection (its query times out) can go unnoticed.

use std::sync::Arc;
use std::time::Duration;

use super::registry::{read_changes, read_full, read_version};
use super::schema::CHANNEL;
use super::{connect, Fleet, FleetError};

/// First and longest wait between reconnects.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Upper bound of one read or check: past it the connection counts as half-open.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until `stop` completes.
pub(super) async fn run(fleet: Arc<Fleet>, stop: impl std::future::Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    let mut backoff = BACKOFF.0;
    loop {
        let session = session(&fleet, &mut backoff);
        let ended = tokio::select! {
            () = &mut stop => return,
            ended = session => ended,
        };
        fleet.status.set_connected(false);
        match ended {
            Ok(()) => tracing::warn!("registry connection closed; reconnecting"),
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "registry connection lost; serving the last good registry");
                fleet.status.record_error(&err);
            }
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// One connection's life: returns when it ends.
async fn session(fleet: &Fleet, backoff: &mut Duration) -> Result<(), FleetError> {
    let (mut client, mut notes) = connect(&fleet.conn).await?;
    bounded("LISTEN", client.batch_execute(&format!("LISTEN {CHANNEL}")))
        .await?
        .map_err(FleetError::query("LISTEN"))?;
    let read = bounded("reading the registry", read_full(&mut client)).await?;
    fleet.status.set_connected(true);
    *backoff = BACKOFF.0;
    match read {
        Ok(view) => {
            tracing::info!(
                version = view.version,
                tenants = view.tenants.len(),
                "registry connected"
            );
            if view.version != fleet.version() {
                put_in_service(fleet, view).await;
            } else {
                fleet.status.record_version(view.version);
            }
        }
        Err(err) => refuse_unreadable(fleet, err)?,
    }
    let mut check = tokio::time::interval(fleet.check_interval);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;
    loop {
        let newer = tokio::select! {
            note = notes.recv() => match note {
                // The connection ended (PostgreSQL restarted, the backend was terminated).
                None => return Ok(()),
                Some(note) => note.payload().parse::<i64>().map_or(true, |v| v > fleet.version()),
            },
            () = fleet.nudge.notified() => true,
            _ = check.tick() => {
                let limit = fleet.check_interval.clamp(Duration::from_secs(1), QUERY_TIMEOUT);
                let version = tokio::time::timeout(limit, read_version(&client))
                    .await
                    .map_err(|_| FleetError::Timeout("checking the registry version"))??;
                fleet.status.record_version(fleet.version());
                version != fleet.version()
            }
        };
        // Notifications of one burst of commits: read once for all of them.
        while notes.try_recv().is_ok() {}
        if newer {
            catch_up(fleet, &mut client).await?;
        }
    }
}

/// Reads the rows newer than the version served and puts the result in service.
async fn catch_up(fleet: &Fleet, client: &mut tokio_postgres::Client) -> Result<(), FleetError> {
    let base = fleet.view();
    let (version, changes) = match bounded(
        "reading the changed tenants",
        read_changes(client, base.version),
    )
    .await?
    {
        Ok(read) => read,
        Err(err) => return refuse_unreadable(fleet, err),
    };
    if version == base.version && changes.is_empty() {
        fleet.status.record_version(version);
        return Ok(());
    }
    if version < base.version {
        // The database went back (restored from a backup): take it whole.
        let view = bounded("reading the registry", read_full(client)).await??;
        put_in_service(fleet, view).await;
        return Ok(());
    }
    put_in_service(fleet, base.with_changes(version, changes)).await;
    Ok(())
}

/// A stored tenant that does not even parse is a registry to refuse (the previous one
/// keeps serving; the next change or check reads again), not a connection to drop.
fn refuse_unreadable(fleet: &Fleet, err: FleetError) -> Result<(), FleetError> {
    match err {
        FleetError::InvalidSpec { .. } => {
            tracing::error!(error = %err, "registry rejected; the previous one keeps serving");
            fleet.status.record_rejected(fleet.version(), &err);
            Ok(())
        }
        err => Err(err),
    }
}

/// Applies `view`; a registry that does not validate is logged and left out of service.
async fn put_in_service(fleet: &Fleet, view: super::RegistryView) {
    let version = view.version;
    match fleet.apply(view).await {
        Ok(()) => tracing::debug!(version, "registry version in service"),
        Err(err) => {
            tracing::error!(version, error = %err, "registry rejected; the previous one keeps serving");
            fleet.status.record_rejected(fleet.version(), &err);
        }
    }
}

async fn bounded<T>(
    what: &'static str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, FleetError> {
    tokio::time::timeout(QUERY_TIMEOUT, fut)
        .await
        .map_err(|_| FleetError::Timeout(what))
}
