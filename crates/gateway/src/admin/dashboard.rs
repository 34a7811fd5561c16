//! The operator's dashboard: a web page on the admin listener (`GET /`, its script and
//! stylesheet under `/ui/`), compiled into the binary.
//!
//! The page holds no data, so it is served without the token; it asks for the token in a
//! login form, keeps it in the tab's `sessionStorage`, and reads everything through the
//! admin API with `Authorization: Bearer` (never in a URL). Plain JavaScript and CSS, no
//! framework, no build step; data from the API only ever reaches the page as text nodes.
//!
//! Its responses forbid everything but same-origin scripts, styles and API calls
//! (`Content-Security-Policy`), framing and referrers.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

/// The page: markup only; everything it shows is filled in by `app.js`.
const INDEX_HTML: &str = include_str!("ui/index.html");
/// The script: login, API calls, tables, sparklines and the hourly chart.
const APP_JS: &str = include_str!("ui/app.js");
/// The stylesheet.
const APP_CSS: &str = include_str!("ui/app.css");

/// Same-origin scripts, styles and API calls only; no inline script or style, no plugin,
/// no framing, no form posting elsewhere. `img-src data:` is for the favicon.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One compiled-in file and its media type.
struct Asset {
    body: &'static str,
    content_type: &'static str,
}

/// The dashboard file at `path`, if it is one.
fn asset(path: &str) -> Option<Asset> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/ui/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/ui/app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

/// The answer for a dashboard file, or `None` when `path` is not one (the API answers
/// it, token required). Only `GET` and `HEAD` are served; other methods on these paths
/// get 405 with `Allow`.
pub(super) fn respond(method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
    let asset = asset(path)?;
    let mut response = if method == Method::GET || method == Method::HEAD {
        let mut response = Response::new(Full::new(Bytes::from_static(asset.body.as_bytes())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    } else {
        let mut response = Response::new(Full::default());
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_served_with_a_strict_policy() {
        for (path, kind) in [
            ("/", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/app.css", "text/css"),
        ] {
            let response = respond(&Method::GET, path).unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            assert!(headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind));
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.starts_with("default-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
        }
        assert!(respond(&Method::GET, "/tenants").is_none());
        assert!(respond(&Method::GET, "/ui/other.js").is_none());
        let post = respond(&Method::POST, "/").unwrap();
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn the_script_never_writes_markup_from_strings() {
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(forbidden), "app.js uses {forbidden}");
        }
        // The page loads only its own files: no inline script or style to allow.
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains("style="));
    }
}
