//! `tenants show NAME` and `GET /tenants/{name}`: one tenant, and the defaults it
//! inherits.

use std::collections::BTreeMap;

use crate::config::Config;

use super::view::masked;
use super::{TenantOpError, TenantView};

/// One tenant with the `[defaults.params]` it inherits.
#[derive(Debug)]
pub struct TenantDetail<'a> {
    /// The tenant itself.
    pub tenant: TenantView<'a>,
    /// `[defaults.params]` it does not override, secret values masked.
    pub default_params: BTreeMap<&'a str, &'a str>,
}

/// Tenant `name` of `config`.
pub fn show<'a>(config: &'a Config, name: &str) -> Result<TenantDetail<'a>, TenantOpError> {
    let (name, tenant) =
        config
            .tenants
            .get_key_value(name)
            .ok_or_else(|| TenantOpError::UnknownTenant {
                path: config.path.clone(),
                tenant: name.to_owned(),
            })?;
    let default_params = masked(
        config
            .default_params
            .iter()
            .filter(|(param, _)| !tenant.params.contains_key(*param)),
    );
    let mut view = TenantView::new(name, tenant);
    view.effective_compression = Some(config.compression_for(tenant.compression.as_deref()));
    Ok(TenantDetail {
        tenant: view,
        default_params,
    })
}
