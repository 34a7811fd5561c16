//! `gateway check`: validates the config and describes what it would serve.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{Config, ConfigError};
use crate::tenant::registry::Registry;

/// Validates the config at `path` and describes what it would serve.
pub fn check(path: &Path) -> Result<String, ConfigError> {
    let config = Config::load(path)?;
    let registry = Registry::build(&config)?;
    let mut out = String::new();
    let _ = writeln!(out, "config {} is valid", path.display());
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
    let _ = writeln!(out, "tenants:  {}", registry.len());
    for tenant in registry.tenants() {
        let state = if tenant.enabled { "" } else { " (suspended)" };
        let _ = writeln!(out, "  {}{state}: {}", tenant.name, tenant.hosts.join(", "));
    }
    Ok(out)
}
