//! `gateway check`: validates the config and describes what it would serve; in a fleet
//! (`[registry] postgres`), with the tenants of the registry in PostgreSQL, validated as
//! every gateway will build them.

use std::fmt::Write as _;
use std::path::Path;

use super::CliError;
use crate::config::Config;
use crate::config::{AcmeChallenge, TlsSetting};
use crate::tenant::registry::Registry;

/// Validates the config at `path` and describes what it would serve. In a fleet the
/// tenants come from the registry (a registry that does not validate with the file's
/// settings is an error, as it is for the gateways, which keep their last good one).
pub fn check(path: &Path) -> Result<String, CliError> {
    let (config, fleet) = match super::fleet_tenants::registry_conn(path) {
        Some(conn) => {
            let (config, view) = super::fleet_tenants::load(path, &conn)?;
            (config, Some(view.version))
        }
        None => (Config::load(path)?, None),
    };
    let registry = Registry::build(&config)?;
    let mut out = String::new();
    let _ = writeln!(out, "config {} is valid", path.display());
    if let Some(version) = fleet {
        let _ = writeln!(
            out,
            "registry: PostgreSQL, version {version} (the tenants below are the fleet's)"
        );
    }
    let listen: Vec<String> = config
        .server
        .listen
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(out, "listen:   {}", listen.join(", "));
    let _ = writeln!(out, "upstream: {}", crate::snapshot::upstream_of(&config));
    let _ = writeln!(
        out,
        "root:     {} (PHP-FPM sees {})",
        config.fastcgi.root.display(),
        config.fastcgi.fpm_root
    );
    for (name, upstream) in &config.upstreams {
        let servers: Vec<String> = upstream
            .servers
            .iter()
            .map(|server| {
                let mut text = format!("{} ({}", server.address, server.max_connections);
                if server.weight != 1 {
                    let _ = write!(text, ", weight {}", server.weight);
                }
                if server.backup {
                    text.push_str(", backup");
                }
                text.push(')');
                text
            })
            .collect();
        let _ = writeln!(out, "upstream {name}: {}", servers.join(", "));
    }
    if let Some(admin) = config.server.admin {
        let _ = writeln!(out, "admin:    {admin}");
    }
    https_lines(&mut out, &config);
    let _ = writeln!(out, "tenants:  {}", registry.len());
    for tenant in registry.tenants() {
        let state = if tenant.enabled { "" } else { " (suspended)" };
        let _ = writeln!(out, "  {}{state}: {}", tenant.name, tenant.hosts.join(", "));
        if let Some(own) = config.tenants.get(&*tenant.name) {
            let _ = writeln!(
                out,
                "    tls: {}",
                tls_mode(&config, config.tls.setting_for(own), &tenant.hosts)
            );
        }
    }
    Ok(out)
}

/// The HTTPS listeners and the ACME CA, if any.
fn https_lines(out: &mut String, config: &Config) {
    let tls_listen: Vec<String> = config
        .server
        .tls_listen
        .iter()
        .map(ToString::to_string)
        .collect();
    if tls_listen.is_empty() {
        let _ = writeln!(out, "https:    none (no [server] tls_listen)");
    } else {
        let _ = writeln!(out, "https:    {}", tls_listen.join(", "));
    }
    if let Some(acme) = &config.tls.acme {
        let challenge = match acme.challenge {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        };
        let _ = writeln!(
            out,
            "acme:     {} ({challenge}; state in {})",
            acme.directory,
            config.tls.state_dir.display()
        );
    }
}

/// A tenant's TLS mode and the hosts it covers; wildcard hosts are named when they get
/// no certificate, since only a file certificate can cover them.
fn tls_mode(config: &Config, setting: &TlsSetting, hosts: &[String]) -> String {
    let (exact, wildcard): (Vec<&str>, Vec<&str>) = hosts
        .iter()
        .map(String::as_str)
        .partition(|h| !h.starts_with("*."));
    let mut text = match setting {
        TlsSetting::Off => "off".to_owned(),
        TlsSetting::Files { cert, key } => {
            return format!(
                "file {} + {} for {}",
                cert.display(),
                key.display(),
                hosts.join(", ")
            )
        }
        TlsSetting::Acme if config.tls.acme.is_none() => {
            "acme, but no [tls] acme_directory: no certificate is requested".to_owned()
        }
        TlsSetting::Acme if exact.is_empty() => "acme, no exact host to request".to_owned(),
        TlsSetting::Acme => format!("acme for {}", exact.join(", ")),
    };
    if !wildcard.is_empty() {
        let _ = write!(
            text,
            "; wildcard hosts ({}) need a file certificate (tls = {{ cert, key }}): \
             ACME here covers exact hosts only",
            wildcard.join(", ")
        );
    }
    text
}
