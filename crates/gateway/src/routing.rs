//! Pure request-to-route helpers: which authority a request names and the normalised host
//! that selects its tenant. No IO and no tenant knowledge; the registry does the lookup.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use http::request::Parts;

/// The authority the client asked for, exactly as sent (port included): it becomes
/// `HTTP_HOST`, while [`normalize_host`] of it selects the tenant and is `SERVER_NAME`.
///
/// An absolute-form target (`GET http://a.example/ HTTP/1.1`) wins over the `Host`
/// header, as RFC 9112 §3.2.2 requires; for HTTP/2 hyper exposes `:authority` the same
/// way. Otherwise the `Host` header, if it is visible ASCII.
pub fn request_authority(parts: &Parts) -> Option<&str> {
    if let Some(authority) = parts.uri.authority() {
        return Some(authority.as_str());
    }
    parts
        .headers
        .get(http::header::HOST)
        .and_then(|value| value.to_str().ok())
}

/// Normalises a `Host` value for tenant lookup: drops the port (`a.example:8080`,
/// `[::1]:8080`) and one trailing dot, lower-cases ASCII. Rejects (returns `None`) an
/// empty host and any byte that cannot appear in a host name (whitespace, `/`, `@`, `%`,
/// non-ASCII...), a malformed port, empty labels, and a bracketed value that is not an
/// IPv6 address.
///
/// Borrows when no lower-casing is needed, which is the common case.
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    let (host, _port) = split_host_port(raw)?;
    if host.starts_with('[') {
        // `[::1]` cannot name a tenant, but is still a well-formed Host.
        host[1..host.len() - 1].parse::<Ipv6Addr>().ok()?;
        return Some(lower(host));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    let mut label_len = 0;
    for &b in host.as_bytes() {
        match b {
            b'.' if label_len == 0 => return None,
            b'.' => label_len = 0,
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => label_len += 1,
            _ => return None,
        }
        if label_len > 63 {
            return None;
        }
    }
    if label_len == 0 {
        return None;
    }
    Some(lower(host))
}

/// The port an authority carries, if any (`a.example:8443` → 8443).
pub fn authority_port(authority: &str) -> Option<u16> {
    split_host_port(authority)?.1
}

/// Splits `host[:port]` / `[v6][:port]`. An empty port (`a.example:`) is allowed by
/// RFC 3986 and means none.
fn split_host_port(raw: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if raw.starts_with('[') {
        let end = raw.find(']')?;
        let (host, rest) = raw.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match raw.split_once(':') {
            None => (raw, None),
            Some((host, port)) => (host, Some(port)),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(digits) if digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Some(digits.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

fn lower(host: &str) -> Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Option<String> {
        normalize_host(raw).map(Cow::into_owned)
    }

    #[test]
    fn ports_trailing_dots_and_case_are_normalised() {
        assert_eq!(norm("a.example"), Some("a.example".into()));
        assert_eq!(norm("A.Example:8080"), Some("a.example".into()));
        assert_eq!(norm("a.example."), Some("a.example".into()));
        assert_eq!(norm("a.example.:443"), Some("a.example".into()));
        assert_eq!(norm("a.example:"), Some("a.example".into()));
        assert_eq!(norm("[::1]:8080"), Some("[::1]".into()));
        assert_eq!(norm("[2001:DB8::1]"), Some("[2001:db8::1]".into()));
        assert_eq!(norm("10.0.0.1:80"), Some("10.0.0.1".into()));
        assert_eq!(
            norm("under_score.example"),
            Some("under_score.example".into())
        );
    }

    #[test]
    fn already_normal_hosts_are_borrowed() {
        assert!(matches!(
            normalize_host("a.example"),
            Some(Cow::Borrowed(_))
        ));
        assert!(matches!(
            normalize_host("a.example:8080"),
            Some(Cow::Borrowed("a.example"))
        ));
        assert!(matches!(normalize_host("A.example"), Some(Cow::Owned(_))));
    }

    #[test]
    fn invalid_hosts_are_rejected() {
        for bad in [
            "",
            ":80",
            ".",
            "..",
            "a..example",
            ".a.example",
            "a.example..",
            "a example",
            " a.example",
            "a.example\t",
            "a/b",
            "user@a.example",
            "a%2eexample",
            "a\\b",
            "é.example",
            "a.example:80:80",
            "a.example:http",
            "a.example:999999",
            "a.example:70000",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:x",
            "[nope]",
            "a.example\0",
        ] {
            assert_eq!(norm(bad), None, "{bad:?} accepted");
        }
        assert_eq!(norm(&"a".repeat(64)), None);
        assert!(norm(&"a".repeat(63)).is_some());
    }

    #[test]
    fn authority_port_reads_the_port_if_any() {
        assert_eq!(authority_port("a.example:8443"), Some(8443));
        assert_eq!(authority_port("[::1]:80"), Some(80));
        assert_eq!(authority_port("a.example"), None);
        assert_eq!(authority_port("a.example:"), None);
    }

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn absolute_form_authority_wins_over_the_host_header() {
        let p = parts(http::Request::get("http://a.example:8080/x").header("host", "b.example"));
        assert_eq!(request_authority(&p), Some("a.example:8080"));
    }

    #[test]
    fn host_header_is_used_for_origin_form() {
        let p = parts(http::Request::get("/x").header("host", "B.example:81"));
        assert_eq!(request_authority(&p), Some("B.example:81"));
        let p = parts(http::Request::get("/x"));
        assert_eq!(request_authority(&p), None);
    }

    #[test]
    fn http2_authority_comes_from_the_uri() {
        let p = parts(http::Request::get("https://h2.example/x").version(http::Version::HTTP_2));
        assert_eq!(request_authority(&p), Some("h2.example"));
    }
}
