//! Command-line actions that do not run the server: `check`, `tenants list|show|add|
//! remove|suspend|resume`, and `usage`. Each returns the text to print, so `main.rs` only
//! parses arguments and prints, and tests call these directly.
//!
//! Output is an aligned table for people, or JSON (and CSV for usage) for scripts. Param
//! values that look secret ([`is_secret_param`]) are shown as `***` in every format.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{
    displayed_param_value, is_secret_param, Config, ConfigDocument, ConfigError, EditError,
    TenantConfig,
};
use crate::tenant::registry::Registry;
use crate::usage_store::{UsageRow, UsageStore, UsageStoreError};

/// Validates the config at `path` and describes what it would serve.
pub fn check(path: &Path) -> Result<String, ConfigError> {
    let config = Config::load(path)?;
    let registry = Registry::build(&config)?;
    let mut out = String::new();
    let _ = writeln!(out, "config {} is valid", path.display());
    let listen: Vec<String> = config
        .server
        .listen
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(out, "listen:   {}", listen.join(", "));
    let _ = writeln!(out, "upstream: {}", crate::snapshot::upstream_of(&config));
    let _ = writeln!(
        out,
        "root:     {} (PHP-FPM sees {})",
        config.fastcgi.root.display(),
        config.fastcgi.fpm_root
    );
    if let Some(admin) = config.server.admin {
        let _ = writeln!(out, "admin:    {admin}");
    }
    let _ = writeln!(out, "tenants:  {}", registry.len());
    for tenant in registry.tenants() {
        let state = if tenant.enabled { "" } else { " (suspended)" };
        let _ = writeln!(out, "  {}{state}: {}", tenant.name, tenant.hosts.join(", "));
    }
    Ok(out)
}

/// Why a CLI action failed. Messages name the file and tenant, and never a param value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The config could not be loaded or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An edit could not be made or was refused (the file is unchanged).
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The tenant named is not in the config.
    #[error("{}: no tenant {tenant:?}", path.display())]
    UnknownTenant {
        /// The config file.
        path: PathBuf,
        /// The tenant asked for.
        tenant: String,
    },
    /// `tenants add` of a name that is taken.
    #[error("{}: tenant {tenant:?} already exists (remove it first to replace it)", path.display())]
    TenantExists {
        /// The config file.
        path: PathBuf,
        /// The tenant asked for.
        tenant: String,
    },
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
    /// Encoding the JSON output failed.
    #[error("cannot encode JSON output: {0}")]
    Json(#[from] serde_json::Error),
}

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

/// One tenant in `tenants list --format json`.
#[derive(Serialize)]
struct TenantSummary<'a> {
    name: &'a str,
    state: &'static str,
    enabled: bool,
    hosts: &'a [String],
    params: usize,
    max_concurrency: Option<usize>,
}

/// One tenant in `tenants show --format json`.
#[derive(Serialize)]
struct TenantDetail<'a> {
    name: &'a str,
    state: &'static str,
    enabled: bool,
    hosts: &'a [String],
    max_concurrency: Option<usize>,
    /// The tenant's own params, secrets masked.
    params: BTreeMap<&'a str, &'a str>,
    /// `[defaults.params]` the tenant inherits (those it does not override).
    default_params: BTreeMap<&'a str, &'a str>,
}

fn state(tenant: &TenantConfig) -> &'static str {
    if tenant.enabled {
        "enabled"
    } else {
        "suspended"
    }
}

/// `tenants list`: every tenant with its state, hosts and number of params.
pub fn tenants_list(path: &Path, json: bool) -> Result<String, CliError> {
    let config = Config::load(path)?;
    if json {
        let summaries: Vec<TenantSummary<'_>> = config
            .tenants
            .iter()
            .map(|(name, tenant)| TenantSummary {
                name,
                state: state(tenant),
                enabled: tenant.enabled,
                hosts: &tenant.hosts,
                params: tenant.params.len(),
                max_concurrency: tenant.max_concurrency,
            })
            .collect();
        return to_json(&summaries);
    }
    if config.tenants.is_empty() {
        return Ok(format!("no tenants in {}\n", path.display()));
    }
    let rows = config
        .tenants
        .iter()
        .map(|(name, tenant)| {
            vec![
                name.clone(),
                state(tenant).to_owned(),
                tenant.params.len().to_string(),
                tenant.hosts.join(", "),
            ]
        })
        .collect();
    // Hosts last: it is the long column, and nothing after it needs to line up.
    Ok(render_table(
        &[
            ("NAME", Align::Left),
            ("STATE", Align::Left),
            ("PARAMS", Align::Right),
            ("HOSTS", Align::Left),
        ],
        rows,
    ))
}

/// `tenants show NAME`: one tenant's settings, with secret param values masked.
pub fn tenants_show(path: &Path, name: &str, json: bool) -> Result<String, CliError> {
    let config = Config::load(path)?;
    let tenant = config
        .tenants
        .get(name)
        .ok_or_else(|| CliError::UnknownTenant {
            path: path.to_path_buf(),
            tenant: name.to_owned(),
        })?;
    let own = masked(tenant.params.iter());
    let inherited = masked(
        config
            .default_params
            .iter()
            .filter(|(k, _)| !tenant.params.contains_key(*k)),
    );
    if json {
        return to_json(&TenantDetail {
            name,
            state: state(tenant),
            enabled: tenant.enabled,
            hosts: &tenant.hosts,
            max_concurrency: tenant.max_concurrency,
            params: own,
            default_params: inherited,
        });
    }
    let mut out = String::new();
    let _ = writeln!(out, "name:            {name}");
    let _ = writeln!(out, "state:           {}", state(tenant));
    let _ = writeln!(out, "hosts:           {}", tenant.hosts.join(", "));
    let limit = tenant.max_concurrency.map_or_else(
        || "none (shares the whole pool)".to_owned(),
        |n| n.to_string(),
    );
    let _ = writeln!(out, "max_concurrency: {limit}");
    let _ = writeln!(out, "params:");
    let width = own
        .keys()
        .chain(inherited.keys())
        .map(|k| k.len())
        .max()
        .unwrap_or(0);
    for (source, params) in [("", &own), ("   (from [defaults.params])", &inherited)] {
        for (key, value) in params {
            let _ = writeln!(out, "  {key:<width$} = {}{source}", quote_param(key, value));
        }
    }
    if own.is_empty() && inherited.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    Ok(out)
}

/// Params by name, with secret values replaced by `***`.
fn masked<'a>(
    params: impl Iterator<Item = (&'a String, &'a String)>,
) -> BTreeMap<&'a str, &'a str> {
    params
        .map(|(name, value)| (name.as_str(), displayed_param_value(name, value)))
        .collect()
}

/// A param value for the text output: quoted and escaped (values may hold newlines, as
/// `PHP_VALUE` does), except the bare `***` of a masked secret.
fn quote_param(name: &str, shown: &str) -> String {
    if is_secret_param(name) {
        shown.to_owned()
    } else {
        format!("{shown:?}")
    }
}

/// Splits `--param NAME=VALUE` arguments. Errors name the argument's position only.
pub fn parse_param_args(args: &[String]) -> Result<Vec<(String, String)>, CliError> {
    args.iter()
        .enumerate()
        .map(|(index, arg)| match arg.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
            _ => Err(CliError::InvalidParam {
                position: index + 1,
            }),
        })
        .collect()
}

/// `tenants add`: adds a new tenant; fails if the name is taken or the result would be
/// an invalid config (duplicate host, reserved param name, ...).
pub fn tenants_add(
    path: &Path,
    name: &str,
    hosts: Vec<String>,
    params: Vec<(String, String)>,
    enabled: bool,
    max_concurrency: Option<usize>,
) -> Result<String, CliError> {
    let mut seen = BTreeSet::new();
    for (param, _) in &params {
        if !seen.insert(param.as_str()) {
            return Err(CliError::DuplicateParam {
                name: param.clone(),
            });
        }
    }
    let mut doc = ConfigDocument::load(path)?;
    if doc.contains_tenant(name) {
        return Err(CliError::TenantExists {
            path: path.to_path_buf(),
            tenant: name.to_owned(),
        });
    }
    let tenant = TenantConfig {
        hosts,
        params: params.into_iter().collect(),
        enabled,
        max_concurrency,
        ..TenantConfig::default()
    };
    doc.set_tenant(name, &tenant)?;
    let config = doc.save()?;
    let added = config.tenants.get(name).unwrap_or(&tenant);
    Ok(format!(
        "added tenant {name:?} ({}, {} params, {}) to {}\n",
        added.hosts.join(", "),
        added.params.len(),
        state(added),
        path.display()
    ))
}

/// `tenants remove NAME`.
pub fn tenants_remove(path: &Path, name: &str) -> Result<String, CliError> {
    let mut doc = ConfigDocument::load(path)?;
    if !doc.remove_tenant(name) {
        return Err(CliError::UnknownTenant {
            path: path.to_path_buf(),
            tenant: name.to_owned(),
        });
    }
    doc.save()?;
    Ok(format!("removed tenant {name:?} from {}\n", path.display()))
}

/// `tenants suspend NAME`: its hosts keep answering, with the suspended page.
pub fn tenants_suspend(path: &Path, name: &str) -> Result<String, CliError> {
    set_enabled(path, name, false)
}

/// `tenants resume NAME`.
pub fn tenants_resume(path: &Path, name: &str) -> Result<String, CliError> {
    set_enabled(path, name, true)
}

fn set_enabled(path: &Path, name: &str, enabled: bool) -> Result<String, CliError> {
    let mut doc = ConfigDocument::load(path)?;
    let verb = if enabled { "resumed" } else { "suspended" };
    if !doc.set_enabled(name, enabled)? {
        let state = if enabled { "enabled" } else { "suspended" };
        return Ok(format!(
            "tenant {name:?} is already {state}; nothing to do\n"
        ));
    }
    doc.save()?;
    Ok(format!("{verb} tenant {name:?} in {}\n", path.display()))
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

const USAGE_COLUMNS: [&str; 10] = [
    "tenant",
    "requests",
    "fpm_time_us",
    "bytes_in",
    "bytes_out",
    "status_1xx",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
];

fn usage_fields(row: &UsageRow) -> [u64; 9] {
    let u = &row.usage;
    [
        u.requests,
        u.fpm_time_us,
        u.bytes_in,
        u.bytes_out,
        u.status_1xx,
        u.status_2xx,
        u.status_3xx,
        u.status_4xx,
        u.status_5xx,
    ]
}

fn usage_csv(rows: &[UsageRow]) -> String {
    let mut out = USAGE_COLUMNS.join(",");
    out.push('\n');
    for row in rows {
        out.push_str(&csv_field(&row.tenant));
        for value in usage_fields(row) {
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

fn usage_table(rows: &[UsageRow]) -> String {
    if rows.is_empty() {
        return "no usage recorded\n".to_owned();
    }
    let line = |name: &str, u: &crate::usage::TenantUsage| {
        vec![
            name.to_owned(),
            u.requests.to_string(),
            format!("{:.3}", u.fpm_time_us as f64 / 1e6),
            u.bytes_in.to_string(),
            u.bytes_out.to_string(),
            u.status_1xx.to_string(),
            u.status_2xx.to_string(),
            u.status_3xx.to_string(),
            u.status_4xx.to_string(),
            u.status_5xx.to_string(),
        ]
    };
    let mut table: Vec<Vec<String>> = rows.iter().map(|r| line(&r.tenant, &r.usage)).collect();
    if rows.len() > 1 {
        let mut total = crate::usage::TenantUsage::default();
        for row in rows {
            total.merge(&row.usage);
        }
        table.push(line("TOTAL", &total));
    }
    let number = Align::Right;
    render_table(
        &[
            ("TENANT", Align::Left),
            ("REQUESTS", number),
            ("FPM_SECONDS", number),
            ("BYTES_IN", number),
            ("BYTES_OUT", number),
            ("1XX", number),
            ("2XX", number),
            ("3XX", number),
            ("4XX", number),
            ("5XX", number),
        ],
        table,
    )
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Columns padded to their widest cell, two spaces apart, no trailing spaces.
fn render_table(columns: &[(&str, Align)], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header = columns.iter().map(|(h, _)| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            let (width, align) = (widths[index], columns[index].1);
            if index > 0 {
                line.push_str("  ");
            }
            let _ = match align {
                Align::Left => write!(line, "{cell:<width$}"),
                Align::Right => write!(line, "{cell:>width$}"),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, CliError> {
    let mut out = serde_json::to_string_pretty(value)?;
    out.push('\n');
    Ok(out)
}

/// Parses `--since`: `YYYY-MM-DD` (midnight UTC) or an RFC 3339 date-time
/// (`2024-05-01T10:00:00Z`, `2024-05-01T12:00:00.5+02:00`), into unix seconds.
pub fn parse_since(value: &str) -> Result<i64, CliError> {
    let fail = |reason| CliError::InvalidSince {
        value: value.to_owned(),
        reason,
    };
    let bytes = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = bytes.get(range)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return Err(fail("expected a date first"));
    }
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return Err(fail("expected a date first"));
    };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(fail("no such date"));
    }
    let midnight = days_from_civil(year, month, day) * 86_400;
    if bytes.len() == 10 {
        return Ok(midnight);
    }
    if !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes.len() < 20
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return Err(fail("expected a time after the date (THH:MM:SS)"));
    }
    let (Some(hour), Some(minute), Some(second)) = (digits(11..13), digits(14..16), digits(17..19))
    else {
        return Err(fail("expected a time after the date (THH:MM:SS)"));
    };
    // 60 is a leap second; like most parsers, count it as the next second.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(fail("no such time"));
    }
    let mut rest = &value[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return Err(fail("expected digits after '.'"));
        }
        // Sub-second precision does not matter for hourly buckets.
        rest = &fraction[end..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let (Some(h), Some(m)) = (two(*h1, *h2), two(*m1, *m2)) else {
                return Err(fail("bad UTC offset"));
            };
            if h > 23 || m > 59 {
                return Err(fail("bad UTC offset"));
            }
            let seconds = h * 3600 + m * 60;
            if *sign == b'+' {
                seconds
            } else {
                -seconds
            }
        }
        _ => return Err(fail("expected Z or a UTC offset (+02:00) after the time")),
    };
    Ok(midnight + hour * 3600 + minute * 60 + second - offset)
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs;
    use std::sync::Arc;

    use super::*;
    use crate::config::edit::tests::scratch;
    use crate::usage::TenantUsage;

    const CONFIG: &str = r#"[server]
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

    #[test]
    fn list_prints_an_aligned_table_and_json() {
        let (_dir, path) = scratch(CONFIG);
        let table = tenants_list(&path, false).unwrap();
        assert_eq!(
            table,
            "NAME     STATE      PARAMS  HOSTS\n\
             centro1  enabled         3  centro1.example.org, *.centro1.example.org\n\
             centro2  suspended       3  centro2.example.org\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&tenants_list(&path, true).unwrap()).unwrap();
        assert_eq!(json[1]["name"], "centro2");
        assert_eq!(json[1]["state"], "suspended");
        assert_eq!(json[1]["max_concurrency"], 2);
        assert_eq!(json[0]["hosts"][1], "*.centro1.example.org");
        assert_eq!(json[0]["params"], 3);
    }

    #[test]
    fn show_masks_secret_params_in_text_and_json() {
        let (_dir, path) = scratch(CONFIG);
        let text = tenants_show(&path, "centro1", false).unwrap();
        assert!(text.contains("DBPASS    = ***\n"), "{text}");
        assert!(text.contains("DBHOST    = \"10.0.0.1\"\n"), "{text}");
        assert!(text.contains("PHP_VALUE = \"a=1\\nb=2\"\n"), "{text}");
        assert!(
            text.contains("API_TOKEN = ***   (from [defaults.params])"),
            "{text}"
        );
        assert!(text.contains("state:           enabled\n"), "{text}");
        for secret in ["secret1", "default-token"] {
            assert!(!text.contains(secret), "{text}");
        }

        let json = tenants_show(&path, "centro2", true).unwrap();
        assert!(!json.contains("secret2"), "{json}");
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["params"]["DBPASS"], "***");
        assert_eq!(json["params"]["APP_ENV"], "prod");
        // Overridden defaults are not listed as inherited.
        assert_eq!(
            json["default_params"],
            serde_json::json!({ "API_TOKEN": "***" })
        );
        assert_eq!(json["enabled"], false);

        let err = tenants_show(&path, "nobody", false).unwrap_err();
        assert!(matches!(err, CliError::UnknownTenant { .. }));
        assert!(
            err.to_string()
                .contains("tenants.toml: no tenant \"nobody\""),
            "{err}"
        );
    }

    #[test]
    fn add_writes_a_new_tenant_and_refuses_an_existing_name() {
        let (_dir, path) = scratch(CONFIG);
        let params = parse_param_args(&["DBHOST=10.0.0.3".into(), "DBPASS=a=b".into()]).unwrap();
        assert_eq!(params[1], ("DBPASS".to_owned(), "a=b".to_owned()));
        let message = tenants_add(
            &path,
            "centro3",
            vec!["Centro3.example.org".into()],
            params,
            false,
            Some(4),
        )
        .unwrap();
        assert_eq!(
            message,
            format!(
                "added tenant \"centro3\" (centro3.example.org, 2 params, suspended) to {}\n",
                path.display()
            )
        );
        assert!(!message.contains("a=b"));
        let config = Config::load(&path).unwrap();
        let added = &config.tenants["centro3"];
        assert_eq!(added.params["DBPASS"], "a=b");
        assert_eq!((added.enabled, added.max_concurrency), (false, Some(4)));
        assert!(fs::read_to_string(&path).unwrap().starts_with(CONFIG));

        let err = tenants_add(
            &path,
            "centro1",
            vec!["x.example".into()],
            vec![],
            true,
            None,
        )
        .unwrap_err();
        assert!(matches!(err, CliError::TenantExists { .. }), "{err}");
    }

    #[test]
    fn add_refuses_a_host_another_tenant_has_and_leaves_the_file() {
        let (_dir, path) = scratch(CONFIG);
        let err = tenants_add(
            &path,
            "thief",
            vec!["centro2.example.org".into()],
            vec![],
            true,
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("duplicate host \"centro2.example.org\""),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), CONFIG);
    }

    #[test]
    fn bad_param_arguments_are_reported_without_their_text() {
        let err = parse_param_args(&["A=1".into(), "hunter2".into()]).unwrap_err();
        assert_eq!(err.to_string(), "--param #2: expected NAME=VALUE");
        assert!(parse_param_args(&["=x".into()]).is_err());
        let (_dir, path) = scratch(CONFIG);
        let params = vec![("A".into(), "1".into()), ("A".into(), "2".into())];
        let err =
            tenants_add(&path, "x", vec!["x.example".into()], params, true, None).unwrap_err();
        assert!(matches!(err, CliError::DuplicateParam { .. }), "{err}");
    }

    #[test]
    fn remove_suspend_and_resume_edit_the_file() {
        let (_dir, path) = scratch(CONFIG);
        assert!(tenants_suspend(&path, "centro1")
            .unwrap()
            .starts_with("suspended"));
        assert!(tenants_suspend(&path, "centro1")
            .unwrap()
            .contains("already suspended"));
        assert!(!Config::load(&path).unwrap().tenants["centro1"].enabled);
        assert!(tenants_resume(&path, "centro2")
            .unwrap()
            .starts_with("resumed"));
        assert!(Config::load(&path).unwrap().tenants["centro2"].enabled);
        tenants_remove(&path, "centro1").unwrap();
        assert!(!Config::load(&path).unwrap().tenants.contains_key("centro1"));
        let err = tenants_remove(&path, "centro1").unwrap_err();
        assert!(matches!(err, CliError::UnknownTenant { .. }));
        let err = tenants_resume(&path, "nobody").unwrap_err();
        assert!(err.to_string().contains("no tenant \"nobody\""), "{err}");
    }

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
            "TENANT   REQUESTS  FPM_SECONDS  BYTES_IN  BYTES_OUT  1XX  2XX  3XX  4XX  5XX\n\
             centro1         7        1.750        70       7000    0    7    0    0    0\n\
             gone            1        0.000        10       1000    0    1    0    0    0\n\
             TOTAL           8        1.750        80       8000    0    8    0    0    0\n"
        );
        let csv = usage_report(&path, Some("centro1"), None, ReportFormat::Csv).unwrap();
        assert_eq!(
            csv,
            "tenant,requests,fpm_time_us,bytes_in,bytes_out,status_1xx,status_2xx,status_3xx,status_4xx,status_5xx\n\
             centro1,7,1750000,70,7000,0,7,0,0,0\n"
        );
        let json = usage_report(&path, None, Some("2024-05-02"), ReportFormat::Json).unwrap();
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "tenant": "centro1", "requests": 2, "fpm_time_us": 250_000, "bytes_in": 20,
                "bytes_out": 2000, "status_1xx": 0, "status_2xx": 2, "status_3xx": 0,
                "status_4xx": 0, "status_5xx": 0
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

    #[test]
    fn since_accepts_dates_and_rfc3339() {
        assert_eq!(parse_since("1970-01-01").unwrap(), 0);
        assert_eq!(parse_since("2024-05-01").unwrap(), 1_714_521_600);
        assert_eq!(parse_since("2024-02-29").unwrap(), 1_709_164_800);
        assert_eq!(parse_since("2024-05-01T10:30:00Z").unwrap(), 1_714_559_400);
        assert_eq!(
            parse_since("2024-05-01t10:30:00.123z").unwrap(),
            1_714_559_400
        );
        assert_eq!(
            parse_since("2024-05-01T12:30:00+02:00").unwrap(),
            1_714_559_400
        );
        assert_eq!(
            parse_since("2024-05-01T05:00:00-05:30").unwrap(),
            1_714_559_400
        );
        assert_eq!(parse_since("1969-12-31T23:00:00Z").unwrap(), -3600);
        for bad in [
            "",
            "2024-5-1",
            "2023-02-29",
            "2024-13-01",
            "2024-05-01T10:30",
            "2024-05-01T10:30:00",
            "2024-05-01T24:00:00Z",
            "2024-05-01T10:30:00+2",
            "2024-05-01T10:30:00.Z",
            "２０２４-05-01",
        ] {
            assert!(parse_since(bad).is_err(), "{bad:?} accepted");
        }
    }
}
