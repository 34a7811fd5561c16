//! `gateway tenants list`: every tenant with its state, hosts and number of params (in a
//! fleet, those of the registry in PostgreSQL).

use std::path::Path;

use serde::Serialize;

use super::table::{render_table, Align};
use super::{to_json, CliError};
use crate::config::Config;
use crate::tenant_ops::{self, TenantView};

/// One tenant in `tenants list --format json`: its params counted, not shown.
#[derive(Serialize)]
struct TenantSummary<'a> {
    name: &'a str,
    state: &'static str,
    enabled: bool,
    hosts: &'a [String],
    params: usize,
    max_concurrency: Option<usize>,
}

impl<'a> From<&'a TenantView<'a>> for TenantSummary<'a> {
    fn from(view: &'a TenantView<'a>) -> Self {
        Self {
            name: view.name,
            state: view.state(),
            enabled: view.enabled,
            hosts: view.hosts,
            params: view.params.len(),
            max_concurrency: view.max_concurrency,
        }
    }
}

/// `tenants list`: every tenant with its state, hosts and number of params; in a fleet
/// (`[registry] postgres`), the registry's.
pub fn tenants_list(path: &Path, json: bool) -> Result<String, CliError> {
    if let Some(conn) = super::fleet_tenants::registry_conn(path) {
        let (config, _) = super::fleet_tenants::load(path, &conn)?;
        return render(&config, json, "the fleet registry");
    }
    let config = Config::load(path)?;
    render(&config, json, &path.display().to_string())
}

/// The list of `config`'s tenants; `source` names where they come from.
fn render(config: &Config, json: bool, source: &str) -> Result<String, CliError> {
    let tenants = tenant_ops::list(config);
    if json {
        let summaries: Vec<TenantSummary<'_>> = tenants.iter().map(TenantSummary::from).collect();
        return to_json(&summaries);
    }
    if tenants.is_empty() {
        return Ok(format!("no tenants in {source}\n"));
    }
    let rows = tenants
        .iter()
        .map(|tenant| {
            vec![
                tenant.name.to_owned(),
                tenant.state().to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::CONFIG;
    use crate::config::edit::tests::scratch;

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
}
