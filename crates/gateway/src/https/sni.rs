//! Which certificate a ClientHello gets. The tenant registry is the only source: an exact
//! host, then a wildcard host (with a file certificate), of a tenant whose `tls` is not
//! `"off"`. Anything else gets no certificate at all, never a default one that would show
//! another customer's names.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsSetting;
use crate::snapshot::{SharedState, Snapshot};
use crate::tls::TlsRuntime;

/// The outcome of looking up a server name.
#[derive(Debug)]
pub enum Choice {
    /// Serve this certificate; the connection belongs to `tenant`.
    Cert {
        /// The certificate.
        key: Arc<CertifiedKey>,
        /// The tenant whose name the client asked for.
        tenant: Arc<str>,
    },
    /// The host is an exact host of a tenant with `tls = "acme"` whose certificate is
    /// still being issued.
    Pending,
    /// No tenant serves this name over TLS (or no name was sent and there is no
    /// `default_tenant`).
    Unknown,
}

/// The certificate for server name `sni` (already lower-cased by rustls), or for an
/// SNI-less client when `sni` is `None`.
pub fn choose(runtime: &TlsRuntime, snapshot: &Snapshot, sni: Option<&str>) -> Choice {
    let config = &snapshot.config;
    let (tenant, host) = match sni {
        Some(name) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            match snapshot.registry.lookup(name) {
                Some(tenant) => (tenant, Some(name)),
                None => return Choice::Unknown,
            }
        }
        None => match config
            .tls
            .default_tenant
            .as_deref()
            .and_then(|name| snapshot.registry.tenant(name))
        {
            Some(tenant) => (tenant, None),
            None => return Choice::Unknown,
        },
    };
    let Some(tenant_config) = config.tenants.get(&*tenant.name) else {
        return Choice::Unknown;
    };
    let found = |loaded: crate::tls::LoadedCert| Choice::Cert {
        key: loaded.key,
        tenant: tenant.name.clone(),
    };
    match config.tls.setting_for(tenant_config) {
        TlsSetting::Off => Choice::Unknown,
        TlsSetting::Files { cert, key } => runtime
            .files
            .get(&config.base_dir.join(cert), &config.base_dir.join(key))
            .map_or(Choice::Unknown, found),
        TlsSetting::Acme => {
            // SNI-less: the default tenant's first exact host that has a certificate.
            let host = match host {
                Some(host) => host,
                None => {
                    return tenant
                        .hosts
                        .iter()
                        .find_map(|h| runtime.acme_cert(h))
                        .map_or(Choice::Unknown, found)
                }
            };
            if let Some(loaded) = runtime.acme_cert(host) {
                return found(loaded);
            }
            let exact = tenant.hosts.iter().any(|h| h == host);
            if exact && tenant.enabled && config.tls.acme.is_some() {
                Choice::Pending
            } else {
                Choice::Unknown
            }
        }
    }
}

/// The resolver of the TLS listeners: [`choose`] on the snapshot in service. The accept
/// path has already refused unknown names and waited for pending ones; this repeats the
/// (cheap) lookup because rustls only hands the resolver the ClientHello.
#[derive(Debug)]
pub struct SniResolver {
    state: Arc<SharedState>,
}

impl SniResolver {
    /// A resolver reading `state`'s current snapshot on each handshake.
    pub fn new(state: Arc<SharedState>) -> Self {
        Self { state }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match choose(&self.state.tls, &self.state.load(), hello.server_name()) {
            Choice::Cert { key, .. } => Some(key),
            Choice::Pending | Choice::Unknown => None,
        }
    }
}

/// The resolver for TLS-ALPN-01 validation handshakes (ALPN `acme-tls/1`): only the
/// challenge certificate of the name asked for.
#[derive(Debug)]
pub struct AlpnChallengeResolver {
    state: Arc<SharedState>,
}

impl AlpnChallengeResolver {
    /// A resolver answering from `state`'s pending TLS-ALPN-01 challenges.
    pub fn new(state: Arc<SharedState>) -> Self {
        Self { state }
    }
}

impl ResolvesServerCert for AlpnChallengeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.state.tls.alpn01_cert(hello.server_name()?)
    }
}
