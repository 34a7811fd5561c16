//! `gateway tenants remove|suspend|resume NAME`: edits of one tenant by name, applied
//! by [`tenant_ops`](crate::tenant_ops).

use std::path::Path;

use super::CliError;
use crate::tenant_ops;

/// `tenants remove NAME`.
pub fn tenants_remove(path: &Path, name: &str) -> Result<String, CliError> {
    tenant_ops::edit(path, |doc| tenant_ops::remove(doc, name))?;
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
        assert!(matches!(
            err,
            CliError::Tenant(TenantOpError::UnknownTenant { .. })
        ));
        let err = tenants_resume(&path, "nobody").unwrap_err();
        assert!(err.to_string().contains("no tenant \"nobody\""), "{err}");
    }
}
