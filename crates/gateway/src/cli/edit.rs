//! `gateway tenants remove|suspend|resume NAME`: edits of one tenant by name, applied
//! by [`tenant_ops`](crate::tenant_ops) to the file, or in a fleet to the registry in
//! PostgreSQL (`fleet_tenants.rs`), where `--if-match VERSION` makes the edit happen only
//! if the tenant is still at that version.

use std::path::Path;

use super::{fleet_tenants, CliError};
use crate::tenant_ops;

/// `tenants remove NAME [--if-match VERSION]`.
pub fn tenants_remove(path: &Path, name: &str, if_match: Option<i64>) -> Result<String, CliError> {
    if let Some(conn) = fleet_tenants::registry_conn(path) {
        return fleet_tenants::remove(&conn, name, if_match);
    }
    file_only(path, if_match)?;
    tenant_ops::edit(path, |doc| tenant_ops::remove(doc, name))?;
    Ok(format!("removed tenant {name:?} from {}\n", path.display()))
}

/// `tenants suspend NAME [--if-match VERSION]`: its hosts keep answering, with the
/// suspended page.
pub fn tenants_suspend(path: &Path, name: &str, if_match: Option<i64>) -> Result<String, CliError> {
    set_enabled(path, name, false, if_match)
}

/// `tenants resume NAME [--if-match VERSION]`.
pub fn tenants_resume(path: &Path, name: &str, if_match: Option<i64>) -> Result<String, CliError> {
    set_enabled(path, name, true, if_match)
}

/// `--if-match` names a registry version: refused for a tenant in the file.
fn file_only(path: &Path, if_match: Option<i64>) -> Result<(), CliError> {
    match if_match {
        Some(_) => Err(CliError::IfMatchWithoutRegistry {
            path: path.to_path_buf(),
        }),
        None => Ok(()),
    }
}

fn set_enabled(
    path: &Path,
    name: &str,
    enabled: bool,
    if_match: Option<i64>,
) -> Result<String, CliError> {
    if let Some(conn) = fleet_tenants::registry_conn(path) {
        return fleet_tenants::set_enabled(&conn, name, enabled, if_match);
    }
    file_only(path, if_match)?;
    let (changed, _) = tenant_ops::edit(path, |doc| tenant_ops::set_enabled(doc, name, enabled))?;
    if !changed {
        let state = if enabled { "enabled" } else { "suspended" };
        return Ok(format!(
            "tenant {name:?} is already {state}; nothing to do\n"
        ));
    }
    let verb = if enabled { "resumed" } else { "suspended" };
    Ok(format!("{verb} tenant {name:?} in {}\n", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::CONFIG;
    use crate::config::edit::tests::scratch;
    use crate::config::Config;
    use crate::tenant_ops::TenantOpError;

    #[test]
    fn remove_suspend_and_resume_edit_the_file() {
        let (_dir, path) = scratch(CONFIG);
        assert!(tenants_suspend(&path, "centro1", None)
            .unwrap()
            .starts_with("suspended"));
        assert!(tenants_suspend(&path, "centro1", None)
            .unwrap()
            .contains("already suspended"));
        assert!(!Config::load(&path).unwrap().tenants["centro1"].enabled);
        assert!(tenants_resume(&path, "centro2", None)
            .unwrap()
            .starts_with("resumed"));
        assert!(Config::load(&path).unwrap().tenants["centro2"].enabled);
        tenants_remove(&path, "centro1", None).unwrap();
        assert!(!Config::load(&path).unwrap().tenants.contains_key("centro1"));
        let err = tenants_remove(&path, "centro1", None).unwrap_err();
        assert!(matches!(
            err,
            CliError::Tenant(TenantOpError::UnknownTenant { .. })
        ));
        let err = tenants_resume(&path, "nobody", None).unwrap_err();
        assert!(err.to_string().contains("no tenant \"nobody\""), "{err}");
        let err = tenants_suspend(&path, "centro2", Some(3)).unwrap_err();
        assert!(
            matches!(err, CliError::IfMatchWithoutRegistry { .. }),
            "{err}"
        );
        assert!(Config::load(&path).unwrap().tenants["centro2"].enabled);
    }
}
