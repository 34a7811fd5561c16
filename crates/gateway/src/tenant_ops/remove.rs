//! `tenants remove NAME` and `DELETE /tenants/{name}`.

use crate::config::ConfigDocument;

use super::TenantOpError;

/// Removes tenant `name` from `doc` (with the comments above its header).
pub fn remove(doc: &mut ConfigDocument, name: &str) -> Result<(), TenantOpError> {
    if doc.remove_tenant(name) {
        Ok(())
    } else {
        Err(TenantOpError::UnknownTenant {
            path: doc.path().to_path_buf(),
            tenant: name.to_owned(),
        })
    }
}
