//! `gateway tenants add`: the arguments into a [`PutTenant`], applied by
//! [`tenant_ops`](crate::tenant_ops).

use std::collections::BTreeSet;
use std::path::Path;

use super::CliError;
use crate::config::TenantSettings;
use crate::tenant_ops::{self, PutMode, PutTenant};

/// Splits `--param NAME=VALUE` arguments. Errors name the argument's position only.
pub fn parse_param_args(args: &[String]) -> Result<Vec<(String, String)>, CliError> {
    args.iter()
        .enumerate()
        .map(|(index, arg)| match arg.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
            _ => Err(CliError::InvalidParam {
                position: index + 1,
            }),
        })
        .collect()
}

/// Where a new tenant's PHP runs and where its private files are (`--upstream`,
/// `--private-root`); unset, the `[defaults]` apply.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// An `[upstreams.NAME]` of the config.
    pub upstream: Option<String>,
    /// The root `X-Accel-Redirect`/`X-Sendfile` files are served from.
    pub private_root: Option<String>,
}

/// `tenants add`: adds a new tenant; fails if the name is taken or the result would be
/// an invalid config (duplicate host, reserved param name, unknown upstream, ...). In a
/// fleet (`[registry] postgres`) the tenant is created in the registry, not the file.
pub fn tenants_add(
    path: &Path,
    name: &str,
    hosts: Vec<String>,
    params: Vec<(String, String)>,
    enabled: bool,
    max_concurrency: Option<usize>,
    placement: Placement,
) -> Result<String, CliError> {
    let mut seen = BTreeSet::new();
    for (param, _) in &params {
        if !seen.insert(param.as_str()) {
            return Err(CliError::DuplicateParam {
                name: param.clone(),
            });
        }
    }
    let settings = TenantSettings {
        hosts,
        params: params.into_iter().collect(),
        enabled,
        max_concurrency,
        request_buffering: None,
        tls: None,
        compression: None,
        private_root: placement.private_root,
        upstream: placement.upstream,
        cache: None,
    };
    if let Some(conn) = super::fleet_tenants::registry_conn(path) {
        return super::fleet_tenants::add(path, &conn, name, settings);
    }
    let put = PutTenant {
        name: name.to_owned(),
        settings,
    };
    let ((), config) = tenant_ops::edit(path, |doc| {
        put.apply(doc, PutMode::CreateOnly).map(|_created| ())
    })?;
    let added = tenant_ops::show(&config, name)?.tenant;
    Ok(format!(
        "added tenant {name:?} ({}, {} params, {}) to {}\n",
        added.hosts.join(", "),
        added.params.len(),
        added.state(),
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::cli::tests::CONFIG;
    use crate::config::edit::tests::scratch;
    use crate::config::Config;
    use crate::tenant_ops::TenantOpError;

    #[test]
    fn add_writes_a_new_tenant_and_refuses_an_existing_name() {
        let (_dir, path) = scratch(CONFIG);
        let params = parse_param_args(&["DBHOST=10.0.0.3".into(), "DBPASS=a=b".into()]).unwrap();
        assert_eq!(params[1], ("DBPASS".to_owned(), "a=b".to_owned()));
        let message = tenants_add(
            &path,
            "centro3",
            vec!["Centro3.example.org".into()],
            params,
            false,
            Some(4),
            Placement::default(),
        )
        .unwrap();
        assert_eq!(
            message,
            format!(
                "added tenant \"centro3\" (centro3.example.org, 2 params, suspended) to {}\n",
                path.display()
            )
        );
        assert!(!message.contains("a=b"));
        let config = Config::load(&path).unwrap();
        let added = &config.tenants["centro3"];
        assert_eq!(added.params["DBPASS"], "a=b");
        assert_eq!((added.enabled, added.max_concurrency), (false, Some(4)));
        assert!(fs::read_to_string(&path).unwrap().starts_with(CONFIG));

        let err = tenants_add(
            &path,
            "centro1",
            vec!["x.example".into()],
            vec![],
            true,
            None,
            Placement::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, CliError::Tenant(TenantOpError::TenantExists { .. })),
            "{err}"
        );
    }

    #[test]
    fn add_refuses_a_host_another_tenant_has_and_leaves_the_file() {
        let (_dir, path) = scratch(CONFIG);
        let err = tenants_add(
            &path,
            "thief",
            vec!["centro2.example.org".into()],
            vec![],
            true,
            None,
            Placement::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("duplicate host \"centro2.example.org\""),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), CONFIG);
    }

    #[test]
    fn bad_param_arguments_are_reported_without_their_text() {
        let err = parse_param_args(&["A=1".into(), "hunter2".into()]).unwrap_err();
        assert_eq!(err.to_string(), "--param #2: expected NAME=VALUE");
        assert!(parse_param_args(&["=x".into()]).is_err());
        let (_dir, path) = scratch(CONFIG);
        let params = vec![("A".into(), "1".into()), ("A".into(), "2".into())];
        let err = tenants_add(
            &path,
            "x",
            vec!["x.example".into()],
            params,
            true,
            None,
            Placement::default(),
        )
        .unwrap_err();
        assert!(matches!(err, CliError::DuplicateParam { .. }), "{err}");
    }
}
