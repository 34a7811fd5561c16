//! The `[tls]` table and the `tls` key of a tenant (and of `[defaults]`): how each tenant
//! gets its certificate, and where the ACME state lives. Parsed here, checked against the
//! tenants by [`validate`], so a wildcard host asking for ACME or an unreadable certificate
//! file is refused at load time (and by `gateway check`), naming the tenant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::error::{keys, ConfigError, KeySegment};
use crate::config::{ServerConfig, TenantConfig};

/// Where the ACME state goes when `[tls] state_dir` is not set (relative to the config).
pub const DEFAULT_STATE_DIR: &str = "tls-state";

/// How one tenant gets its certificate: `tls = "acme"`, `"off"` or `{ cert, key }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSetting", into = "RawSetting")]
pub enum TlsSetting {
    /// No certificate: the tenant's hosts are not served over HTTPS (their handshakes are
    /// refused like an unknown name's).
    Off,
    /// Certificates from the ACME CA for each exact host.
    Acme,
    /// A certificate chain and key from files (PEM), reloaded when they change. Paths as
    /// written; relative ones are resolved against the config file's directory.
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

impl TlsSetting {
    /// The setting as a TOML value, for the config editor (admin API, CLI).
    pub fn toml_value(&self) -> toml_edit::Value {
        match self {
            Self::Off => "off".into(),
            Self::Acme => "acme".into(),
            Self::Files { cert, key } => {
                let mut table = toml_edit::InlineTable::new();
                table.insert("cert", cert.display().to_string().into());
                table.insert("key", key.display().to_string().into());
                toml_edit::Value::InlineTable(table)
            }
        }
    }
}

/// The setting as TOML spells it.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawSetting {
    Word(String),
    Files { cert: PathBuf, key: PathBuf },
}

impl TryFrom<RawSetting> for TlsSetting {
    type Error = String;

    fn try_from(raw: RawSetting) -> Result<Self, String> {
        match raw {
            RawSetting::Word(word) => match word.as_str() {
                "acme" => Ok(Self::Acme),
                "off" => Ok(Self::Off),
                other => Err(format!(
                    "tls must be \"acme\", \"off\" or {{ cert = \"...\", key = \"...\" }}, not {other:?}"
                )),
            },
            RawSetting::Files { cert, key } => Ok(Self::Files { cert, key }),
        }
    }
}

impl From<TlsSetting> for RawSetting {
    fn from(setting: TlsSetting) -> Self {
        match setting {
            TlsSetting::Off => Self::Word("off".into()),
            TlsSetting::Acme => Self::Word("acme".into()),
            TlsSetting::Files { cert, key } => Self::Files { cert, key },
        }
    }
}

/// Which ACME challenge proves control of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcmeChallenge {
    /// TLS-ALPN-01 (RFC 8737): answered on the TLS listener (port 443).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// HTTP-01: answered on the plain listener (port 80) under
    /// `/.well-known/acme-challenge/`.
    #[serde(rename = "http-01")]
    Http01,
}

/// The validated ACME settings; present only when `acme_directory` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The CA's directory URL.
    pub directory: String,
    /// Contact address for the account (`mailto:` added).
    pub email: Option<String>,
    /// The challenge type used for every order.
    pub challenge: AcmeChallenge,
    /// An extra root certificate (PEM) trusted when talking to the CA, for private CAs and
    /// tests; resolved against the config file's directory.
    pub ca_root: Option<PathBuf>,
}

/// The validated `[tls]` table plus `[defaults] tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// ACME account, certificates and keys; resolved against the config file's directory.
    pub state_dir: PathBuf,
    /// Automatic certificates; off when `None`.
    pub acme: Option<AcmeConfig>,
    /// The tenant whose certificate SNI-less clients get; they are refused when `None`.
    pub default_tenant: Option<String>,
    /// `[defaults] tls`: the setting of tenants that have none of their own.
    pub default_setting: Option<TlsSetting>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            acme: None,
            default_tenant: None,
            default_setting: None,
        }
    }
}

static ACME: TlsSetting = TlsSetting::Acme;
static OFF: TlsSetting = TlsSetting::Off;

impl TlsConfig {
    /// The setting in force for `tenant`: its own, else `[defaults] tls`, else `"acme"`
    /// when an ACME directory is configured (as Caddy does), else `"off"`.
    pub fn setting_for<'a>(&'a self, tenant: &'a TenantConfig) -> &'a TlsSetting {
        match (&tenant.tls, &self.default_setting, &self.acme) {
            (Some(own), _, _) => own,
            (None, Some(default), _) => default,
            (None, None, Some(_)) => &ACME,
            (None, None, None) => &OFF,
        }
    }
}

/// `[tls]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    state_dir: Option<PathBuf>,
    acme_directory: Option<String>,
    acme_email: Option<String>,
    acme_challenge: Option<AcmeChallenge>,
    acme_ca_root: Option<PathBuf>,
    default_tenant: Option<String>,
}

/// Checks `[tls]` and every tenant's `tls` against each other and the files they name.
pub(crate) fn validate(
    raw: RawTls,
    default_setting: Option<TlsSetting>,
    server: &ServerConfig,
    tenants: &BTreeMap<String, TenantConfig>,
    base_dir: &Path,
) -> Result<TlsConfig, ConfigError> {
    let acme = match raw.acme_directory {
        None => None,
        Some(directory) => {
            if !(directory.starts_with("https://") || directory.starts_with("http://")) {
                return Err(ConfigError::invalid(
                    "tls.acme_directory",
                    format!("{directory:?} is not an http(s) URL"),
                )
                .at(keys(&["tls", "acme_directory"])));
            }
            let ca_root = match raw.acme_ca_root {
                None => None,
                Some(path) => {
                    let path = base_dir.join(path);
                    std::fs::metadata(&path).map_err(|err| {
                        ConfigError::io(&path, err).at(keys(&["tls", "acme_ca_root"]))
                    })?;
                    Some(path)
                }
            };
            Some(AcmeConfig {
                directory,
                email: raw.acme_email.filter(|email| !email.is_empty()),
                challenge: raw.acme_challenge.unwrap_or(AcmeChallenge::TlsAlpn01),
                ca_root,
            })
        }
    };
    if let Some(name) = &raw.default_tenant {
        if !tenants.contains_key(name) {
            return Err(ConfigError::invalid(
                "tls.default_tenant",
                format!("there is no tenant {name:?}"),
            )
            .at(keys(&["tls", "default_tenant"])));
        }
    }
    let config = TlsConfig {
        state_dir: base_dir.join(raw.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into())),
        acme,
        default_tenant: raw.default_tenant,
        default_setting,
    };
    for (name, tenant) in tenants {
        let at = || {
            [
                KeySegment::Key("tenants".into()),
                KeySegment::Key(name.clone()),
                KeySegment::Key("tls".into()),
            ]
        };
        match config.setting_for(tenant) {
            TlsSetting::Off => {}
            TlsSetting::Acme => {
                if config.acme.is_none() && !server.tls_listen.is_empty() {
                    return Err(ConfigError::invalid(
                        "tls",
                        "tls = \"acme\" needs [tls] acme_directory",
                    )
                    .for_tenant(name)
                    .at(at()));
                }
                if let Some(wildcard) = tenant.hosts.iter().find(|h| h.starts_with("*.")) {
                    if config.acme.is_some() {
                        return Err(ConfigError::invalid(
                            "tls",
                            format!(
                                "wildcard host {wildcard:?} needs a file certificate (tls = {{ cert = \"...\", key = \"...\" }}): \
                                 ACME here covers exact hosts only (wildcards need DNS-01)"
                            ),
                        )
                        .for_tenant(name)
                        .at(at()));
                    }
                }
            }
            TlsSetting::Files { cert, key } => {
                crate::tls::certs::load_pair(&base_dir.join(cert), &base_dir.join(key)).map_err(
                    |err| {
                        ConfigError::invalid("tls", err.to_string())
                            .for_tenant(name)
                            .at(at())
                    },
                )?;
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(toml_value: &str) -> Result<TlsSetting, String> {
        #[derive(Deserialize)]
        struct Holder {
            tls: TlsSetting,
        }
        toml::from_str::<Holder>(&format!("tls = {toml_value}"))
            .map(|h| h.tls)
            .map_err(|err| err.to_string())
    }

    #[test]
    fn tls_is_acme_off_or_a_pair_of_files() {
        assert_eq!(setting("\"acme\""), Ok(TlsSetting::Acme));
        assert_eq!(setting("\"off\""), Ok(TlsSetting::Off));
        assert_eq!(
            setting("{ cert = \"c.pem\", key = \"k.pem\" }"),
            Ok(TlsSetting::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        assert!(setting("\"letsencrypt\"")
            .unwrap_err()
            .contains("\"acme\", \"off\""));
        assert!(setting("{ cert = \"c.pem\" }").is_err());
    }

    #[test]
    fn a_tenant_without_tls_takes_the_default_then_acme_when_a_ca_is_configured() {
        let mut config = TlsConfig::default();
        let tenant = TenantConfig::default();
        assert_eq!(config.setting_for(&tenant), &TlsSetting::Off);
        config.acme = Some(AcmeConfig {
            directory: "https://ca.example/dir".into(),
            email: None,
            challenge: AcmeChallenge::TlsAlpn01,
            ca_root: None,
        });
        assert_eq!(config.setting_for(&tenant), &TlsSetting::Acme);
        config.default_setting = Some(TlsSetting::Off);
        assert_eq!(config.setting_for(&tenant), &TlsSetting::Off);
        let own = TenantConfig {
            tls: Some(TlsSetting::Acme),
            ..TenantConfig::default()
        };
        assert_eq!(config.setting_for(&own), &TlsSetting::Acme);
    }

    #[test]
    fn the_config_editor_writes_reads_and_removes_a_tenants_tls() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("a.crt"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("a.key"), key.serialize_pem()).unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"127.0.0.1:8080\"\n\n[fastcgi]\nupstream = \"127.0.0.1:9000\"\nroot = \"app\"\n\n[tenants.a]\nhosts = [\"a.example\"]\n",
        )
        .unwrap();
        let mut tenant = crate::config::TenantSettings {
            hosts: vec!["a.example".into()],
            tls: Some(TlsSetting::Files {
                cert: "a.crt".into(),
                key: "a.key".into(),
            }),
            ..crate::config::TenantSettings::default()
        };
        for tls in [
            Some(TlsSetting::Files {
                cert: "a.crt".into(),
                key: "a.key".into(),
            }),
            Some(TlsSetting::Off),
            None,
        ] {
            tenant.tls = tls;
            let mut doc = crate::config::ConfigDocument::load(&path).unwrap();
            doc.set_tenant("a", &tenant).unwrap();
            let config = doc.save().unwrap();
            assert_eq!(config.tenants["a"].tls, tenant.tls);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("tls"), "{text}");
    }
}
