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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::edit::tests::scratch;

    const FILE: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[fastcgi]\nupstream = \"127.0.0.1:9000\"\nroot = \"app\"\n\n[tenants.a]\nhosts = [\"a.example\"]\nparams = { DBPASS = \"hunter2\" }\n";

    fn put(name: &str, params: &[(&str, &str)]) -> PutTenant {
        PutTenant {
            name: name.to_owned(),
            settings: TenantSettings {
                hosts: vec![format!("{name}.example")],
                params: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..TenantSettings::default()
            },
        }
    }

    #[test]
    fn a_masked_secret_keeps_the_value_in_service_and_needs_one() {
        let (_dir, path) = scratch(FILE);
        let served = Config::load(&path).unwrap();
        let mut same = put("a", &[("DBPASS", MASK), ("DBHOST", MASK)]);
        same.keep_masked_secrets(&served).unwrap();
        assert_eq!(same.settings.params["DBPASS"], "hunter2");
        // Only secret-looking names are masked, so `***` elsewhere is a value.
        assert_eq!(same.settings.params["DBHOST"], MASK);

        let mut new = put("b", &[("DBPASS", MASK)]);
        let err = new.keep_masked_secrets(&served).unwrap_err();
        assert!(
            matches!(err, TenantOpError::MaskWithoutValue { .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn create_only_refuses_a_taken_name_and_create_or_replace_reports_which() {
        let (_dir, path) = scratch(FILE);
        let mut doc = ConfigDocument::load(&path).unwrap();
        let err = put("a", &[])
            .apply(&mut doc, PutMode::CreateOnly)
            .unwrap_err();
        assert!(matches!(err, TenantOpError::TenantExists { .. }), "{err}");
        assert!(!put("a", &[])
            .apply(&mut doc, PutMode::CreateOrReplace)
            .unwrap());
        assert!(put("b", &[]).apply(&mut doc, PutMode::CreateOnly).unwrap());
        let config = doc.save().unwrap();
        assert!(config.tenants["a"].params.is_empty());
        assert_eq!(config.tenants["b"].hosts, ["b.example"]);
    }
}
