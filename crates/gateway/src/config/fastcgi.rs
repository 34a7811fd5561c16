//! The `[fastcgi]` table: which PHP-FPM pool to talk to and where the PHP code lives.

use std::fmt;
use std::fs;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::{keys, ConfigError};
use super::server::to_usize;
use super::units::{ByteSize, HumanDuration};

/// Default directory index and front controller.
pub const DEFAULT_INDEX: &str = "index.php";
/// Default bound on pooled PHP-FPM connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;
/// Default time allowed to connect to PHP-FPM.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time allowed between reads from PHP-FPM.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default lifetime of an idle pooled connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit on the CGI response head PHP sends.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 << 10;

/// Where PHP-FPM listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// A TCP address; `host` is an IP or a name to resolve at connect time (so a
    /// container name like `php-fpm` works). IPv6 literals are stored without brackets.
    Tcp {
        /// IP literal or host name.
        host: String,
        /// TCP port, never 0.
        port: u16,
    },
    /// A Unix socket path, resolved against the config file's directory.
    Unix(PathBuf),
}

impl Upstream {
    /// Parses `host:port`, `[v6]:port` or `unix:PATH`; relative socket paths are
    /// resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(
                    "unix: needs a socket path, like \"unix:/run/php/php-fpm.sock\"".into(),
                );
            }
            return Ok(Self::Unix(base_dir.join(path)));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or_else(|| format!("{text:?}: expected \"[v6 address]:port\""))?;
            v6.parse::<Ipv6Addr>()
                .map_err(|_| format!("{text:?}: {v6:?} is not an IPv6 address"))?;
            (v6, port)
        } else {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or_else(|| format!("{text:?}: expected \"host:port\" or \"unix:PATH\""))?;
            if host.contains(':') {
                return Err(format!(
                    "{text:?}: write IPv6 addresses in brackets, \"[::1]:9000\""
                ));
            }
            let valid_name = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            if !valid_name {
                return Err(format!(
                    "{text:?}: {host:?} is not a host name or IP address"
                ));
            }
            (host, port)
        };
        let port = match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("{text:?}: {port:?} is not a port (1-65535)")),
        };
        Ok(Self::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "{host}:{port}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The validated `[fastcgi]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastCgiConfig {
    /// The PHP-FPM pool shared by every tenant.
    pub upstream: Upstream,
    /// The shared PHP code on this machine: an absolute path to an existing directory, as
    /// configured (not canonicalized, so a `current -> releases/N` symlink swap takes
    /// effect without a reload). Static files and script existence are checked here.
    pub root: PathBuf,
    /// The same code as PHP-FPM sees it (it may run in a container with another mount
    /// point); used for `SCRIPT_FILENAME` and `DOCUMENT_ROOT`. Absolute, without a trailing
    /// `/` (except for `/` itself), so `fpm_root + script_name` is a path.
    pub fpm_root: String,
    /// Directory index and front controller (`index.php`): a plain file name ending in
    /// `.php`.
    pub index: String,
    /// Bound on pooled PHP-FPM connections, at least 1.
    pub max_connections: usize,
    /// Time allowed to connect to PHP-FPM.
    pub connect_timeout: Duration,
    /// Time allowed between reads from PHP-FPM.
    pub read_timeout: Duration,
    /// Lifetime of an idle pooled connection.
    pub idle_timeout: Duration,
    /// Limit on the CGI response head (502 beyond).
    pub max_head_bytes: usize,
}

/// `[fastcgi]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFastCgi {
    upstream: String,
    root: PathBuf,
    fpm_root: Option<String>,
    index: Option<String>,
    max_connections: Option<usize>,
    connect_timeout: Option<HumanDuration>,
    read_timeout: Option<HumanDuration>,
    idle_timeout: Option<HumanDuration>,
    max_head_bytes: Option<ByteSize>,
}

impl RawFastCgi {
    /// Validates the table; relative paths are resolved against `base_dir`.
    pub(crate) fn validate(self, base_dir: &Path) -> Result<FastCgiConfig, ConfigError> {
        let upstream = Upstream::parse(&self.upstream, base_dir).map_err(|reason| {
            ConfigError::invalid("fastcgi.upstream", reason).at(keys(&["fastcgi", "upstream"]))
        })?;

        let root = base_dir.join(&self.root);
        let root_at = keys(&["fastcgi", "root"]);
        match fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ConfigError::invalid(
                    "fastcgi.root",
                    format!("{} is not a directory", root.display()),
                )
                .at(root_at))
            }
            Err(err) => return Err(ConfigError::io(&root, err).at(root_at)),
        }

        let fpm_root = match self.fpm_root {
            Some(fpm_root) => fpm_root,
            None => root
                .to_str()
                .ok_or_else(|| {
                    ConfigError::invalid(
                        "fastcgi.root",
                        "not valid UTF-8; set fpm_root to the path PHP-FPM uses",
                    )
                    .at(root_at.clone())
                })?
                .to_owned(),
        };
        let fpm_root = normalize_fpm_root(&fpm_root).map_err(|reason| {
            ConfigError::invalid("fastcgi.fpm_root", reason).at(keys(&["fastcgi", "fpm_root"]))
        })?;

        let index = self.index.unwrap_or_else(|| DEFAULT_INDEX.to_owned());
        let index_ok = index.len() > ".php".len()
            && !index.starts_with('.')
            && !index.contains(['/', '\\', '\0'])
            && index.as_bytes()[index.len() - 4..].eq_ignore_ascii_case(b".php");
        if !index_ok {
            return Err(ConfigError::invalid(
                "fastcgi.index",
                format!("{index:?} must be a file name ending in .php, like \"index.php\""),
            )
            .at(keys(&["fastcgi", "index"])));
        }

        let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(
                ConfigError::invalid("fastcgi.max_connections", "must be at least 1")
                    .at(keys(&["fastcgi", "max_connections"])),
            );
        }

        Ok(FastCgiConfig {
            upstream,
            root,
            fpm_root,
            index,
            max_connections,
            connect_timeout: self
                .connect_timeout
                .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0),
            read_timeout: self.read_timeout.map_or(DEFAULT_READ_TIMEOUT, |d| d.0),
            idle_timeout: self.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0),
            max_head_bytes: to_usize(
                self.max_head_bytes,
                DEFAULT_MAX_HEAD_BYTES,
                "fastcgi.max_head_bytes",
            )?,
        })
    }
}

/// Checks `fpm_root` is absolute and drops trailing slashes, so that appending a script
/// name (`/x.php`) never produces `//`.
fn normalize_fpm_root(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must be an absolute path"));
    }
    if path.bytes().any(|b| b.is_ascii_control()) {
        return Err("contains a control character".into());
    }
    let trimmed = path.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_parses_tcp_v6_and_unix_forms() {
        let base = Path::new("/etc/gw");
        assert_eq!(
            Upstream::parse("127.0.0.1:9000", base),
            Ok(Upstream::Tcp {
                host: "127.0.0.1".into(),
                port: 9000
            })
        );
        assert_eq!(
            Upstream::parse("php-fpm:9000", base),
            Ok(Upstream::Tcp {
                host: "php-fpm".into(),
                port: 9000
            })
        );
        let v6 = Upstream::parse("[::1]:9000", base).unwrap();
        assert_eq!(
            v6,
            Upstream::Tcp {
                host: "::1".into(),
                port: 9000
            }
        );
        assert_eq!(v6.to_string(), "[::1]:9000");
        assert_eq!(
            Upstream::parse("unix:/run/php/fpm.sock", base),
            Ok(Upstream::Unix("/run/php/fpm.sock".into()))
        );
        assert_eq!(
            Upstream::parse("unix:fpm.sock", base),
            Ok(Upstream::Unix("/etc/gw/fpm.sock".into()))
        );
    }

    #[test]
    fn upstream_rejects_malformed_addresses() {
        let base = Path::new("/");
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            ":9000",
            "::1:9000",
            "[::1]9000",
            "[nope]:9000",
            "unix:",
            "a b:9000",
            "http://x:9000",
        ] {
            assert!(Upstream::parse(bad, base).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fpm_root_must_be_absolute_and_loses_trailing_slashes() {
        assert_eq!(
            normalize_fpm_root("/var/www/html/"),
            Ok("/var/www/html".into())
        );
        assert_eq!(normalize_fpm_root("/"), Ok("/".into()));
        assert!(normalize_fpm_root("var/www").is_err());
        assert!(normalize_fpm_root("/var/\nwww").is_err());
    }

    fn raw(text: &str) -> RawFastCgi {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn root_must_be_an_existing_directory_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("app")).unwrap();
        fs::write(dir.path().join("file"), "").unwrap();
        let ok = raw("upstream = \"127.0.0.1:9000\"\nroot = \"app\"")
            .validate(dir.path())
            .unwrap();
        assert_eq!(ok.root, dir.path().join("app"));
        assert_eq!(ok.fpm_root, dir.path().join("app").to_str().unwrap());
        assert_eq!(ok.index, "index.php");
        assert_eq!(ok.max_connections, 8);
        let err = raw("upstream = \"127.0.0.1:9000\"\nroot = \"missing\"")
            .validate(dir.path())
            .unwrap_err();
        assert!(err.is_io());
        assert!(raw("upstream = \"127.0.0.1:9000\"\nroot = \"file\"")
            .validate(dir.path())
            .is_err());
    }

    #[test]
    fn index_must_be_a_php_file_name_and_pool_non_empty() {
        let dir = tempfile::tempdir().unwrap();
        let base = "upstream = \"127.0.0.1:9000\"\nroot = \".\"\n";
        for bad in ["index.html", "a/index.php", ".php", ".x.php"] {
            assert!(
                raw(&format!("{base}index = {bad:?}"))
                    .validate(dir.path())
                    .is_err(),
                "{bad}"
            );
        }
        assert!(raw(&format!("{base}index = \"app.PHP\""))
            .validate(dir.path())
            .is_ok());
        assert!(raw(&format!("{base}max_connections = 0"))
            .validate(dir.path())
            .is_err());
    }
}
