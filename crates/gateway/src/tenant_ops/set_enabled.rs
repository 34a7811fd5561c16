//! `tenants suspend|resume NAME` and `POST /tenants/{name}/suspend|resume`.

use crate::config::{ConfigDocument, EditError};

use super::TenantOpError;

/// Suspends (`false`) or resumes (`true`) tenant `name`. Returns whether that changed
/// anything: doing it twice is not an error.
pub fn set_enabled(
    doc: &mut ConfigDocument,
    name: &str,
    enabled: bool,
) -> Result<bool, TenantOpError> {
    doc.set_enabled(name, enabled).map_err(|err| match err {
        EditError::UnknownTenant { path, tenant } => TenantOpError::UnknownTenant { path, tenant },
        err => TenantOpError::Edit(err),
    })
}
