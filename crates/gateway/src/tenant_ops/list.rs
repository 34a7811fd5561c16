//! `tenants list` and `GET /tenants`: every tenant, by name.

use crate::config::Config;

use super::TenantView;

/// Every tenant of `config`, sorted by name.
pub fn list(config: &Config) -> Vec<TenantView<'_>> {
    config
        .tenants
        .iter()
        .map(|(name, tenant)| TenantView::new(name, tenant))
        .collect()
}
