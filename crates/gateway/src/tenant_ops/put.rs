//! `tenants add` and `PUT /tenants/{name}`: create a tenant, or replace its settings.

use crate::config::{is_secret_param, Config, ConfigDocument, TenantSettings};

use super::{TenantOpError, MASK};

/// Whether a put may replace a tenant that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Refuse a taken name (`tenants add`).
    CreateOnly,
    /// Create or replace (`PUT`).
    CreateOrReplace,
}

/// Tenant `name` with `settings`, as sent.
#[derive(Debug)]
pub struct PutTenant {
    /// The tenant's name.
    pub name: String,
    /// Its settings, not validated yet: [`apply`](Self::apply) does.
    pub settings: TenantSettings,
}

impl PutTenant {
    /// Replaces each secret param sent as [`MASK`] with the value in `current` (the config
    /// in service), the value its reader was shown masked. A mask for a param the tenant
    /// does not have is refused: stored, it would become the password.
    pub fn keep_masked_secrets(&mut self, current: &Config) -> Result<(), TenantOpError> {
        let current = current.tenants.get(&self.name);
        for (param, value) in self.settings.params.iter_mut() {
            if value != MASK || !is_secret_param(param) {
                continue;
            }
            match current.and_then(|tenant| tenant.params.get(param)) {
                Some(kept) => value.clone_from(kept),
                None => {
                    return Err(TenantOpError::MaskWithoutValue {
                        param: param.clone(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Writes the tenant into `doc` (validated on its own first; against the others when
    /// `doc` is saved). Returns whether it was created rather than replaced.
    pub fn apply(&self, doc: &mut ConfigDocument, mode: PutMode) -> Result<bool, TenantOpError> {
        let created = !doc.contains_tenant(&self.name);
        if !created && mode == PutMode::CreateOnly {
            return Err(TenantOpError::TenantExists {
                path: doc.path().to_path_buf(),
                tenant: self.name.clone(),
            });
        }
        doc.set_tenant(&self.name, &self.settings)?;
        Ok(created)
    }
}
