//! The FastCGI params for one request: the CGI variables nginx's `fastcgi_params` sets,
//! then the request headers as `HTTP_*` ([`super::headers`]), then the tenant's own
//! params.
//!
//! Runs once per request, so it allocates nothing beyond the growth of the output
//! buffer: header names are mapped to `HTTP_*` while being copied
//! ([`Params::insert_with_prefix`]), and numbers, addresses and concatenated paths are
//! formatted in stack buffers ([`super::buffers`], `itoa`). Only a header sent more than
//! once needs a heap buffer to join its values.
//!
//! Ordering is a security property: PHP-FPM keeps the last value of a repeated name, so
//! the tenant's params go last and always win. On top of that, any request header that
//! would map onto a tenant param name is dropped, so the tenant value is the only one
//! PHP sees regardless of how it reads them.
//!
//! `REMOTE_USER` is never sent, although nginx's `fastcgi_params` has it: the gateway
//! authenticates no one, and nginx's value is the user name of an unchecked
//! `Authorization: Basic` header, which an application could take for a login the web
//! server verified. PHP still decodes `PHP_AUTH_USER` from `HTTP_AUTHORIZATION`.

use fcgi_core::Params;
use http::header::{self, HeaderName};
use http::Version;

use super::buffers::{AddrBuf, JoinBuf};
use super::CgiRequest;
use crate::config::cgi_variables::var;

/// `SERVER_SOFTWARE`. No version, so it tells scanners nothing.
pub const SERVER_SOFTWARE: &str = "fcgi-gateway";

/// A param that did not fit in one FastCGI record; says which answer the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsBuildError {
    /// Something from the request line (the path, the query, the method) is too long:
    /// answer 414.
    #[error("request line too long for FastCGI param {param}")]
    UriTooLong {
        /// The CGI variable that did not fit.
        param: &'static str,
    },
    /// One request header (after joining repeats) is too large: answer 431.
    #[error("request header {header} too large for a FastCGI param")]
    HeaderTooLarge {
        /// The header.
        header: HeaderName,
    },
}

/// A size for the params buffer that usually avoids regrowing it: the header bytes, the
/// tenant's params and room for the CGI variables.
pub(crate) fn params_capacity(req: &CgiRequest<'_>) -> usize {
    let headers: usize = req
        .parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 16)
        .sum();
    let uri = req
        .parts
        .uri
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    1024 + 3 * uri + headers + req.tenant.params.encoded_len()
}

/// Writes the request's FastCGI params into `params`: CGI variables, then `HTTP_*`
/// headers, then the tenant's params.
pub(crate) fn build_params(
    req: &CgiRequest<'_>,
    params: &mut Params,
) -> Result<(), ParamsBuildError> {
    use var::*;
    let parts = req.parts;
    let peer = &req.peer;
    let uri_error = |param| move |_| ParamsBuildError::UriTooLong { param };
    let header_error = |header: HeaderName| move |_| ParamsBuildError::HeaderTooLarge { header };
    let mut join = JoinBuf::new();

    let document_root = req.document_root;
    // A document root of `/` would otherwise give `//x.php`.
    let root_prefix = document_root.strip_suffix('/').unwrap_or(document_root);
    params
        .insert(
            SCRIPT_FILENAME,
            join.concat(root_prefix.as_bytes(), req.script_name.as_bytes()),
        )
        .map_err(uri_error(SCRIPT_FILENAME))?;
    params
        .insert(SCRIPT_NAME, req.script_name)
        .map_err(uri_error(SCRIPT_NAME))?;
    let request_uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    params
        .insert(REQUEST_URI, request_uri)
        .map_err(uri_error(REQUEST_URI))?;
    let path_info = req.path_info.unwrap_or("");
    params
        .insert(
            DOCUMENT_URI,
            join.concat(req.script_name.as_bytes(), path_info.as_bytes()),
        )
        .map_err(uri_error(DOCUMENT_URI))?;
    params
        .insert(DOCUMENT_ROOT, document_root)
        .map_err(uri_error(DOCUMENT_ROOT))?;
    params
        .insert(QUERY_STRING, parts.uri.query().unwrap_or(""))
        .map_err(uri_error(QUERY_STRING))?;
    params
        .insert(REQUEST_METHOD, parts.method.as_str())
        .map_err(uri_error(REQUEST_METHOD))?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map_or(&b""[..], |v| v.as_bytes());
    params
        .insert(CONTENT_TYPE, content_type)
        .map_err(header_error(header::CONTENT_TYPE))?;

    let mut number = itoa::Buffer::new();
    // Fixed-size values from here on: they always fit.
    let fixed = |_| ParamsBuildError::UriTooLong {
        param: "CGI variable",
    };
    let content_length = match req.content_length {
        Some(len) => number.format(len),
        None => "",
    };
    params
        .insert(CONTENT_LENGTH, content_length)
        .map_err(fixed)?;
    params
        .insert(SERVER_PROTOCOL, protocol(parts.version))
        .map_err(fixed)?;
    params.insert(GATEWAY_INTERFACE, "CGI/1.1").map_err(fixed)?;
    params
        .insert(var::SERVER_SOFTWARE, self::SERVER_SOFTWARE)
        .map_err(fixed)?;
    let mut addr = AddrBuf::new();
    params
        .insert(REMOTE_ADDR, addr.format(peer.client))
        .map_err(fixed)?;
    params
        .insert(REMOTE_PORT, number.format(peer.client_port))
        .map_err(fixed)?;
    params
        .insert(SERVER_ADDR, addr.format(peer.server))
        .map_err(fixed)?;
    params
        .insert(SERVER_PORT, number.format(peer.server_port))
        .map_err(fixed)?;
    params
        .insert(SERVER_NAME, req.server_name)
        .map_err(header_error(header::HOST))?;
    params
        .insert(REQUEST_SCHEME, if peer.https { "https" } else { "http" })
        .map_err(fixed)?;
    if peer.https {
        params.insert(HTTPS, "on").map_err(fixed)?;
    }
    if let Some(session) = peer.tls_session {
        params
            .insert(SSL_PROTOCOL, session.protocol)
            .map_err(fixed)?;
        params.insert(SSL_CIPHER, session.cipher).map_err(fixed)?;
    }
    params.insert(REDIRECT_STATUS, "200").map_err(fixed)?;

    if let Some(path_info) = req.path_info {
        params
            .insert(PATH_INFO, path_info)
            .map_err(uri_error(PATH_INFO))?;
        params
            .insert(
                PATH_TRANSLATED,
                join.concat(root_prefix.as_bytes(), path_info.as_bytes()),
            )
            .map_err(uri_error(PATH_TRANSLATED))?;
    }

    params
        .insert("HTTP_HOST", req.authority)
        .map_err(header_error(header::HOST))?;
    super::headers::insert_headers(req.tenant, &parts.headers, &mut join, params)?;

    params.append(&req.tenant.params);
    Ok(())
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use http::header::{self, HeaderName};
    use http::request::Parts;
    use ipnet::IpNet;
    use std::net::SocketAddr;

    use super::*;
    use crate::config::TenantConfig;
    use crate::peer::{ConnInfo, Peer};
    use crate::tenant::Tenant;

    fn tenant(params: &[(&str, &str)]) -> Tenant {
        let config = TenantConfig {
            hosts: vec!["a.example".into()],
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..TenantConfig::default()
        };
        let defaults = BTreeMap::from([("APP_ENV".to_owned(), "production".to_owned())]);
        Tenant::build("a", &config, &defaults, None).unwrap()
    }

    struct Case {
        tenant: Tenant,
        parts: Parts,
        authority: &'static str,
        script_name: &'static str,
        path_info: Option<&'static str>,
        remote: SocketAddr,
        tls: bool,
        trusted: Vec<IpNet>,
        content_length: Option<u64>,
    }

    fn case(request: http::request::Builder) -> Case {
        Case {
            tenant: tenant(&[("DBPASS", "hunter2"), ("DBNAME", "moodle_a")]),
            parts: request.body(()).unwrap().into_parts().0,
            authority: "a.example",
            script_name: "/index.php",
            path_info: None,
            remote: "192.0.2.10:51000".parse().unwrap(),
            tls: false,
            trusted: Vec::new(),
            content_length: None,
        }
    }

    impl Case {
        fn request(&self) -> CgiRequest<'_> {
            let conn = ConnInfo {
                remote: self.remote,
                local: "10.0.0.5:8080".parse().unwrap(),
                tls: self.tls,
                tls_session: None,
            };
            CgiRequest {
                tenant: &self.tenant,
                parts: &self.parts,
                authority: self.authority,
                server_name: self.authority.split(':').next().unwrap(),
                script_name: self.script_name,
                path_info: self.path_info,
                document_root: "/var/www/html",
                peer: Peer::resolve(&conn, &self.parts.headers, self.authority, &self.trusted),
                content_length: self.content_length,
            }
        }

        fn build(&self) -> Result<Params, ParamsBuildError> {
            let req = self.request();
            let mut params = Params::with_capacity(params_capacity(&req));
            build_params(&req, &mut params)?;
            Ok(params)
        }

        fn get(&self, name: &str) -> Option<String> {
            let params = self.build().unwrap();
            params
                .get(name)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        }
    }

    fn get(params: &Params, name: &str) -> Option<String> {
        params
            .get(name)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    #[test]
    fn cgi_variables_come_first_in_nginx_fastcgi_params_order() {
        let mut c = case(
            http::Request::post("/course/view.php?id=4")
                .header("host", "a.example")
                .header("content-type", "application/x-www-form-urlencoded"),
        );
        c.script_name = "/course/view.php";
        c.content_length = Some(12);
        let params = c.build().unwrap();
        let names: Vec<String> = params
            .iter()
            .map(|(n, _)| String::from_utf8(n.to_vec()).unwrap())
            .collect();
        assert_eq!(
            names[..19],
            [
                "SCRIPT_FILENAME",
                "SCRIPT_NAME",
                "REQUEST_URI",
                "DOCUMENT_URI",
                "DOCUMENT_ROOT",
                "QUERY_STRING",
                "REQUEST_METHOD",
                "CONTENT_TYPE",
                "CONTENT_LENGTH",
                "SERVER_PROTOCOL",
                "GATEWAY_INTERFACE",
                "SERVER_SOFTWARE",
                "REMOTE_ADDR",
                "REMOTE_PORT",
                "SERVER_ADDR",
                "SERVER_PORT",
                "SERVER_NAME",
                "REQUEST_SCHEME",
                "REDIRECT_STATUS",
            ]
        );
        let expect = [
            ("SCRIPT_FILENAME", "/var/www/html/course/view.php"),
            ("SCRIPT_NAME", "/course/view.php"),
            ("REQUEST_URI", "/course/view.php?id=4"),
            ("DOCUMENT_URI", "/course/view.php"),
            ("DOCUMENT_ROOT", "/var/www/html"),
            ("QUERY_STRING", "id=4"),
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
            ("CONTENT_LENGTH", "12"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_SOFTWARE", "fcgi-gateway"),
            ("REMOTE_ADDR", "192.0.2.10"),
            ("REMOTE_PORT", "51000"),
            ("SERVER_ADDR", "10.0.0.5"),
            ("SERVER_PORT", "8080"),
            ("SERVER_NAME", "a.example"),
            ("REQUEST_SCHEME", "http"),
            ("REDIRECT_STATUS", "200"),
        ];
        for (name, value) in expect {
            assert_eq!(get(&params, name).as_deref(), Some(value), "{name}");
        }
        assert!(!params.contains("HTTPS"));
        assert!(!params.contains("PATH_INFO"));
        assert!(!params.contains("PATH_TRANSLATED"));
    }

    #[test]
    fn missing_query_type_and_length_are_empty_strings() {
        let c = case(http::Request::get("/"));
        assert_eq!(c.get("QUERY_STRING").as_deref(), Some(""));
        assert_eq!(c.get("CONTENT_TYPE").as_deref(), Some(""));
        assert_eq!(c.get("CONTENT_LENGTH").as_deref(), Some(""));
    }

    #[test]
    fn path_info_adds_path_info_and_path_translated() {
        let mut c = case(http::Request::get("/pluginfile.php/12/mod/a%20b.pdf?x=1"));
        c.script_name = "/pluginfile.php";
        c.path_info = Some("/12/mod/a b.pdf");
        let params = c.build().unwrap();
        assert_eq!(
            get(&params, "PATH_INFO").as_deref(),
            Some("/12/mod/a b.pdf")
        );
        assert_eq!(
            get(&params, "PATH_TRANSLATED").as_deref(),
            Some("/var/www/html/12/mod/a b.pdf")
        );
        assert_eq!(
            get(&params, "DOCUMENT_URI").as_deref(),
            Some("/pluginfile.php/12/mod/a b.pdf")
        );
        // REQUEST_URI is the target as sent, still encoded.
        assert_eq!(
            get(&params, "REQUEST_URI").as_deref(),
            Some("/pluginfile.php/12/mod/a%20b.pdf?x=1")
        );
    }

    #[test]
    fn protocol_versions_use_cgi_spelling() {
        for (version, text) in [
            (Version::HTTP_10, "HTTP/1.0"),
            (Version::HTTP_11, "HTTP/1.1"),
            (Version::HTTP_2, "HTTP/2.0"),
        ] {
            let c = case(http::Request::get("/").version(version));
            assert_eq!(c.get("SERVER_PROTOCOL").as_deref(), Some(text));
        }
    }

    #[test]
    fn tls_sets_https_and_scheme() {
        let mut c = case(http::Request::get("/"));
        c.tls = true;
        let params = c.build().unwrap();
        assert_eq!(get(&params, "HTTPS").as_deref(), Some("on"));
        assert_eq!(get(&params, "REQUEST_SCHEME").as_deref(), Some("https"));
        assert_eq!(get(&params, "SERVER_PORT").as_deref(), Some("8080"));
    }

    #[test]
    fn headers_become_http_variables() {
        let mut c = case(
            http::Request::get("/")
                .header("host", "ignored.example")
                .header("user-agent", "curl/8")
                .header("x-forwarded-for", "203.0.113.7")
                .header("authorization", "Bearer t")
                .header("content-type", "text/plain")
                .header("content-length", "3"),
        );
        c.authority = "A.example:8443";
        let params = c.build().unwrap();
        assert_eq!(get(&params, "HTTP_HOST").as_deref(), Some("A.example:8443"));
        assert_eq!(get(&params, "HTTP_USER_AGENT").as_deref(), Some("curl/8"));
        assert_eq!(
            get(&params, "HTTP_X_FORWARDED_FOR").as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            get(&params, "HTTP_AUTHORIZATION").as_deref(),
            Some("Bearer t")
        );
        // Like nginx: the CGI variables and the HTTP_ copies both.
        assert_eq!(
            get(&params, "HTTP_CONTENT_TYPE").as_deref(),
            Some("text/plain")
        );
        assert_eq!(get(&params, "HTTP_CONTENT_LENGTH").as_deref(), Some("3"));
        let hosts = params.iter().filter(|(n, _)| *n == b"HTTP_HOST").count();
        assert_eq!(hosts, 1);
    }

    #[test]
    fn repeated_headers_are_joined_and_cookies_use_semicolons() {
        let c = case(
            http::Request::get("/")
                .header("accept", "text/html")
                .header("accept", "*/*")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .header("cookie", "c=3"),
        );
        let params = c.build().unwrap();
        assert_eq!(
            get(&params, "HTTP_ACCEPT").as_deref(),
            Some("text/html, */*")
        );
        assert_eq!(
            get(&params, "HTTP_COOKIE").as_deref(),
            Some("a=1; b=2; c=3")
        );
        assert_eq!(
            params.iter().filter(|(n, _)| *n == b"HTTP_COOKIE").count(),
            1
        );
    }

    #[test]
    fn interleaved_repeats_are_still_joined_once() {
        let c = case(
            http::Request::get("/")
                .header("cookie", "a=1")
                .header("accept", "text/html")
                .header("x-skip_me", "1")
                .header("cookie", "b=2")
                .header("x-skip_me", "2")
                .header("accept", "*/*"),
        );
        let params = c.build().unwrap();
        let names: Vec<&[u8]> = params
            .iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(b"HTTP_"))
            .collect();
        assert_eq!(names, [&b"HTTP_HOST"[..], b"HTTP_COOKIE", b"HTTP_ACCEPT"]);
        assert_eq!(get(&params, "HTTP_COOKIE").as_deref(), Some("a=1; b=2"));
        assert_eq!(
            get(&params, "HTTP_ACCEPT").as_deref(),
            Some("text/html, */*")
        );
    }

    #[test]
    fn proxy_and_underscore_headers_are_dropped() {
        let c = case(
            http::Request::get("/")
                .header("proxy", "http://evil.example:3128")
                .header("x_forwarded_for", "1.2.3.4")
                .header("x-real_ip", "1.2.3.4"),
        );
        let params = c.build().unwrap();
        assert!(!params.contains("HTTP_PROXY"));
        assert!(!params.contains("HTTP_X_FORWARDED_FOR"));
        assert!(!params.contains("HTTP_X_REAL_IP"));
    }

    #[test]
    fn tenant_params_come_last_and_win() {
        let c = case(http::Request::get("/").header("x-a", "1"));
        let params = c.build().unwrap();
        let names: Vec<&[u8]> = params.iter().map(|(n, _)| n).collect();
        let n = names.len();
        assert_eq!(names[n - 3..], [&b"APP_ENV"[..], b"DBNAME", b"DBPASS"]);
        assert_eq!(get(&params, "DBPASS").as_deref(), Some("hunter2"));
    }

    #[test]
    fn headers_that_would_shadow_a_tenant_param_are_dropped() {
        // Validation forbids HTTP_* tenant params; build one by hand to prove the filter.
        let mut c = case(http::Request::get("/").header("x-tenant", "forged"));
        let mut tenant = tenant(&[]);
        tenant.params.insert("HTTP_X_TENANT", "real").unwrap();
        tenant.param_names.insert(b"HTTP_X_TENANT"[..].into());
        tenant.shadows_headers = true;
        c.tenant = tenant;
        let params = c.build().unwrap();
        let values: Vec<&[u8]> = params
            .iter()
            .filter(|(n, _)| *n == b"HTTP_X_TENANT")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(values, [&b"real"[..]]);
    }

    fn trusted(nets: &[&str]) -> Vec<IpNet> {
        nets.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_headers_from_untrusted_peers_change_nothing() {
        let mut c = case(
            http::Request::get("/")
                .header("x-forwarded-for", "203.0.113.7")
                .header("x-forwarded-proto", "https"),
        );
        c.trusted = trusted(&["10.0.0.0/8"]);
        let params = c.build().unwrap();
        assert_eq!(get(&params, "REMOTE_ADDR").as_deref(), Some("192.0.2.10"));
        assert_eq!(get(&params, "REQUEST_SCHEME").as_deref(), Some("http"));
        assert!(!params.contains("HTTPS"));
        assert_eq!(get(&params, "SERVER_PORT").as_deref(), Some("8080"));
        assert_eq!(
            get(&params, "HTTP_X_FORWARDED_FOR").as_deref(),
            Some("203.0.113.7")
        );
    }

    #[test]
    fn trusted_proxies_supply_the_client_address_and_scheme() {
        let mut c = case(
            http::Request::get("/")
                .header("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.1.1.1")
                .header("x-forwarded-proto", "https"),
        );
        c.remote = "10.0.0.2:40000".parse().unwrap();
        c.trusted = trusted(&["10.0.0.0/8"]);
        let params = c.build().unwrap();
        // The first untrusted entry from the right; the client-written left part is
        // ignored.
        assert_eq!(get(&params, "REMOTE_ADDR").as_deref(), Some("203.0.113.7"));
        assert_eq!(get(&params, "REMOTE_PORT").as_deref(), Some("40000"));
        assert_eq!(get(&params, "HTTPS").as_deref(), Some("on"));
        assert_eq!(get(&params, "REQUEST_SCHEME").as_deref(), Some("https"));
        assert_eq!(get(&params, "SERVER_PORT").as_deref(), Some("443"));
    }

    #[test]
    fn forwarded_https_keeps_an_explicit_authority_port() {
        let mut c = case(http::Request::get("/").header("x-forwarded-proto", "https"));
        c.remote = "10.0.0.2:40000".parse().unwrap();
        c.trusted = trusted(&["10.0.0.0/8"]);
        c.authority = "a.example:8443";
        assert_eq!(c.get("SERVER_PORT").as_deref(), Some("8443"));
    }

    #[test]
    fn forwarded_for_walks_multiple_headers_and_stops_at_garbage() {
        let mut c = case(
            http::Request::get("/")
                .header("x-forwarded-for", "198.51.100.1")
                .header("x-forwarded-for", "10.9.9.9"),
        );
        c.remote = "10.0.0.2:40000".parse().unwrap();
        c.trusted = trusted(&["10.0.0.0/8"]);
        assert_eq!(c.get("REMOTE_ADDR").as_deref(), Some("198.51.100.1"));

        let mut c = case(
            http::Request::get("/").header("x-forwarded-for", "198.51.100.1, unknown, 10.9.9.9"),
        );
        c.remote = "10.0.0.2:40000".parse().unwrap();
        c.trusted = trusted(&["10.0.0.0/8"]);
        assert_eq!(c.get("REMOTE_ADDR").as_deref(), Some("10.9.9.9"));

        // All trusted: the leftmost is the best that is known.
        let mut c = case(http::Request::get("/").header("x-forwarded-for", "10.3.3.3, 10.9.9.9"));
        c.remote = "10.0.0.2:40000".parse().unwrap();
        c.trusted = trusted(&["10.0.0.0/8"]);
        assert_eq!(c.get("REMOTE_ADDR").as_deref(), Some("10.3.3.3"));
    }

    #[test]
    fn forwarded_for_entries_may_carry_ports_and_mapped_addresses() {
        let mut c = case(
            http::Request::get("/")
                .header("x-forwarded-for", "[2001:db8::7]:443, 203.0.113.9:5555"),
        );
        c.remote = "[::ffff:10.0.0.2]:40000".parse().unwrap();
        c.trusted = trusted(&["10.0.0.0/8"]);
        assert_eq!(c.get("REMOTE_ADDR").as_deref(), Some("203.0.113.9"));
        c.trusted = trusted(&["10.0.0.0/8", "203.0.113.0/24"]);
        assert_eq!(c.get("REMOTE_ADDR").as_deref(), Some("2001:db8::7"));
    }

    #[test]
    fn forwarded_proto_http_from_a_trusted_proxy_means_port_80() {
        let mut c = case(http::Request::get("/").header("x-forwarded-proto", "https, http"));
        c.remote = "10.0.0.2:40000".parse().unwrap();
        c.trusted = trusted(&["10.0.0.0/8"]);
        c.tls = true;
        let params = c.build().unwrap();
        assert_eq!(get(&params, "REQUEST_SCHEME").as_deref(), Some("http"));
        assert!(!params.contains("HTTPS"));
        assert_eq!(get(&params, "SERVER_PORT").as_deref(), Some("80"));
    }

    #[test]
    fn mapped_ipv6_peers_are_shown_as_ipv4() {
        let mut c = case(http::Request::get("/"));
        c.remote = "[::ffff:192.0.2.33]:1234".parse().unwrap();
        assert_eq!(c.get("REMOTE_ADDR").as_deref(), Some("192.0.2.33"));
        c.remote = "[2001:db8::1]:1234".parse().unwrap();
        assert_eq!(c.get("REMOTE_ADDR").as_deref(), Some("2001:db8::1"));
    }

    #[test]
    fn a_query_too_long_for_one_record_is_uri_too_long() {
        // `http` caps a URI at 65534 bytes; this one fits that but not a param record.
        let target = format!("/?q={}", "x".repeat(65_520));
        let c = case(http::Request::get(target.as_str()));
        assert!(matches!(
            c.build(),
            Err(ParamsBuildError::UriTooLong {
                param: "REQUEST_URI"
            })
        ));
    }

    #[test]
    fn a_header_too_long_for_one_record_names_the_header() {
        let c = case(http::Request::get("/").header("x-big", "y".repeat(70_000)));
        assert_eq!(
            c.build(),
            Err(ParamsBuildError::HeaderTooLarge {
                header: HeaderName::from_static("x-big")
            })
        );
        // Joined repeats count as one value.
        let mut request = http::Request::get("/");
        for _ in 0..3 {
            request = request.header("cookie", "c".repeat(30_000));
        }
        let c = case(request);
        assert_eq!(
            c.build(),
            Err(ParamsBuildError::HeaderTooLarge {
                header: header::COOKIE
            })
        );
    }

    #[test]
    fn long_paths_fall_back_to_the_heap_for_concatenation() {
        let long = format!("/{}.php", "d".repeat(600));
        let mut c = case(http::Request::get(long.as_str()));
        c.script_name = Box::leak(long.clone().into_boxed_str());
        assert_eq!(
            c.get("SCRIPT_FILENAME"),
            Some(format!("/var/www/html{long}"))
        );
    }

    #[test]
    fn debug_shows_neither_credentials_nor_tenant_secrets() {
        let c = case(
            http::Request::get("/")
                .header("authorization", "Bearer sekrit")
                .header("cookie", "MoodleSession=sekrit"),
        );
        let ctx = c.request();
        let shown = format!("{ctx:?}");
        assert!(
            !shown.contains("sekrit") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    /// `cargo test --release -p gateway --lib build_params_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run by hand in release"]
    fn build_params_speed() {
        let mut request = http::Request::get("/course/view.php?id=42&section=3")
            .header("host", "a.example")
            .header(
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
            )
            .header(
                "accept",
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            )
            .header("accept-language", "es-ES,es;q=0.8,en-US;q=0.5,en;q=0.3")
            .header("accept-encoding", "gzip, deflate, br, zstd")
            .header("referer", "https://a.example/my/")
            .header(
                "cookie",
                "MoodleSession=0123456789abcdef0123456789abcdef; MOODLEID1_=abc",
            );
        for h in [
            "sec-fetch-dest",
            "sec-fetch-mode",
            "sec-fetch-site",
            "upgrade-insecure-requests",
        ] {
            request = request.header(h, "document");
        }
        let mut c = case(request);
        c.script_name = "/course/view.php";
        c.tls = true;
        let ctx = c.request();
        let bare = http::Request::get("/course/view.php?id=42&section=3")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let bare_ctx = CgiRequest {
            parts: &bare,
            ..c.request()
        };
        for (label, ctx) in [("12 headers", &ctx), ("no headers", &bare_ctx)] {
            let mut params = Params::with_capacity(params_capacity(ctx));
            let rounds = 200_000;
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                params.clear();
                build_params(ctx, &mut params).unwrap();
            }
            let per = started.elapsed() / rounds;
            eprintln!(
                "build_params, {label}: {per:?} per request, {} bytes",
                params.encoded_len()
            );
        }
    }
}
