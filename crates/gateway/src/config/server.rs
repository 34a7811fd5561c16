//! The `[server]` table: where the gateway listens, whom it trusts, and its HTTP limits.

use std::fmt;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::error::{keys, ConfigError, KeySegment};
use super::units::{ByteSize, HumanDuration};
use crate::compression::{Encoding, DEFAULT_ENCODINGS, DEFAULT_MIN_BYTES};

/// Default request body limit.
pub const DEFAULT_MAX_BODY: u64 = 64 << 20;
/// Default limit on the request head (request line plus headers).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 << 10;
/// Default limit on the number of request headers.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default idle keep-alive timeout; nginx's default.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default `Retry-After` for suspended tenants and full queues.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Default wait for a PHP-FPM connection before answering 503.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of requests allowed to wait for a PHP-FPM connection.
pub const DEFAULT_MAX_QUEUE: usize = 4096;
/// Most runtime worker threads `worker_threads` may ask for.
pub const MAX_WORKER_THREADS: usize = 1024;
/// Default time allowed between two reads of a request body; nginx's
/// `client_body_timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time allowed from accepting a connection to a complete request head; nginx's
/// `client_header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `drain_settle`: long enough for a client that is sending a request on a
/// kept connection to get its answer rather than a closed socket.
pub const DEFAULT_DRAIN_SETTLE: Duration = Duration::from_millis(500);
/// Default bound on the disk taken by spooled request bodies at once.
pub const DEFAULT_MAX_SPOOL_BYTES: u64 = 1 << 30;

/// The validated `[server]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Addresses the HTTP listener binds (at least one, no duplicates).
    pub listen: Vec<SocketAddr>,
    /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed; from anyone else
    /// those headers are just passed along. Plain IPs are stored as /32 or /128.
    pub trusted_proxies: Vec<IpNet>,
    /// Admin API listener; off when `None`.
    pub admin: Option<SocketAddr>,
    /// Bearer token for the admin API; always set when `admin` is not a loopback address.
    pub admin_token: Option<AdminToken>,
    /// Request body limit in bytes (413 beyond).
    pub max_body: u64,
    /// Limit on the request's header section in bytes (431 beyond); the request line has
    /// its own limit (414).
    pub max_header_bytes: usize,
    /// Request header count limit (431 beyond).
    pub max_headers: usize,
    /// How long an idle client connection is kept open.
    pub keepalive_timeout: Duration,
    /// How long a connection may take, from accept (or from its first byte after a
    /// keep-alive pause), to send a complete request head.
    pub header_timeout: Duration,
    /// Longest pause between two reads of a request body (then 408).
    pub body_timeout: Duration,
    /// Most client connections open at once; `None` derives it from the open-file limit
    /// at start (see [`crate::connection::limit::default_max_connections`]).
    pub max_connections: Option<usize>,
    /// Where request bodies too large for memory are spooled; the system's temporary
    /// directory when `None`. Checked to be a directory at load time.
    pub temp_dir: Option<PathBuf>,
    /// Bound on the disk that spooled request bodies take at once (503 beyond).
    pub max_spool_bytes: u64,
    /// HTML served with 503 for a disabled tenant; a built-in page when `None`. Resolved
    /// against the config file's directory and checked to be a file at load time.
    pub suspended_page: Option<PathBuf>,
    /// `Retry-After` sent with 503 answers.
    pub retry_after: Duration,
    /// How long a request may wait for a PHP-FPM connection before a 503.
    pub queue_timeout: Duration,
    /// How many requests may wait for a PHP-FPM connection at once (503 beyond).
    pub max_queue: usize,
    /// Runtime worker threads; one per core when `None`. Read at startup only (like
    /// nginx's `worker_processes`, it sizes the process, not a request).
    pub worker_threads: Option<usize>,
    /// Addresses the HTTPS listeners bind; no TLS when empty.
    pub tls_listen: Vec<SocketAddr>,
    /// Plain-HTTP requests for a tenant that has a certificate get a 308 to HTTPS
    /// (HTTP-01 challenges excepted). On by default; only acts with `tls_listen`.
    pub redirect_https: bool,
    /// `Strict-Transport-Security` value sent on HTTPS answers; none when `None`.
    pub hsts: Option<String>,
    /// Encodings offered to clients, most preferred first (the order breaks q-value ties);
    /// empty: no compression. Tenants may override it.
    pub compression: Vec<Encoding>,
    /// Bodies shorter than this (by `Content-Length`) are sent uncompressed.
    pub compression_min_bytes: u64,
    /// Unix socket on which a new gateway process (`serve --takeover`) receives the
    /// listening sockets and tells this one to drain; off when `None`.
    pub takeover_socket: Option<PathBuf>,
    /// On shutdown, how long HTTP/1.1 keep-alive connections keep being served (each
    /// answer with `Connection: close`) before idle ones are closed.
    pub drain_settle: Duration,
}

/// The admin API's bearer token. Never printed: `Debug` shows `"<redacted>"`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps a token. Callers check it is not empty.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token text, for the code that compares or sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares a presented token in time that depends only on its length, so response
    /// timing does not reveal how many leading bytes were right.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if expected.len() != presented.len() {
            return false;
        }
        expected
            .iter()
            .zip(presented)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(\"<redacted>\")")
    }
}

/// `[server]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    listen: OneOrMany,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    admin: Option<String>,
    admin_token: Option<String>,
    admin_token_file: Option<PathBuf>,
    max_body: Option<ByteSize>,
    max_header_bytes: Option<ByteSize>,
    max_headers: Option<usize>,
    keepalive_timeout: Option<HumanDuration>,
    header_timeout: Option<HumanDuration>,
    body_timeout: Option<HumanDuration>,
    max_connections: Option<usize>,
    temp_dir: Option<PathBuf>,
    max_spool_bytes: Option<ByteSize>,
    suspended_page: Option<PathBuf>,
    retry_after: Option<HumanDuration>,
    queue_timeout: Option<HumanDuration>,
    max_queue: Option<usize>,
    worker_threads: Option<usize>,
    tls_listen: Option<OneOrMany>,
    redirect_https: Option<bool>,
    hsts: Option<String>,
    compression: Option<Vec<Encoding>>,
    compression_min_bytes: Option<ByteSize>,
    takeover_socket: Option<PathBuf>,
    drain_settle: Option<HumanDuration>,
}

/// A string or a list of strings: `listen = "a"` and `listen = ["a", "b"]` both read well.
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor;

        impl<'de> Visitor<'de> for OneOrManyVisitor {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address or a list of addresses")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    all.push(item);
                }
                Ok(OneOrMany(all))
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor)
    }
}

impl RawServer {
    /// Validates the table; relative paths are resolved against `base_dir`.
    pub(crate) fn validate(self, base_dir: &Path) -> Result<ServerConfig, ConfigError> {
        let listen = parse_listen(&self.listen.0)?;
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(index, text)| {
                parse_trusted_proxy(text).map_err(|reason| {
                    ConfigError::invalid("server.trusted_proxies", reason).at([
                        KeySegment::Key("server".into()),
                        KeySegment::Key("trusted_proxies".into()),
                        KeySegment::Index(index),
                    ])
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let admin = match &self.admin {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                ConfigError::invalid(
                    "server.admin",
                    format!("{text:?} is not an IP:port address"),
                )
                .at(keys(&["server", "admin"]))
            })?),
        };
        let admin_token = self.admin_token(base_dir)?;
        if let Some(addr) = admin {
            if !addr.ip().is_loopback() && admin_token.is_none() {
                return Err(ConfigError::invalid(
                    "server.admin",
                    format!("{addr} is not a loopback address, so admin_token or admin_token_file is required"),
                )
                .at(keys(&["server", "admin"])));
            }
            // Port 0 asks the OS for a free port, so it never collides (tests bind both).
            if addr.port() != 0 && listen.contains(&addr) {
                return Err(ConfigError::invalid(
                    "server.admin",
                    format!("{addr} is also in server.listen"),
                )
                .at(keys(&["server", "admin"])));
            }
        }

        let max_header_bytes = to_usize(
            self.max_header_bytes,
            DEFAULT_MAX_HEADER_BYTES,
            "server.max_header_bytes",
        )?;
        let max_headers = self.max_headers.unwrap_or(DEFAULT_MAX_HEADERS);
        if max_headers == 0 {
            return Err(
                ConfigError::invalid("server.max_headers", "must be at least 1")
                    .at(keys(&["server", "max_headers"])),
            );
        }
        if let Some(threads) = self.worker_threads {
            if !(1..=MAX_WORKER_THREADS).contains(&threads) {
                return Err(ConfigError::invalid(
                    "server.worker_threads",
                    format!("must be from 1 to {MAX_WORKER_THREADS}, not {threads}"),
                )
                .at(keys(&["server", "worker_threads"])));
            }
        }
        let keepalive_timeout = positive(
            self.keepalive_timeout,
            DEFAULT_KEEPALIVE_TIMEOUT,
            "server.keepalive_timeout",
        )?;
        let header_timeout = positive(
            self.header_timeout,
            DEFAULT_HEADER_TIMEOUT,
            "server.header_timeout",
        )?;
        let body_timeout = positive(
            self.body_timeout,
            DEFAULT_BODY_TIMEOUT,
            "server.body_timeout",
        )?;
        if self.max_connections == Some(0) {
            return Err(
                ConfigError::invalid("server.max_connections", "must be at least 1")
                    .at(keys(&["server", "max_connections"])),
            );
        }
        let temp_dir = match self.temp_dir {
            None => None,
            Some(dir) => {
                let dir = base_dir.join(dir);
                let at = keys(&["server", "temp_dir"]);
                match fs::metadata(&dir) {
                    Ok(meta) if meta.is_dir() => Some(dir),
                    Ok(_) => {
                        return Err(ConfigError::invalid(
                            "server.temp_dir",
                            format!("{} is not a directory", dir.display()),
                        )
                        .at(at))
                    }
                    Err(err) => return Err(ConfigError::io(&dir, err).at(at)),
                }
            }
        };
        let tls_listen = match &self.tls_listen {
            None => Vec::new(),
            Some(all) if all.0.is_empty() => Vec::new(),
            Some(all) => {
                parse_listen(&all.0).map_err(|err| err.at(keys(&["server", "tls_listen"])))?
            }
        };
        if let Some(addr) = tls_listen
            .iter()
            .find(|addr| addr.port() != 0 && listen.contains(addr))
        {
            return Err(ConfigError::invalid(
                "server.tls_listen",
                format!("{addr} is also in server.listen"),
            )
            .at(keys(&["server", "tls_listen"])));
        }
        let hsts = match &self.hsts {
            None => None,
            Some(value) if value.is_empty() => None,
            Some(value) => {
                if http::HeaderValue::from_str(value).is_err() {
                    return Err(
                        ConfigError::invalid("server.hsts", "not a valid header value")
                            .at(keys(&["server", "hsts"])),
                    );
                }
                Some(value.clone())
            }
        };
        let compression = match self.compression {
            None => DEFAULT_ENCODINGS.to_vec(),
            Some(list) => check_encodings(list, "server.compression", &["server", "compression"])?,
        };
        let suspended_page = match self.suspended_page {
            None => None,
            Some(page) => {
                let page = base_dir.join(page);
                let at = keys(&["server", "suspended_page"]);
                match fs::metadata(&page) {
                    Ok(meta) if meta.is_file() => Some(page),
                    Ok(_) => {
                        return Err(ConfigError::invalid(
                            "server.suspended_page",
                            format!("{} is not a file", page.display()),
                        )
                        .at(at))
                    }
                    Err(err) => return Err(ConfigError::io(&page, err).at(at)),
                }
            }
        };

        Ok(ServerConfig {
            listen,
            trusted_proxies,
            admin,
            admin_token,
            max_body: self.max_body.map_or(DEFAULT_MAX_BODY, |s| s.0),
            max_header_bytes,
            max_headers,
            keepalive_timeout,
            header_timeout,
            body_timeout,
            max_connections: self.max_connections,
            temp_dir,
            max_spool_bytes: self
                .max_spool_bytes
                .map_or(DEFAULT_MAX_SPOOL_BYTES, |s| s.0),
            suspended_page,
            retry_after: self.retry_after.map_or(DEFAULT_RETRY_AFTER, |d| d.0),
            queue_timeout: self.queue_timeout.map_or(DEFAULT_QUEUE_TIMEOUT, |d| d.0),
            max_queue: self.max_queue.unwrap_or(DEFAULT_MAX_QUEUE),
            worker_threads: self.worker_threads,
            tls_listen,
            redirect_https: self.redirect_https.unwrap_or(true),
            hsts,
            compression,
            compression_min_bytes: self
                .compression_min_bytes
                .map_or(DEFAULT_MIN_BYTES, |s| s.0),
            takeover_socket: self.takeover_socket.map(|path| base_dir.join(path)),
            drain_settle: self.drain_settle.map_or(DEFAULT_DRAIN_SETTLE, |d| d.0),
        })
    }

    /// The token from `admin_token` or from the file `admin_token_file` names (read now,
    /// so a reload picks up a rotated token; surrounding whitespace is dropped because
    /// editors add a final newline).
    fn admin_token(&self, base_dir: &Path) -> Result<Option<AdminToken>, ConfigError> {
        let token = match (&self.admin_token, &self.admin_token_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "server.admin_token",
                    "set admin_token or admin_token_file, not both",
                )
                .at(keys(&["server", "admin_token_file"])))
            }
            (None, None) => return Ok(None),
            (Some(token), None) => token.trim().to_owned(),
            (None, Some(file)) => {
                let file = base_dir.join(file);
                fs::read_to_string(&file)
                    .map_err(|err| {
                        ConfigError::io(&file, err).at(keys(&["server", "admin_token_file"]))
                    })?
                    .trim()
                    .to_owned()
            }
        };
        if token.is_empty() {
            return Err(
                ConfigError::invalid("server.admin_token", "the token is empty")
                    .at(keys(&["server", "admin_token"])),
            );
        }
        Ok(Some(AdminToken(token)))
    }
}

/// A timeout that must be above zero: a zero timeout would close every connection.
fn positive(
    value: Option<HumanDuration>,
    default: Duration,
    field: &'static str,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(HumanDuration(d)) if d.is_zero() => {
            let path: Vec<&str> = field.split('.').collect();
            Err(ConfigError::invalid(field, "must be above zero").at(keys(&path)))
        }
        Some(HumanDuration(d)) => Ok(d),
    }
}

/// An encoding list as written, each encoding at most once.
pub(crate) fn check_encodings(
    list: Vec<Encoding>,
    field: &'static str,
    at: &[&str],
) -> Result<Vec<Encoding>, ConfigError> {
    for (index, encoding) in list.iter().enumerate() {
        if list[..index].contains(encoding) {
            let mut path: Vec<KeySegment> =
                at.iter().map(|k| KeySegment::Key((*k).into())).collect();
            path.push(KeySegment::Index(index));
            return Err(ConfigError::invalid(
                field,
                format!("{:?} is listed twice", encoding.as_str()),
            )
            .at(path));
        }
    }
    Ok(list)
}

fn parse_listen(all: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    if all.is_empty() {
        return Err(
            ConfigError::invalid("server.listen", "at least one address is required")
                .at(keys(&["server", "listen"])),
        );
    }
    let mut listen = Vec::with_capacity(all.len());
    for (index, text) in all.iter().enumerate() {
        let at = [
            KeySegment::Key("server".into()),
            KeySegment::Key("listen".into()),
            KeySegment::Index(index),
        ];
        let addr: SocketAddr = text.parse().map_err(|_| {
            ConfigError::invalid(
                "server.listen",
                format!(
                    "{text:?} is not an IP:port address (like \"0.0.0.0:8080\" or \"[::]:8080\")"
                ),
            )
            .at(at.clone())
        })?;
        if listen.contains(&addr) {
            return Err(
                ConfigError::invalid("server.listen", format!("{addr} is listed twice")).at(at),
            );
        }
        listen.push(addr);
    }
    Ok(listen)
}

/// A CIDR (`10.0.0.0/8`) or a plain IP. Host bits are cleared so `10.1.2.3/8` means what
/// it obviously means.
fn parse_trusted_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is neither a CIDR nor an IP address"))
}

pub(crate) fn to_usize(
    size: Option<ByteSize>,
    default: usize,
    field: &'static str,
) -> Result<usize, ConfigError> {
    match size {
        None => Ok(default),
        Some(ByteSize(bytes)) => usize::try_from(bytes).map_err(|_| {
            let path: Vec<&str> = field.split('.').collect();
            ConfigError::invalid(field, "too large for this machine").at(keys(&path))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawServer {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_apply_when_only_listen_is_set() {
        let server = raw("listen = \"127.0.0.1:8080\"")
            .validate(Path::new("/"))
            .unwrap();
        assert_eq!(server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(server.max_body, DEFAULT_MAX_BODY);
        assert_eq!(server.max_headers, 100);
        assert_eq!(server.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(server.header_timeout, Duration::from_secs(60));
        assert_eq!(server.body_timeout, Duration::from_secs(60));
        assert_eq!(server.max_connections, None);
        assert_eq!(server.temp_dir, None);
        assert_eq!(server.max_spool_bytes, 1 << 30);
        assert_eq!(server.admin, None);
        assert_eq!(server.worker_threads, None);
    }

    #[test]
    fn connection_and_body_limits_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let server = raw(
            "listen = \"127.0.0.1:8080\"\nheader_timeout = \"5s\"\nbody_timeout = \"7s\"\n\
             max_connections = 100\ntemp_dir = \".\"\nmax_spool_bytes = \"10MiB\"",
        )
        .validate(dir.path())
        .unwrap();
        assert_eq!(server.header_timeout, Duration::from_secs(5));
        assert_eq!(server.body_timeout, Duration::from_secs(7));
        assert_eq!(server.max_connections, Some(100));
        assert_eq!(server.temp_dir, Some(dir.path().join(".")));
        assert_eq!(server.max_spool_bytes, 10 << 20);
        for bad in [
            "header_timeout = \"0s\"",
            "body_timeout = \"0s\"",
            "keepalive_timeout = \"0s\"",
            "max_connections = 0",
            "temp_dir = \"missing\"",
        ] {
            let err = raw(&format!("listen = \"127.0.0.1:8080\"\n{bad}"))
                .validate(dir.path())
                .unwrap_err();
            let key = bad.split(' ').next().unwrap();
            assert!(err.to_string().contains(key) || err.is_io(), "{bad}: {err}");
        }
    }

    #[test]
    fn compression_defaults_to_every_encoding_and_rejects_unknown_or_repeated_ones() {
        let server = raw("listen = \"127.0.0.1:8080\"")
            .validate(Path::new("/"))
            .unwrap();
        assert_eq!(server.compression, DEFAULT_ENCODINGS);
        assert_eq!(server.compression_min_bytes, 1024);
        let server =
            raw("listen = \"127.0.0.1:8080\"\ncompression = []\ncompression_min_bytes = \"2KiB\"")
                .validate(Path::new("/"))
                .unwrap();
        assert!(server.compression.is_empty());
        assert_eq!(server.compression_min_bytes, 2048);
        let err = raw("listen = \"127.0.0.1:8080\"\ncompression = [\"gzip\", \"gzip\"]")
            .validate(Path::new("/"))
            .unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(toml::from_str::<RawServer>("listen = \"a\"\ncompression = [\"lz4\"]").is_err());
    }

    #[test]
    fn worker_threads_must_be_at_least_one() {
        let server = raw("listen = \"127.0.0.1:8080\"\nworker_threads = 1")
            .validate(Path::new("/"))
            .unwrap();
        assert_eq!(server.worker_threads, Some(1));
        let err = raw("listen = \"127.0.0.1:8080\"\nworker_threads = 0")
            .validate(Path::new("/"))
            .unwrap_err();
        assert!(err.to_string().contains("worker_threads"), "{err}");
    }

    #[test]
    fn listen_takes_one_address_or_a_list() {
        let server = raw("listen = [\"127.0.0.1:80\", \"[::1]:80\"]")
            .validate(Path::new("/"))
            .unwrap();
        assert_eq!(server.listen.len(), 2);
        assert!(raw("listen = []").validate(Path::new("/")).is_err());
        assert!(raw("listen = \"localhost:80\"")
            .validate(Path::new("/"))
            .is_err());
        assert!(raw("listen = [\"127.0.0.1:80\", \"127.0.0.1:80\"]")
            .validate(Path::new("/"))
            .is_err());
    }

    #[test]
    fn trusted_proxies_accept_cidrs_and_plain_ips() {
        let server = raw(
            "listen = \"127.0.0.1:80\"\ntrusted_proxies = [\"10.1.2.3/8\", \"192.0.2.1\", \"2001:db8::/32\"]",
        )
        .validate(Path::new("/"))
        .unwrap();
        let nets: Vec<String> = server
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]);
        assert!(
            raw("listen = \"127.0.0.1:80\"\ntrusted_proxies = [\"lb.example\"]")
                .validate(Path::new("/"))
                .is_err()
        );
    }

    #[test]
    fn admin_off_loopback_requires_a_token() {
        let err = raw("listen = \"127.0.0.1:80\"\nadmin = \"0.0.0.0:9180\"")
            .validate(Path::new("/"))
            .unwrap_err();
        assert!(err.to_string().contains("admin_token"));
        let ok = raw("listen = \"127.0.0.1:80\"\nadmin = \"127.0.0.1:9180\"")
            .validate(Path::new("/"))
            .unwrap();
        assert_eq!(ok.admin, Some("127.0.0.1:9180".parse().unwrap()));
        let ok =
            raw("listen = \"127.0.0.1:80\"\nadmin = \"0.0.0.0:9180\"\nadmin_token = \"s3cret\"")
                .validate(Path::new("/"))
                .unwrap();
        assert!(ok.admin_token.unwrap().matches(b"s3cret"));
    }

    #[test]
    fn admin_must_not_share_a_listen_address_unless_both_ask_for_any_port() {
        let err = raw("listen = \"127.0.0.1:80\"\nadmin = \"127.0.0.1:80\"")
            .validate(Path::new("/"))
            .unwrap_err();
        assert!(err.to_string().contains("also in server.listen"), "{err}");
        let ok = raw("listen = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"")
            .validate(Path::new("/"))
            .unwrap();
        assert_eq!(ok.admin, Some("127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn admin_token_file_is_read_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("token"), "from-file\n").unwrap();
        let server = raw(
            "listen = \"127.0.0.1:80\"\nadmin = \"10.0.0.1:9180\"\nadmin_token_file = \"token\"",
        )
        .validate(dir.path())
        .unwrap();
        assert_eq!(server.admin_token.unwrap().expose(), "from-file");
        let err = raw("listen = \"127.0.0.1:80\"\nadmin_token_file = \"missing\"")
            .validate(dir.path())
            .unwrap_err();
        assert!(err.is_io());
    }

    #[test]
    fn admin_token_never_shows_in_debug_and_compares_exactly() {
        let token = AdminToken::new("s3cret");
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(token.matches(b"s3cret"));
        assert!(!token.matches(b"s3cres"));
        assert!(!token.matches(b"s3cret!"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn suspended_page_must_be_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("503.html"), "<h1>later</h1>").unwrap();
        let server = raw("listen = \"127.0.0.1:80\"\nsuspended_page = \"503.html\"")
            .validate(dir.path())
            .unwrap();
        assert_eq!(server.suspended_page, Some(dir.path().join("503.html")));
        assert!(raw("listen = \"127.0.0.1:80\"\nsuspended_page = \".\"")
            .validate(dir.path())
            .is_err());
        assert!(
            raw("listen = \"127.0.0.1:80\"\nsuspended_page = \"nope.html\"")
                .validate(dir.path())
                .is_err()
        );
    }
}
