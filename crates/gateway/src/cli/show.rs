//! `gateway tenants show NAME`: one tenant's settings, secret param values masked (in a
//! fleet, from the registry in PostgreSQL, with the version `--if-match` takes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::{to_json, CliError};
use crate::config::{is_secret_param, private_root_for, Config};
use crate::tenant_ops::{self, TenantView};

/// One tenant in `tenants show --format json`.
#[derive(Serialize)]
struct Shown<'a> {
    state: &'static str,
    /// In a fleet: the registry version that last wrote it (for `--if-match`).
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    #[serde(flatten)]
    tenant: &'a TenantView<'a>,
    /// `[defaults.params]` the tenant inherits (those it does not override).
    default_params: &'a BTreeMap<&'a str, &'a str>,
}

/// `tenants show NAME`: one tenant's settings, with secret param values masked.
/// In a fleet (`[registry] postgres`), the registry's tenant, with its version.
pub fn tenants_show(path: &Path, name: &str, json: bool) -> Result<String, CliError> {
    if let Some(conn) = super::fleet_tenants::registry_conn(path) {
        let (config, view) = super::fleet_tenants::load(path, &conn)?;
        let version = view.tenants.get(name).map(|t| t.version);
        return render(&config, name, json, version);
    }
    let config = Config::load(path)?;
    render(&config, name, json, None)
}

/// One tenant of `config`; `version`: its registry version, in a fleet.
fn render(
    config: &Config,
    name: &str,
    json: bool,
    version: Option<i64>,
) -> Result<String, CliError> {
    let detail = tenant_ops::show(config, name)?;
    let (tenant, inherited) = (&detail.tenant, &detail.default_params);
    if json {
        return to_json(&Shown {
            state: tenant.state(),
            version,
            tenant,
            default_params: inherited,
        });
    }
    let own = &tenant.params;
    let mut out = String::new();
    let _ = writeln!(out, "name:            {name}");
    let _ = writeln!(out, "state:           {}", tenant.state());
    if let Some(version) = version {
        let _ = writeln!(out, "version:         {version}   (for --if-match)");
    }
    let _ = writeln!(out, "hosts:           {}", tenant.hosts.join(", "));
    let limit = tenant.max_concurrency.map_or_else(
        || "none (shares the whole pool)".to_owned(),
        |n| n.to_string(),
    );
    let _ = writeln!(out, "max_concurrency: {limit}");
    let private_root = match (tenant.private_root, config.default_private_root.as_deref()) {
        (Some(own), _) => Some(format!("{}", private_root_for(own, name).display())),
        (None, Some(default)) => Some(format!(
            "{}   (from [defaults])",
            private_root_for(default, name).display()
        )),
        (None, None) => None,
    };
    if let Some(root) = private_root {
        let _ = writeln!(out, "private_root:    {root}");
    }
    if let Some(upstream) = tenant.upstream {
        let _ = writeln!(out, "upstream:        {upstream}");
    }
    if let Some(offered) = tenant.effective_compression {
        let list = if offered.is_empty() {
            "off".to_owned()
        } else {
            offered
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let source = if tenant.compression.is_some() {
            ""
        } else {
            "   (inherited)"
        };
        let _ = writeln!(out, "compression:     {list}{source}");
    }
    let _ = writeln!(out, "params:");
    let width = own
        .keys()
        .chain(inherited.keys())
        .map(|k| k.len())
        .max()
        .unwrap_or(0);
    for (source, params) in [("", own), ("   (from [defaults.params])", inherited)] {
        for (key, value) in params {
            let _ = writeln!(out, "  {key:<width$} = {}{source}", quote_param(key, value));
        }
    }
    if own.is_empty() && inherited.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::CONFIG;
    use crate::config::edit::tests::scratch;
    use crate::tenant_ops::TenantOpError;

    #[test]
    fn show_names_the_private_root_own_or_from_defaults() {
        let with_root = CONFIG.replacen(
            "[tenants.",
            "[tenants.own]\nhosts = [\"own.example\"]\nprivate_root = \"/data/{tenant}\"\n\n[tenants.",
            1,
        );
        let (_dir, path) = scratch(&with_root);
        let text = tenants_show(&path, "own", false).unwrap();
        assert!(text.contains("private_root:    /data/own\n"), "{text}");
        let text = tenants_show(&path, "centro1", false).unwrap();
        assert!(!text.contains("private_root"), "{text}");
        let json = tenants_show(&path, "own", true).unwrap();
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["private_root"], "/data/{tenant}");
    }

    #[test]
    fn show_prints_the_compression_a_tenant_gets_its_own_or_inherited() {
        let with_own = CONFIG.replacen(
            "[tenants.",
            "[tenants.own]\nhosts = [\"own.example\"]\ncompression = [\"br\"]\n\n[tenants.off]\nhosts = [\"off.example\"]\ncompression = []\n\n[tenants.",
            1,
        );
        let (_dir, path) = scratch(&with_own);
        let text = tenants_show(&path, "own", false).unwrap();
        assert!(text.contains("compression:     br\n"), "{text}");
        let text = tenants_show(&path, "off", false).unwrap();
        assert!(text.contains("compression:     off\n"), "{text}");
        let text = tenants_show(&path, "centro1", false).unwrap();
        assert!(
            text.contains("compression:     zstd, br, gzip   (inherited)\n"),
            "{text}"
        );
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
        assert!(matches!(
            err,
            CliError::Tenant(TenantOpError::UnknownTenant { .. })
        ));
        assert!(
            err.to_string()
                .contains("tenants.toml: no tenant \"nobody\""),
            "{err}"
        );
    }
}
