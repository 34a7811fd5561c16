//! Pure rules, no IO: whether a request may be answered from the cache, and whether (and
//! for how long) an answer may be stored, from its status and caching headers.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};

use crate::config::TenantCache;

/// How long a stored 404 stays fresh at most: a page that appears must not stay
/// "not found" for long.
pub const NOT_FOUND_TTL_CAP: Duration = Duration::from_secs(60);

/// The longest freshness honoured (a year, as RFC 9111 suggests for "never expires").
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// nginx's `X-Accel-Expires`: seconds, `@unix-time`, or 0 for "do not cache".
const X_ACCEL_EXPIRES: HeaderName = HeaderName::from_static("x-accel-expires");

/// Why a request goes to PHP without the cache, as `Cache-Status`'s `detail` says it;
/// `None`: the cache may answer it.
pub fn request_bypass(
    method: &Method,
    headers: &HeaderMap,
    cache: &TenantCache,
) -> Option<&'static str> {
    if method != Method::GET && method != Method::HEAD {
        return Some("method");
    }
    if headers.contains_key(header::AUTHORIZATION) {
        return Some("authorization");
    }
    if headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::TRANSFER_ENCODING)
    {
        return Some("request-body");
    }
    let bypassing = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.split('=').next())
        .map(str::trim)
        .any(|name| {
            cache
                .bypass_cookies
                .iter()
                .any(|pattern| cookie_matches(pattern, name))
        });
    bypassing.then_some("cookie")
}

/// Whether cookie `name` matches `pattern` (exact, or a prefix before a trailing `*`).
fn cookie_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// How long a stored answer is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Fresh this long after it is stored.
    pub ttl: Duration,
    /// Then served stale this long while one background request refreshes it.
    pub stale_while_revalidate: Duration,
    /// Served this long past freshness when PHP-FPM fails or answers 5xx.
    pub stale_if_error: Duration,
}

impl Freshness {
    /// How long the entry is worth keeping at all.
    pub fn lifetime(&self) -> Duration {
        self.ttl + self.stale_while_revalidate.max(self.stale_if_error)
    }
}

/// The directives of `Cache-Control` that matter here.
#[derive(Debug, Default)]
struct CacheControl {
    present: bool,
    no_store: bool,
    private: bool,
    no_cache: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
    stale_while_revalidate: Option<u64>,
    stale_if_error: Option<u64>,
}

fn cache_control(headers: &HeaderMap) -> CacheControl {
    let mut cc = CacheControl::default();
    for value in headers.get_all(header::CACHE_CONTROL) {
        cc.present = true;
        let Ok(value) = value.to_str() else {
            // Unreadable: treat as the strictest.
            cc.no_store = true;
            continue;
        };
        for directive in value.split(',') {
            let (name, arg) = match directive.split_once('=') {
                Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = arg.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "no-store" => cc.no_store = true,
                "private" => cc.private = true,
                "no-cache" => cc.no_cache = true,
                "max-age" => cc.max_age = Some(seconds.unwrap_or(0)),
                "s-maxage" => cc.s_maxage = Some(seconds.unwrap_or(0)),
                "stale-while-revalidate" => cc.stale_while_revalidate = seconds,
                "stale-if-error" => cc.stale_if_error = seconds,
                _ => {}
            }
        }
    }
    cc
}

/// Whether an answer may be stored, and for how long; `Err` is why not (`Cache-Status`
/// detail). `request_cookie` says the request carried a `Cookie` header, which rules out
/// the tenant's `default_ttl`.
pub fn freshness(
    status: StatusCode,
    headers: &HeaderMap,
    request_cookie: bool,
    cache: &TenantCache,
    now: SystemTime,
) -> Result<Freshness, &'static str> {
    if !matches!(status.as_u16(), 200 | 301 | 302 | 404) {
        return Err("status");
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err("set-cookie");
    }
    if headers.contains_key("x-accel-redirect") || headers.contains_key("x-sendfile") {
        return Err("handoff");
    }
    let vary_star = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str()
            .map_or(true, |v| v.split(',').any(|n| n.trim() == "*"))
    });
    if vary_star {
        return Err("vary-star");
    }
    let cc = cache_control(headers);
    if cc.no_store {
        return Err("no-store");
    }
    if cc.private {
        return Err("private");
    }
    if cc.no_cache {
        return Err("no-cache");
    }
    let ttl = if let Some(value) = headers.get(X_ACCEL_EXPIRES) {
        let text = value.to_str().unwrap_or("0").trim();
        match text.strip_prefix('@') {
            Some(at) => {
                let at = at.parse::<u64>().unwrap_or(0);
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
                at.duration_since(now).unwrap_or_default()
            }
            None => Duration::from_secs(text.parse().unwrap_or(0)),
        }
    } else if let Some(seconds) = cc.s_maxage.or(cc.max_age) {
        Duration::from_secs(seconds)
    } else if let Some(expires) = headers.get(header::EXPIRES) {
        let date = headers
            .get(header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .unwrap_or(now);
        expires
            .to_str()
            .ok()
            .and_then(|e| httpdate::parse_http_date(e).ok())
            .and_then(|e| e.duration_since(date).ok())
            .unwrap_or_default()
    } else if cc.present {
        return Err("no-ttl");
    } else if request_cookie {
        return Err("cookie");
    } else {
        cache.default_ttl
    };
    if ttl.is_zero() {
        return Err("no-ttl");
    }
    let mut ttl = ttl.min(MAX_TTL);
    if status == StatusCode::NOT_FOUND {
        ttl = ttl.min(NOT_FOUND_TTL_CAP);
    }
    Ok(Freshness {
        ttl,
        stale_while_revalidate: Duration::from_secs(cc.stale_while_revalidate.unwrap_or(0))
            .min(MAX_TTL),
        stale_if_error: cc
            .stale_if_error
            .map_or(cache.stale_if_error, Duration::from_secs)
            .min(MAX_TTL),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantCache {
        TenantCache {
            max_memory: 1 << 20,
            default_ttl: Duration::ZERO,
            bypass_cookies: vec!["wordpress_logged_in_*".into(), "PHPSESSID".into()],
            stale_if_error: Duration::from_secs(60),
            max_body: 1 << 20,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn judge(status: u16, pairs: &[(&'static str, &str)]) -> Result<Freshness, &'static str> {
        freshness(
            StatusCode::from_u16(status).unwrap(),
            &headers(pairs),
            false,
            &tenant(),
            SystemTime::now(),
        )
    }

    #[test]
    fn public_max_age_and_s_maxage_are_stored_and_s_maxage_wins() {
        let fresh = judge(200, &[("cache-control", "public, max-age=10, s-maxage=30")]).unwrap();
        assert_eq!(fresh.ttl, Duration::from_secs(30));
        assert_eq!(fresh.stale_if_error, Duration::from_secs(60));
        let fresh = judge(
            200,
            &[("cache-control", "max-age=5, stale-while-revalidate=20")],
        )
        .unwrap();
        assert_eq!(fresh.ttl, Duration::from_secs(5));
        assert_eq!(fresh.stale_while_revalidate, Duration::from_secs(20));
        assert_eq!(
            judge(
                200,
                &[("x-accel-expires", "7"), ("cache-control", "max-age=1")]
            )
            .unwrap()
            .ttl,
            Duration::from_secs(7)
        );
    }

    #[test]
    fn private_no_store_cookies_vary_star_and_odd_statuses_are_never_stored() {
        assert_eq!(
            judge(200, &[("cache-control", "private, max-age=10")]),
            Err("private")
        );
        assert_eq!(
            judge(200, &[("cache-control", "no-store")]),
            Err("no-store")
        );
        assert_eq!(
            judge(
                200,
                &[("cache-control", "max-age=10"), ("set-cookie", "a=b")]
            ),
            Err("set-cookie")
        );
        assert_eq!(
            judge(
                200,
                &[("cache-control", "max-age=10"), ("vary", "Accept, *")]
            ),
            Err("vary-star")
        );
        assert_eq!(
            judge(500, &[("cache-control", "max-age=10")]),
            Err("status")
        );
        assert_eq!(
            judge(
                200,
                &[("x-accel-expires", "0"), ("cache-control", "max-age=10")]
            ),
            Err("no-ttl")
        );
        assert_eq!(judge(200, &[("cache-control", "public")]), Err("no-ttl"));
        assert_eq!(
            judge(200, &[]),
            Err("no-ttl"),
            "default_ttl 0: nothing unmarked is stored"
        );
        assert_eq!(
            judge(404, &[("cache-control", "max-age=3600")])
                .unwrap()
                .ttl,
            NOT_FOUND_TTL_CAP
        );
    }

    #[test]
    fn default_ttl_covers_only_unmarked_answers_to_cookieless_requests() {
        let mut cache = tenant();
        cache.default_ttl = Duration::from_secs(30);
        let now = SystemTime::now();
        let ok = freshness(StatusCode::OK, &HeaderMap::new(), false, &cache, now).unwrap();
        assert_eq!(ok.ttl, Duration::from_secs(30));
        assert_eq!(
            freshness(StatusCode::OK, &HeaderMap::new(), true, &cache, now),
            Err("cookie")
        );
        let marked = headers(&[("cache-control", "no-cache")]);
        assert_eq!(
            freshness(StatusCode::OK, &marked, false, &cache, now),
            Err("no-cache")
        );
    }

    #[test]
    fn expires_counts_from_the_answers_date() {
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now);
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(120));
        let fresh = judge(200, &[("date", &date), ("expires", &expires)]).unwrap();
        assert!(fresh.ttl >= Duration::from_secs(119));
        assert_eq!(
            judge(200, &[("expires", "Thu, 19 Nov 1981 08:52:00 GMT")]),
            Err("no-ttl")
        );
    }

    #[test]
    fn requests_with_credentials_bypass_cookies_or_bodies_bypass() {
        let cache = tenant();
        let get = Method::GET;
        assert_eq!(
            request_bypass(&Method::POST, &HeaderMap::new(), &cache),
            Some("method")
        );
        assert_eq!(
            request_bypass(&get, &headers(&[("authorization", "Basic eDp5")]), &cache),
            Some("authorization")
        );
        assert_eq!(
            request_bypass(
                &get,
                &headers(&[("cookie", "a=1; wordpress_logged_in_abc=x")]),
                &cache
            ),
            Some("cookie")
        );
        assert_eq!(
            request_bypass(&get, &headers(&[("cookie", "PHPSESSID=1")]), &cache),
            Some("cookie")
        );
        assert_eq!(
            request_bypass(
                &get,
                &headers(&[("cookie", "PHPSESSIDX=1; theme=dark")]),
                &cache
            ),
            None
        );
        assert_eq!(
            request_bypass(&Method::HEAD, &HeaderMap::new(), &cache),
            None
        );
    }
}
