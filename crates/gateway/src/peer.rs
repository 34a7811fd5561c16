//! Who the client is: the connection a request came in on ([`ConnInfo`], set once at
//! accept) and what PHP is told about it ([`Peer`]: address, port, scheme), resolved once
//! per request, believing `X-Forwarded-For` / `X-Forwarded-Proto` only from a trusted
//! proxy.
//!
//! This is the one home of the client's identity in the flow (accept → route → CGI
//! mapping): the CGI params read a [`Peer`] and never the connection or the forwarded
//! headers themselves. TLS details (protocol and cipher names, for `SSL_PROTOCOL` and
//! `SSL_CIPHER`) ride along when the gateway terminated TLS itself.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use crate::routing::authority_port;

/// The client connection a request came in on. The server passes it with each request;
/// through `tower::Service::call` it is read from the request's extensions, and an
/// embedder that puts none there gets `0.0.0.0:0` for both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client's address (the peer of the TCP connection).
    pub remote: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// Whether the connection was TLS (terminated in front of us or by an embedder).
    pub tls: bool,
    /// What our own TLS listener negotiated (`SSL_PROTOCOL`, `SSL_CIPHER`).
    pub tls_session: Option<TlsSession>,
}

impl Default for ConnInfo {
    fn default() -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Self {
            remote: unspecified,
            local: unspecified,
            tls: false,
            tls_session: None,
        }
    }
}

/// What the TLS session of a connection negotiated, for the CGI params.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsSession {
    /// `SSL_PROTOCOL`, as nginx names it: `TLSv1.3`, `TLSv1.2`.
    pub protocol: &'static str,
    /// `SSL_CIPHER`, as OpenSSL (and so nginx) names it: `TLS_AES_128_GCM_SHA256`,
    /// `ECDHE-RSA-AES128-GCM-SHA256`.
    pub cipher: &'static str,
}

/// The client as PHP sees it: the connection, corrected by what a trusted proxy reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    /// `REMOTE_ADDR`: the TCP peer, or the client a trusted proxy reports.
    pub client: IpAddr,
    /// `REMOTE_PORT`: the TCP peer's port (a proxy's reports no client port).
    pub client_port: u16,
    /// `SERVER_ADDR`: the local address the request arrived on.
    pub server: IpAddr,
    /// `SERVER_PORT`: the port the client connected to, as the client sees it.
    pub server_port: u16,
    /// `HTTPS` and `REQUEST_SCHEME`: whether the client used TLS.
    pub https: bool,
    /// `SSL_PROTOCOL` and `SSL_CIPHER`: set when the gateway terminated TLS itself.
    pub tls_session: Option<TlsSession>,
}

impl Peer {
    /// Resolves the client behind `conn` for a request with these `headers` and
    /// `authority` (the Host, port included), believing forwarded headers only when the
    /// TCP peer is in `trusted_proxies`.
    pub(crate) fn resolve(
        conn: &ConnInfo,
        headers: &HeaderMap,
        authority: &str,
        trusted_proxies: &[IpNet],
    ) -> Self {
        // A v4 client on a dual-stack listener shows up as `::ffff:a.b.c.d`.
        let peer = conn.remote.ip().to_canonical();
        let trusted = |ip: IpAddr| trusted_proxies.iter().any(|net| net.contains(&ip));
        let (client, forwarded_https) = if trusted_proxies.is_empty() || !trusted(peer) {
            (peer, None)
        } else {
            (
                forwarded_client(headers, peer, trusted),
                forwarded_https(headers),
            )
        };
        let server_port = match forwarded_https {
            // The client's view of the port: the proxy's listener, not ours.
            Some(https) => authority_port(authority).unwrap_or(if https { 443 } else { 80 }),
            None => conn.local.port(),
        };
        Self {
            client,
            client_port: conn.remote.port(),
            server: conn.local.ip().to_canonical(),
            server_port,
            https: forwarded_https.unwrap_or(conn.tls),
            tls_session: conn.tls_session,
        }
    }
}

/// Walks `X-Forwarded-For` from the right, past trusted proxies, to the first address
/// that is not one: everything left of it was written by the client and proves nothing.
/// Stops at an unparsable entry, keeping the last address it could trust.
fn forwarded_client(headers: &HeaderMap, peer: IpAddr, trusted: impl Fn(IpAddr) -> bool) -> IpAddr {
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        for entry in value.as_bytes().rsplit(|&b| b == b',') {
            let Some(ip) = parse_forwarded_ip(entry) else {
                return client;
            };
            client = ip;
            if !trusted(ip) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an IP, or an IP with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:5678`) as some load balancers write.
fn parse_forwarded_ip(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?.trim();
    let ip = match entry.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => entry.parse::<SocketAddr>().ok()?.ip(),
    };
    Some(ip.to_canonical())
}

/// The scheme the nearest trusted proxy reports: the last `X-Forwarded-Proto` entry,
/// since a proxy that appends rather than replaces puts its own value at the end.
fn forwarded_https(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get_all("x-forwarded-proto").iter().next_back()?;
    let last = value.as_bytes().rsplit(|&b| b == b',').next()?;
    let last = last.trim_ascii();
    if last.eq_ignore_ascii_case(b"https") {
        Some(true)
    } else if last.eq_ignore_ascii_case(b"http") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer resolved for a connection from `remote` (to `10.0.0.5:8080`, mapped to
    /// IPv6) with these headers, `10.0.0.0/8` trusted.
    fn resolve(remote: &str, tls: bool, pairs: &[(&'static str, &'static str)]) -> Peer {
        let conn = ConnInfo {
            remote: remote.parse().unwrap(),
            local: "[::ffff:10.0.0.5]:8080".parse().unwrap(),
            tls,
            tls_session: None,
        };
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        Peer::resolve(&conn, &headers(pairs), "a.example", &trusted)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (http::HeaderName::from_static(name), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn without_a_trusted_proxy_the_connection_is_the_client() {
        let forged = [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "http"),
        ];
        let peer = resolve("192.0.2.10:51000", true, &forged);
        assert_eq!(
            peer,
            Peer {
                client: "192.0.2.10".parse().unwrap(),
                client_port: 51000,
                server: "10.0.0.5".parse().unwrap(),
                server_port: 8080,
                https: true,
                tls_session: None,
            }
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_the_scheme_once() {
        let forwarded = [
            ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ];
        let peer = resolve("10.0.0.2:40000", false, &forwarded);
        assert_eq!(peer.client, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(peer.client_port, 40000);
        assert!(peer.https);
        assert_eq!(peer.server_port, 443);
    }
}
