//! `tenants suspend|resume NAME` and `POST /tenants/{name}/suspend|resume`.

use crate::config::ConfigDocument;

use super::TenantOpError;

/// Suspends (`false`) or resumes (`true`) tenant `name`. Returns whether that changed
/// anything: doing it twice is not an error.
pub fn set_enabled(
    doc: &mut ConfigDocument,
    name: &str,
    enabled: bool,
) -> Result<bool, TenantOpError> {
    Ok(doc.set_enabled(name, enabled)?)
}
