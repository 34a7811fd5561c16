//! Persistent usage metering: the [`UsageMeter`]'s counts, added up per tenant and hour in
//! a SQLite database, for billing.
//!
//! The request path only touches the in-memory meter. [`run_flusher`] drains it every
//! interval and adds the counts to hourly buckets with an UPSERT, in one transaction, on a
//! blocking thread. So a crash loses at most one interval, a restart keeps adding to the
//! same rows, and a failed write puts the counts back into the meter for the next try.
//!
//! The database is in WAL mode, so `gateway usage` can read it while the gateway writes.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, params_from_iter, Connection, OpenFlags, ToSql};
use serde::Serialize;

use crate::usage::{TenantUsage, UsageMeter};

/// Seconds in one bucket.
const HOUR: i64 = 3600;

/// Bumped when the table layout changes; a database from a newer gateway is refused
/// rather than misread. 2: the response cache's counters (`cache_*`), added to a version
/// 1 table by [`add_missing_counters`].
const SCHEMA_VERSION: i64 = 2;

/// The table and its index. The counter columns are [`TenantUsage::NAMES`], so the
/// counters are listed in one place; their order in the table is that order.
static SCHEMA: LazyLock<String> = LazyLock::new(|| {
    let counters: String = TenantUsage::NAMES
        .iter()
        .map(|name| format!("    {name:<11} INTEGER NOT NULL DEFAULT 0,\n"))
        .collect();
    format!(
        "
CREATE TABLE IF NOT EXISTS usage_hourly (
    tenant      TEXT    NOT NULL,
    hour        INTEGER NOT NULL, -- unix seconds, floored to the hour (UTC)
{counters}    PRIMARY KEY (tenant, hour)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_hourly_by_hour ON usage_hourly (hour);
"
    )
});

/// Adds one tenant's counts to its hour: `?1` tenant, `?2` hour, then the counters.
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let placeholders: Vec<String> = (3..3 + TenantUsage::NAMES.len())
        .map(|index| format!("?{index}"))
        .collect();
    let updates: Vec<String> = TenantUsage::NAMES
        .iter()
        .map(|name| format!("{name} = {name} + excluded.{name}"))
        .collect();
    format!(
        "INSERT INTO usage_hourly (tenant, hour, {}) VALUES (?1, ?2, {}) \
         ON CONFLICT (tenant, hour) DO UPDATE SET {}",
        TenantUsage::NAMES.join(", "),
        placeholders.join(", "),
        updates.join(", ")
    )
});

/// A usage database could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
#[error("usage database {}: {action}{}", path.display(), colon_then(source))]
pub struct UsageStoreError {
    /// The database file.
    path: PathBuf,
    /// What was being done, or what is wrong ("cannot write hour 1700000000").
    action: String,
    /// What SQLite said, when it was SQLite that failed.
    #[source]
    source: Option<rusqlite::Error>,
}

/// `": {error}"`, or nothing when there is no underlying error.
fn colon_then(source: &Option<rusqlite::Error>) -> String {
    source
        .as_ref()
        .map_or_else(String::new, |err| format!(": {err}"))
}

impl UsageStoreError {
    fn new(path: &Path, action: impl Into<String>, source: rusqlite::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            action: action.into(),
            source: Some(source),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether another connection held the database locked past the busy timeout (worth
    /// retrying later, unlike a corrupt or unwritable file).
    pub fn is_busy(&self) -> bool {
        matches!(
            self.source
                .as_ref()
                .and_then(rusqlite::Error::sqlite_error_code),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

/// One line of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// The tenant.
    pub tenant: String,
    /// Start of the hour (unix seconds, UTC) for hourly reports; `None` in totals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hour: Option<i64>,
    /// The counts.
    #[serde(flatten)]
    pub usage: TenantUsage,
}

/// The usage database. Cheap to share behind an `Arc`; calls are serialised on one
/// connection and block, so call them from a blocking thread in async code.
#[derive(Debug)]
pub struct UsageStore {
    /// The database file, for error messages.
    path: PathBuf,
    /// One connection: there is one writer (the flusher), and reports are rare.
    conn: Mutex<Connection>,
}

impl UsageStore {
    /// Opens (creating if needed) the database at `path` for writing: creates the table,
    /// and switches to WAL with `synchronous=NORMAL`, which survives a process crash and
    /// at worst loses the last transactions on power loss, at one fsync per checkpoint
    /// instead of one per flush.
    pub fn open(path: impl AsRef<Path>) -> Result<UsageStore, UsageStoreError> {
        let path = path.as_ref();
        let fail = |action: &'static str| move |err| UsageStoreError::new(path, action, err);
        let conn = Connection::open(path).map_err(fail("cannot open"))?;
        // A `gateway usage` report running at the same moment holds a read lock briefly;
        // wait for it rather than fail the flush.
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(fail("cannot set busy timeout"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(fail("cannot switch to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "usage database is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail("cannot set synchronous=NORMAL"))?;
        check_schema_version(&conn, path)?;
        conn.execute_batch(&SCHEMA)
            .map_err(fail("cannot create the usage table"))?;
        add_missing_counters(&conn).map_err(fail("cannot add the new counter columns"))?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(fail("cannot record the schema version"))?;
        Ok(Self::from_conn(path, conn))
    }

    /// Opens an existing database read-only, for reports: never creates a file where a
    /// mistyped path points, and cannot interfere with the gateway writing.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<UsageStore, UsageStoreError> {
        let path = path.as_ref();
        let fail = |action: &'static str| move |err| UsageStoreError::new(path, action, err);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(fail("cannot open"))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(fail("cannot set busy timeout"))?;
        check_schema_version(&conn, path)?;
        Ok(Self::from_conn(path, conn))
    }

    fn from_conn(path: &Path, conn: Connection) -> Self {
        Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done state: an open transaction
        // is rolled back when dropped.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `counts` to the bucket of `hour` (unix seconds; floored to the hour), in one
    /// transaction: either every tenant's counts are added or none are.
    pub fn flush(
        &self,
        hour: i64,
        counts: &HashMap<Arc<str>, TenantUsage>,
    ) -> Result<(), UsageStoreError> {
        let hour = floor_to_hour(hour);
        let fail = |err| UsageStoreError::new(&self.path, format!("cannot write hour {hour}"), err);
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(fail)?;
        {
            let mut upsert = tx.prepare_cached(&UPSERT).map_err(fail)?;
            for (tenant, usage) in counts {
                if usage.requests == 0 {
                    continue;
                }
                let counters = usage.counters().map(to_sql);
                let key: [&dyn ToSql; 2] = [&tenant.as_ref(), &hour];
                let counters = counters.iter().map(|count| count as &dyn ToSql);
                upsert
                    .execute(params_from_iter(key.into_iter().chain(counters)))
                    .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)
    }

    /// Totals per tenant (sorted by tenant), over the hours starting at or after `since`
    /// (unix seconds, floored to the hour, so the hour containing `since` is included),
    /// for one tenant or all.
    pub fn report(
        &self,
        tenant: Option<&str>,
        since: Option<i64>,
    ) -> Result<Vec<UsageRow>, UsageStoreError> {
        let sql = format!(
            "SELECT tenant, NULL, {} FROM usage_hourly \
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR hour >= ?2) \
             GROUP BY tenant ORDER BY tenant",
            sums()
        );
        self.query(&sql, tenant, since)
    }

    /// Like [`report`](Self::report), but one row per tenant and hour, sorted by tenant
    /// then hour.
    pub fn report_hourly(
        &self,
        tenant: Option<&str>,
        since: Option<i64>,
    ) -> Result<Vec<UsageRow>, UsageStoreError> {
        let sql = format!(
            "SELECT tenant, hour, {} FROM usage_hourly \
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR hour >= ?2) \
             ORDER BY tenant, hour",
            TenantUsage::NAMES.join(", ")
        );
        self.query(&sql, tenant, since)
    }

    fn query(
        &self,
        sql: &str,
        tenant: Option<&str>,
        since: Option<i64>,
    ) -> Result<Vec<UsageRow>, UsageStoreError> {
        let fail = |err| UsageStoreError::new(&self.path, "cannot read usage", err);
        let conn = self.lock();
        let mut statement = conn.prepare(sql).map_err(fail)?;
        let rows = statement
            .query_map(params![tenant, since.map(floor_to_hour)], |row| {
                let mut counters = [0; TenantUsage::NAMES.len()];
                for (index, counter) in counters.iter_mut().enumerate() {
                    *counter = from_sql(row.get::<_, i64>(2 + index)?);
                }
                Ok(UsageRow {
                    tenant: row.get(0)?,
                    hour: row.get(1)?,
                    usage: TenantUsage::from_counters(counters),
                })
            })
            .map_err(fail)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(fail)
    }
}

/// `SUM(requests), SUM(fpm_time_us), …` for the totals query.
fn sums() -> String {
    TenantUsage::NAMES
        .iter()
        .map(|column| format!("SUM({column})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The migration from an older schema: every counter of [`TenantUsage::NAMES`] the table
/// lacks is added as a column of zeros (a version 1 table has none of the cache's).
fn add_missing_counters(conn: &Connection) -> rusqlite::Result<()> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_info('usage_hourly')")?;
    let present: Vec<String> = statement
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for name in TenantUsage::NAMES {
        if !present.iter().any(|column| column == name) {
            conn.execute_batch(&format!(
                "ALTER TABLE usage_hourly ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0"
            ))?;
        }
    }
    Ok(())
}

/// Refuses a database written by a newer schema, whose columns this build would misread.
fn check_schema_version(conn: &Connection, path: &Path) -> Result<(), UsageStoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|err| UsageStoreError::new(path, "cannot read the schema version", err))?;
    if version > SCHEMA_VERSION {
        return Err(UsageStoreError {
            path: path.to_path_buf(),
            action: format!(
                "schema version {version} is newer than this gateway's ({SCHEMA_VERSION})"
            ),
            source: None,
        });
    }
    Ok(())
}

/// SQLite integers are signed; a counter past `i64::MAX` (not reachable in practice) is
/// clamped rather than wrapped negative.
fn to_sql(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn from_sql(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

/// `unix_seconds` floored to the start of its hour (UTC).
pub fn floor_to_hour(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(HOUR) * HOUR
}

/// The current hour's bucket.
pub fn current_hour() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    floor_to_hour(now)
}

/// Writes the meter's pending counts to `store` every `interval`, and once more when
/// `shutdown` completes, then returns.
///
/// Counts are filed under the hour in which they are written, so a request is billed at
/// most one interval late (and, across an hour boundary, to the next hour). A failed
/// write puts the counts back into the meter, so they are retried with the next flush.
pub async fn run_flusher(
    meter: Arc<UsageMeter>,
    store: UsageStore,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let store = Arc::new(store);
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; nothing has been counted yet.
    ticks.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticks.tick() => flush_pending(&meter, &store).await,
        }
    }
    flush_pending(&meter, &store).await;
    let left: u64 = meter.take_pending().values().map(|u| u.requests).sum();
    if left > 0 {
        tracing::error!(
            path = %store.path().display(),
            requests = left,
            "usage of these requests was not saved at shutdown"
        );
    }
}

/// Takes the meter's pending counts and adds them to the store, restoring them on error.
async fn flush_pending(meter: &Arc<UsageMeter>, store: &Arc<UsageStore>) {
    let pending = meter.take_pending();
    if pending.is_empty() {
        return;
    }
    let hour = current_hour();
    let writer = Arc::clone(store);
    let written = tokio::task::spawn_blocking(move || {
        let result = writer.flush(hour, &pending);
        (pending, result)
    })
    .await;
    match written {
        Ok((_, Ok(()))) => {}
        Ok((pending, Err(err))) => {
            tracing::warn!(error = %err, "usage flush failed; retrying with the next flush");
            meter.restore_pending(pending);
        }
        // The closure does not panic short of a bug in SQLite bindings; its counts went
        // with it.
        Err(err) => tracing::error!(error = %err, "usage flush task failed; counts lost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::RequestUsage;

    fn counts(entries: &[(&str, u64)]) -> HashMap<Arc<str>, TenantUsage> {
        entries
            .iter()
            .map(|&(tenant, requests)| {
                let usage = TenantUsage {
                    requests,
                    fpm_time_us: requests * 10,
                    bytes_in: requests,
                    bytes_out: requests * 100,
                    status_2xx: requests,
                    ..TenantUsage::default()
                };
                (Arc::from(tenant), usage)
            })
            .collect()
    }

    fn requests(rows: &[UsageRow]) -> Vec<(&str, Option<i64>, u64)> {
        rows.iter()
            .map(|r| (r.tenant.as_str(), r.hour, r.usage.requests))
            .collect()
    }

    const H: i64 = 1_700_000_000 / HOUR * HOUR;

    #[test]
    fn counts_survive_reopening_and_keep_adding_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let store = UsageStore::open(&path).unwrap();
        store.flush(H, &counts(&[("a", 3), ("b", 1)])).unwrap();
        drop(store);

        let store = UsageStore::open(&path).unwrap();
        store.flush(H + HOUR, &counts(&[("a", 2)])).unwrap();
        let rows = store.report(None, None).unwrap();
        assert_eq!(requests(&rows), [("a", None, 5), ("b", None, 1)]);
        let a = &rows[0].usage;
        assert_eq!(
            (a.fpm_time_us, a.bytes_in, a.bytes_out, a.status_2xx),
            (50, 5, 500, 5)
        );
    }

    #[test]
    fn two_flushes_in_the_same_hour_add_to_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = UsageStore::open(dir.path().join("usage.db")).unwrap();
        store.flush(H + 5, &counts(&[("a", 3)])).unwrap();
        store.flush(H + HOUR - 1, &counts(&[("a", 4)])).unwrap();
        let rows = store.report_hourly(None, None).unwrap();
        assert_eq!(requests(&rows), [("a", Some(H), 7)]);
    }

    #[test]
    fn reports_filter_by_tenant_and_since() {
        let dir = tempfile::tempdir().unwrap();
        let store = UsageStore::open(dir.path().join("usage.db")).unwrap();
        store.flush(H, &counts(&[("a", 1), ("b", 10)])).unwrap();
        store
            .flush(H + HOUR, &counts(&[("a", 2), ("b", 20)]))
            .unwrap();
        store.flush(H + 2 * HOUR, &counts(&[("a", 4)])).unwrap();

        let rows = store.report(Some("a"), None).unwrap();
        assert_eq!(requests(&rows), [("a", None, 7)]);
        // `since` in the middle of an hour includes that hour.
        let rows = store.report(None, Some(H + HOUR + 1800)).unwrap();
        assert_eq!(requests(&rows), [("a", None, 6), ("b", None, 20)]);
        let rows = store.report_hourly(Some("b"), Some(H + HOUR)).unwrap();
        assert_eq!(requests(&rows), [("b", Some(H + HOUR), 20)]);
        assert!(store.report(Some("nobody"), None).unwrap().is_empty());
    }

    #[test]
    fn read_only_reports_see_what_the_writer_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let writer = UsageStore::open(&path).unwrap();
        writer.flush(H, &counts(&[("a", 2)])).unwrap();
        let reader = UsageStore::open_read_only(&path).unwrap();
        assert_eq!(
            requests(&reader.report(None, None).unwrap()),
            [("a", None, 2)]
        );
        writer.flush(H, &counts(&[("a", 1)])).unwrap();
        assert_eq!(
            requests(&reader.report(None, None).unwrap()),
            [("a", None, 3)]
        );
    }

    #[test]
    fn read_only_open_does_not_create_a_missing_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.db");
        let err = UsageStore::open_read_only(&path).unwrap_err();
        assert_eq!(err.path(), path);
        assert!(err.to_string().contains("typo.db"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn the_database_is_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = UsageStore::open(dir.path().join("usage.db")).unwrap();
        let mode: String = store
            .lock()
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_version_1_database_gains_the_cache_counters_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE usage_hourly (tenant TEXT NOT NULL, hour INTEGER NOT NULL, \
             requests INTEGER NOT NULL DEFAULT 0, fpm_time_us INTEGER NOT NULL DEFAULT 0, \
             bytes_in INTEGER NOT NULL DEFAULT 0, bytes_out INTEGER NOT NULL DEFAULT 0, \
             status_1xx INTEGER NOT NULL DEFAULT 0, status_2xx INTEGER NOT NULL DEFAULT 0, \
             status_3xx INTEGER NOT NULL DEFAULT 0, status_4xx INTEGER NOT NULL DEFAULT 0, \
             status_5xx INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (tenant, hour)) WITHOUT ROWID;
             INSERT INTO usage_hourly (tenant, hour, requests) VALUES ('a', 0, 7);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let store = UsageStore::open(&path).unwrap();
        let rows = store.report(None, None).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].usage.requests, 7);
        assert_eq!(rows[0].usage.cache_hits, 0);
    }

    #[test]
    fn a_database_from_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = UsageStore::open(&path).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn hours_are_floored_in_utc_including_before_1970() {
        assert_eq!(floor_to_hour(H + 3599), H);
        assert_eq!(floor_to_hour(-1), -HOUR);
        assert_eq!(current_hour() % HOUR, 0);
    }

    fn record(meter: &UsageMeter, tenant: &str, n: usize) {
        let tenant: Arc<str> = Arc::from(tenant);
        for _ in 0..n {
            meter.record(
                &tenant,
                &RequestUsage {
                    status: 200,
                    ..RequestUsage::default()
                },
            );
        }
    }

    /// Polls `store` until `want` shows up: the flusher writes on a blocking thread.
    async fn eventually(store: &UsageStore, want: &[(&str, Option<i64>, u64)]) {
        let mut rows = Vec::new();
        for _ in 0..500 {
            rows = store.report(None, None).unwrap();
            if requests(&rows) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(requests(&rows), want);
    }

    #[tokio::test]
    async fn the_flusher_writes_every_interval_and_once_more_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let meter = Arc::new(UsageMeter::default());
        let store = UsageStore::open(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let flusher = tokio::spawn(run_flusher(
            Arc::clone(&meter),
            store,
            Duration::from_millis(20),
            async move {
                let _ = stopped.await;
            },
        ));
        let reader = UsageStore::open_read_only(&path).unwrap();
        record(&meter, "a", 2);
        eventually(&reader, &[("a", None, 2)]).await;

        // Whether the next tick or the shutdown flush writes these, none may be lost.
        record(&meter, "a", 1);
        record(&meter, "b", 1);
        stop.send(()).unwrap();
        flusher.await.unwrap();
        let rows = reader.report(None, None).unwrap();
        assert_eq!(requests(&rows), [("a", None, 3), ("b", None, 1)]);
        assert!(meter.take_pending().is_empty());
    }

    #[tokio::test]
    async fn shutdown_flushes_what_no_interval_has_written_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let meter = Arc::new(UsageMeter::default());
        record(&meter, "a", 4);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let flusher = tokio::spawn(run_flusher(
            Arc::clone(&meter),
            UsageStore::open(&path).unwrap(),
            Duration::from_secs(3600),
            async move {
                let _ = stopped.await;
            },
        ));
        stop.send(()).unwrap();
        flusher.await.unwrap();
        let reader = UsageStore::open_read_only(&path).unwrap();
        assert_eq!(
            requests(&reader.report(None, None).unwrap()),
            [("a", None, 4)]
        );
    }

    #[tokio::test]
    async fn a_failed_flush_puts_the_counts_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        UsageStore::open(&path).unwrap();
        // A read-only connection cannot write: the flush fails like a full disk would.
        let store = Arc::new(UsageStore::open_read_only(&path).unwrap());
        let meter = Arc::new(UsageMeter::default());
        record(&meter, "a", 3);
        flush_pending(&meter, &store).await;
        assert_eq!(meter.take_pending()[&Arc::<str>::from("a")].requests, 3);
    }
}
