//! The admin API's routing table: a method and a path in, a [`Route`] (or why there is
//! none) out. No IO, so every path and method combination is tested without a socket.
//!
//! Paths are split on `/` and each segment is percent-decoded on its own, so an encoded
//! slash (`%2F`) stays inside the tenant name it was sent in (and makes that name
//! invalid) instead of changing which resource is addressed.

use http::Method;

/// An admin request that reached a resource and a method it supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /tenants`
    ListTenants,
    /// `GET /tenants/{name}`
    GetTenant(String),
    /// `PUT /tenants/{name}`
    PutTenant(String),
    /// `DELETE /tenants/{name}`
    DeleteTenant(String),
    /// `POST /tenants/{name}/suspend`
    Suspend(String),
    /// `POST /tenants/{name}/resume`
    Resume(String),
    /// `POST /tenants/{name}/cache/purge`
    PurgeCache(String),
    /// `POST /reload`
    Reload,
    /// `GET /usage`
    Usage,
    /// `GET /usage/recent`
    UsageRecent,
    /// `GET /usage/hourly`
    UsageHourly,
    /// `GET /metrics`
    Metrics,
    /// `GET /upstreams`
    Upstreams,
    /// `GET /healthz`
    Health,
    /// `GET /openapi.json`
    OpenApi,
}

/// Why a request has no [`Route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No resource at this path.
    NotFound,
    /// The resource exists but not with this method; `allow` is the `Allow` header.
    MethodNotAllowed {
        /// The methods the resource supports, comma-separated.
        allow: &'static str,
    },
    /// `OPTIONS` on an existing resource: answered with its `Allow` header.
    Options {
        /// The methods the resource supports, comma-separated.
        allow: &'static str,
    },
}

/// Every path template the router serves, with its methods, as the OpenAPI document
/// lists them (a test keeps the two in step; only tests read it).
#[cfg(test)]
pub const PATHS: &[(&str, &[&str])] = &[
    ("/tenants", &["GET"]),
    ("/tenants/{name}", &["GET", "PUT", "DELETE"]),
    ("/tenants/{name}/suspend", &["POST"]),
    ("/tenants/{name}/resume", &["POST"]),
    ("/tenants/{name}/cache/purge", &["POST"]),
    ("/reload", &["POST"]),
    ("/usage", &["GET"]),
    ("/usage/recent", &["GET"]),
    ("/usage/hourly", &["GET"]),
    ("/metrics", &["GET"]),
    ("/upstreams", &["GET"]),
    ("/healthz", &["GET"]),
    ("/openapi.json", &["GET"]),
];

/// The resources, before the method is looked at.
enum Resource {
    Tenants,
    Tenant(String),
    Suspend(String),
    Resume(String),
    PurgeCache(String),
    Reload,
    Usage,
    UsageRecent,
    UsageHourly,
    Metrics,
    Upstreams,
    Health,
    OpenApi,
}

impl Resource {
    /// The `Allow` header: HEAD wherever GET is, since hyper answers HEAD like GET
    /// without the body.
    fn allow(&self) -> &'static str {
        match self {
            Resource::Tenants
            | Resource::Usage
            | Resource::UsageRecent
            | Resource::UsageHourly
            | Resource::Metrics
            | Resource::Upstreams
            | Resource::Health
            | Resource::OpenApi => "GET, HEAD",
            Resource::Tenant(_) => "GET, HEAD, PUT, DELETE",
            Resource::Suspend(_)
            | Resource::Resume(_)
            | Resource::PurgeCache(_)
            | Resource::Reload => "POST",
        }
    }
}

/// Routes `method` and `path` (the URI path, without the query).
pub fn route(method: &Method, path: &str) -> Result<Route, Miss> {
    let resource = resource(path).ok_or(Miss::NotFound)?;
    let read = *method == Method::GET || *method == Method::HEAD;
    let routed = match (resource, method) {
        (Resource::Tenants, _) if read => Route::ListTenants,
        (Resource::Tenant(name), _) if read => Route::GetTenant(name),
        (Resource::Tenant(name), &Method::PUT) => Route::PutTenant(name),
        (Resource::Tenant(name), &Method::DELETE) => Route::DeleteTenant(name),
        (Resource::Suspend(name), &Method::POST) => Route::Suspend(name),
        (Resource::Resume(name), &Method::POST) => Route::Resume(name),
        (Resource::PurgeCache(name), &Method::POST) => Route::PurgeCache(name),
        (Resource::Reload, &Method::POST) => Route::Reload,
        (Resource::Usage, _) if read => Route::Usage,
        (Resource::UsageRecent, _) if read => Route::UsageRecent,
        (Resource::UsageHourly, _) if read => Route::UsageHourly,
        (Resource::Metrics, _) if read => Route::Metrics,
        (Resource::Upstreams, _) if read => Route::Upstreams,
        (Resource::Health, _) if read => Route::Health,
        (Resource::OpenApi, _) if read => Route::OpenApi,
        (resource, &Method::OPTIONS) => {
            return Err(Miss::Options {
                allow: resource.allow(),
            })
        }
        (resource, _) => {
            return Err(Miss::MethodNotAllowed {
                allow: resource.allow(),
            })
        }
    };
    Ok(routed)
}

fn resource(path: &str) -> Option<Resource> {
    let rest = path.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    let resource = match segments.as_slice() {
        ["tenants"] => Resource::Tenants,
        ["tenants", name] if !name.is_empty() => Resource::Tenant(decode_segment(name)),
        ["tenants", name, "suspend"] if !name.is_empty() => Resource::Suspend(decode_segment(name)),
        ["tenants", name, "resume"] if !name.is_empty() => Resource::Resume(decode_segment(name)),
        ["tenants", name, "cache", "purge"] if !name.is_empty() => {
            Resource::PurgeCache(decode_segment(name))
        }
        ["reload"] => Resource::Reload,
        ["usage"] => Resource::Usage,
        ["usage", "recent"] => Resource::UsageRecent,
        ["usage", "hourly"] => Resource::UsageHourly,
        ["metrics"] => Resource::Metrics,
        ["upstreams"] => Resource::Upstreams,
        ["healthz"] => Resource::Health,
        ["openapi.json"] => Resource::OpenApi,
        _ => return None,
    };
    Some(resource)
}

/// A percent-decoded path segment. Malformed escapes are kept as written and invalid
/// UTF-8 becomes U+FFFD: either way the result is not a valid tenant name, which is all
/// that matters here.
pub fn decode_segment(segment: &str) -> String {
    String::from_utf8_lossy(&percent_decode(segment.as_bytes(), false)).into_owned()
}

/// Why a query string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The same parameter given twice (`?tenant=a&tenant=b`): which one was meant?
    #[error("query parameter `{0}` given more than once")]
    Repeated(&'static str),
    /// A value that is not UTF-8 once decoded.
    #[error("query parameter `{0}` is not valid UTF-8")]
    NotUtf8(&'static str),
}

/// The value of query parameter `name` (`application/x-www-form-urlencoded` rules: `+`
/// is a space, `%XX` a byte), `None` when absent. Other parameters are ignored.
pub fn query_param(query: Option<&str>, name: &'static str) -> Result<Option<String>, QueryError> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key.as_bytes(), true) != name.as_bytes() {
            continue;
        }
        if found.is_some() {
            return Err(QueryError::Repeated(name));
        }
        let value = String::from_utf8(percent_decode(value.as_bytes(), true))
            .map_err(|_| QueryError::NotUtf8(name))?;
        found = Some(value);
    }
    Ok(found)
}

fn percent_decode(input: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => match (
                input.get(i + 1).and_then(hex),
                input.get(i + 2).and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    out.push((high << 4) | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    out
}

fn hex(digit: &u8) -> Option<u8> {
    (*digit as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_operation_routes() {
        let cases = [
            ("GET", "/tenants", Route::ListTenants),
            ("GET", "/tenants/a-1", Route::GetTenant("a-1".into())),
            ("HEAD", "/tenants/a-1", Route::GetTenant("a-1".into())),
            ("PUT", "/tenants/a", Route::PutTenant("a".into())),
            ("DELETE", "/tenants/a", Route::DeleteTenant("a".into())),
            ("POST", "/tenants/a/suspend", Route::Suspend("a".into())),
            ("POST", "/tenants/a/resume", Route::Resume("a".into())),
            ("POST", "/reload", Route::Reload),
            ("GET", "/usage", Route::Usage),
            ("GET", "/usage/recent", Route::UsageRecent),
            ("GET", "/usage/hourly", Route::UsageHourly),
            ("GET", "/metrics", Route::Metrics),
            ("GET", "/upstreams", Route::Upstreams),
            ("GET", "/healthz", Route::Health),
            ("GET", "/openapi.json", Route::OpenApi),
        ];
        for (method, path, expected) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(route(&method, path), Ok(expected), "{method} {path}");
        }
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in [
            "",
            "/",
            "/tenants/",
            "/tenants//suspend",
            "/tenants/a/",
            "/tenants/a/b",
            "/tenants/a/suspend/x",
            "/Tenants",
            "/reload/",
            "//tenants",
            "tenants",
        ] {
            assert_eq!(route(&Method::GET, path), Err(Miss::NotFound), "{path:?}");
        }
    }

    #[test]
    fn a_wrong_method_names_the_allowed_ones() {
        assert_eq!(
            route(&Method::POST, "/tenants"),
            Err(Miss::MethodNotAllowed { allow: "GET, HEAD" })
        );
        assert_eq!(
            route(&Method::PATCH, "/tenants/a"),
            Err(Miss::MethodNotAllowed {
                allow: "GET, HEAD, PUT, DELETE"
            })
        );
        assert_eq!(
            route(&Method::GET, "/reload"),
            Err(Miss::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            route(&Method::OPTIONS, "/tenants/a/suspend"),
            Err(Miss::Options { allow: "POST" })
        );
        let query = Method::from_bytes(b"QUERY").unwrap();
        assert_eq!(
            route(&query, "/metrics"),
            Err(Miss::MethodNotAllowed { allow: "GET, HEAD" })
        );
    }

    #[test]
    fn the_paths_table_matches_the_router() {
        for (template, methods) in PATHS {
            let path = template.replace("{name}", "x");
            for method in *methods {
                let method = Method::from_bytes(method.as_bytes()).unwrap();
                assert!(route(&method, &path).is_ok(), "{method} {path}");
            }
        }
    }

    #[test]
    fn tenant_segments_are_percent_decoded_one_by_one() {
        assert_eq!(
            route(&Method::GET, "/tenants/%61b"),
            Ok(Route::GetTenant("ab".into()))
        );
        assert_eq!(
            route(&Method::GET, "/tenants/a%2Fsuspend"),
            Ok(Route::GetTenant("a/suspend".into()))
        );
        assert_eq!(decode_segment("a%zz%4"), "a%zz%4");
        assert_eq!(decode_segment("%ff"), "\u{fffd}");
    }

    #[test]
    fn query_params_are_form_decoded_and_unique() {
        assert_eq!(query_param(None, "tenant"), Ok(None));
        assert_eq!(query_param(Some("x=1"), "tenant"), Ok(None));
        assert_eq!(
            query_param(Some("x=1&tenant=a%2Db+c"), "tenant"),
            Ok(Some("a-b c".into()))
        );
        assert_eq!(
            query_param(Some("tenant"), "tenant"),
            Ok(Some(String::new()))
        );
        assert_eq!(
            query_param(Some("tenant=a&tenant=b"), "tenant"),
            Err(QueryError::Repeated("tenant"))
        );
        assert_eq!(
            query_param(Some("tenant=%ff"), "tenant"),
            Err(QueryError::NotUtf8("tenant"))
        );
    }
}
