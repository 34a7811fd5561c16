//! `gateway usage`: per-tenant totals from the usage database, as a table, JSON or CSV.

use std::fmt::Write as _;
use std::path::Path;

use super::table::{render_table, Align};
use super::{since::parse_since, to_json, CliError};
use crate::config::Config;
use crate::usage::TenantUsage;
use crate::usage_store::{UsageRow, UsageStore};

/// How `usage` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns, for people.
    Table,
    /// A JSON array of objects, for scripts.
    Json,
    /// Comma-separated values with a header row, for spreadsheets.
    Csv,
}

/// `usage`: per-tenant totals from the usage database named in the config, for one
/// tenant or all, over the hours starting at or after the hour containing `since`
/// (`YYYY-MM-DD`, midnight UTC, or RFC 3339).
///
/// Tenants no longer in the config are reported too: their usage still has to be billed.
pub fn usage_report(
    config_path: &Path,
    tenant: Option<&str>,
    since: Option<&str>,
    format: ReportFormat,
) -> Result<String, CliError> {
    let since = since.map(parse_since).transpose()?;
    let config = Config::load(config_path)?;
    if let Some(shipping) = &config.usage.shipping {
        // In a fleet: every gateway's totals, from the shared ledger.
        let rows = super::registry::fleet_usage(&shipping.postgres, tenant, since)?;
        return match format {
            ReportFormat::Json => to_json(&rows),
            ReportFormat::Csv => Ok(usage_csv(&rows)),
            ReportFormat::Table => Ok(usage_table(&rows)),
        };
    }
    let database = config.usage.database.ok_or_else(|| CliError::MeteringOff {
        path: config_path.to_path_buf(),
    })?;
    if !database.exists() {
        return Err(CliError::NoUsageDatabase { path: database });
    }
    let rows = UsageStore::open_read_only(&database)?.report(tenant, since)?;
    match format {
        ReportFormat::Json => to_json(&rows),
        ReportFormat::Csv => Ok(usage_csv(&rows)),
        ReportFormat::Table => Ok(usage_table(&rows)),
    }
}

fn usage_csv(rows: &[UsageRow]) -> String {
    let mut out = String::from("tenant");
    for name in TenantUsage::NAMES {
        out.push(',');
        out.push_str(name);
    }
    out.push('\n');
    for row in rows {
        out.push_str(&csv_field(&row.tenant));
        for value in row.usage.counters() {
            let _ = write!(out, ",{value}");
        }
        out.push('\n');
    }
    out
}

/// RFC 4180 quoting. Tenant names cannot need it today, but the database outlives any
/// naming rule.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// The counter whose table column shows seconds rather than the stored microseconds.
const FPM_TIME: &str = "fpm_time_us";

/// A counter's table heading: `REQUESTS`, `FPM_SECONDS`, `2XX`.
fn table_heading(counter: &str) -> String {
    if counter == FPM_TIME {
        return "FPM_SECONDS".to_owned();
    }
    counter
        .strip_prefix("status_")
        .unwrap_or(counter)
        .to_ascii_uppercase()
}

fn usage_table(rows: &[UsageRow]) -> String {
    if rows.is_empty() {
        return "no usage recorded\n".to_owned();
    }
    let line = |name: &str, usage: &TenantUsage| {
        let counters = TenantUsage::NAMES.iter().zip(usage.counters());
        std::iter::once(name.to_owned())
            .chain(counters.map(|(counter, value)| {
                if *counter == FPM_TIME {
                    format!("{:.3}", value as f64 / 1e6)
                } else {
                    value.to_string()
                }
            }))
            .collect()
    };
    let mut table: Vec<Vec<String>> = rows.iter().map(|r| line(&r.tenant, &r.usage)).collect();
    if rows.len() > 1 {
        let mut total = TenantUsage::default();
        for row in rows {
            total.merge(&row.usage);
        }
        table.push(line("TOTAL", &total));
    }
    let headings: Vec<String> = TenantUsage::NAMES.map(table_heading).into();
    let columns: Vec<(&str, Align)> = std::iter::once(("TENANT", Align::Left))
        .chain(headings.iter().map(|h| (h.as_str(), Align::Right)))
        .collect();
    render_table(&columns, table)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::cli::tests::CONFIG;
    use crate::config::edit::tests::scratch;

    fn record_usage(dir: &Path) {
        let store = UsageStore::open(dir.join("usage.db")).unwrap();
        let usage = |requests, fpm_time_us| TenantUsage {
            requests,
            fpm_time_us,
            bytes_in: requests * 10,
            bytes_out: requests * 1000,
            status_2xx: requests,
            ..TenantUsage::default()
        };
        let day = parse_since("2024-05-01").unwrap();
        let counts = |entries: &[(&str, TenantUsage)]| -> HashMap<Arc<str>, TenantUsage> {
            entries.iter().map(|(t, u)| (Arc::from(*t), *u)).collect()
        };
        store
            .flush(
                day,
                &counts(&[("centro1", usage(5, 1_500_000)), ("gone", usage(1, 0))]),
            )
            .unwrap();
        store
            .flush(day + 86_400, &counts(&[("centro1", usage(2, 250_000))]))
            .unwrap();
    }

    #[test]
    fn usage_reports_as_table_json_and_csv() {
        let (dir, path) = scratch(CONFIG);
        record_usage(dir.path());
        let table = usage_report(&path, None, None, ReportFormat::Table).unwrap();
        assert_eq!(
            table,
            "TENANT   REQUESTS  FPM_SECONDS  BYTES_IN  BYTES_OUT  1XX  2XX  3XX  4XX  5XX  CACHE_HITS  CACHE_STALE  CACHE_MISSES  CACHE_BYTES_OUT\n\
             centro1         7        1.750        70       7000    0    7    0    0    0           0            0             0                0\n\
             gone            1        0.000        10       1000    0    1    0    0    0           0            0             0                0\n\
             TOTAL           8        1.750        80       8000    0    8    0    0    0           0            0             0                0\n"
        );
        let csv = usage_report(&path, Some("centro1"), None, ReportFormat::Csv).unwrap();
        assert_eq!(
            csv,
            "tenant,requests,fpm_time_us,bytes_in,bytes_out,status_1xx,status_2xx,status_3xx,status_4xx,status_5xx,cache_hits,cache_stale,cache_misses,cache_bytes_out\n\
             centro1,7,1750000,70,7000,0,7,0,0,0,0,0,0,0\n"
        );
        let json = usage_report(&path, None, Some("2024-05-02"), ReportFormat::Json).unwrap();
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "tenant": "centro1", "requests": 2, "fpm_time_us": 250_000, "bytes_in": 20,
                "bytes_out": 2000, "status_1xx": 0, "status_2xx": 2, "status_3xx": 0,
                "status_4xx": 0, "status_5xx": 0, "cache_hits": 0, "cache_stale": 0,
                "cache_misses": 0, "cache_bytes_out": 0
            }])
        );
        let none = usage_report(&path, Some("nobody"), None, ReportFormat::Table).unwrap();
        assert_eq!(none, "no usage recorded\n");
    }

    #[test]
    fn usage_needs_metering_on_and_a_database() {
        let (_dir, path) = scratch(&CONFIG.replace("[usage]\ndatabase = \"usage.db\"\n", ""));
        let err = usage_report(&path, None, None, ReportFormat::Table).unwrap_err();
        assert!(matches!(err, CliError::MeteringOff { .. }), "{err}");
        let (_dir, path) = scratch(CONFIG);
        let err = usage_report(&path, None, None, ReportFormat::Table).unwrap_err();
        assert!(matches!(err, CliError::NoUsageDatabase { .. }), "{err}");
        let err = usage_report(&path, None, Some("May 1"), ReportFormat::Table).unwrap_err();
        assert!(matches!(err, CliError::InvalidSince { .. }), "{err}");
    }
}
