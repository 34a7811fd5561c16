//! Static files under the shared root, served by tower-http's `ServeFile`: content types,
//! ETag/Last-Modified, 304, Range/206 and HEAD.
//!
//! tower-http answers `If-Modified-Since` and ranges but knows no entity tags, so the
//! `ETag` (nginx's `"mtime-size"` in hex), `If-None-Match` and `If-Range` are handled
//! here around it.
//!
//! Precompressed sidecars (`style.css.br`, `.zst`, `.gz` next to the file, as nginx's
//! `gzip_static` and Caddy's `precompressed` serve them) are chosen here by the client's
//! `Accept-Encoding` among the encodings the tenant offers, when they are not older than
//! the file; each encoding has its own `ETag` (`"mtime-size-br"`). A `Range` request is
//! always served from the file itself (identity), as nginx does. Without a sidecar the
//! answer is compressed on the fly like any other, in response mapping.
//!
//! Which paths may be served at all (never `.php` source, never dotfiles, never outside the
//! root) is decided earlier, in [`crate::resolve`]; this module only serves a file
//! already known to be safe.

use std::path::Path;
use std::time::UNIX_EPOCH;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::body::GatewayBody;
use crate::compression::{self, Encoding};
use crate::error::GatewayError;

/// Serves one regular file for `req` (method and conditional/range headers are honoured).
/// `offered` lists the encodings whose sidecars may be served, most preferred first.
pub async fn serve_file<B>(
    file: &Path,
    req: Request<B>,
    offered: &[Encoding],
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: Send + 'static,
{
    serve(file, ServeFile::new(file), req, offered).await
}

/// Serves the file at `file` (a `/proc/self/fd/N` link to a file already opened and
/// checked, so nothing can be swapped in between) with the content type its real name
/// `named` gives it. No sidecar is looked for: the link has none beside it, and a
/// private file is compressed on the fly like any other answer.
pub(crate) async fn serve_opened_file<B>(
    file: &Path,
    named: &Path,
    req: Request<B>,
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: Send + 'static,
{
    let mime = mime_guess::from_path(named).first_or_octet_stream();
    serve(file, ServeFile::new_with_mime(file, &mime), req, &[]).await
}

async fn serve<B>(
    file: &Path,
    service: ServeFile,
    mut req: Request<B>,
    offered: &[Encoding],
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: Send + 'static,
{
    // A file that vanished meanwhile is left to ServeFile to answer (404).
    let meta = tokio::fs::metadata(file).await.ok();
    let sidecar = match &meta {
        Some(meta) if !req.headers().contains_key(header::RANGE) => {
            choose_sidecar(file, meta, req.headers(), offered).await
        }
        _ => None,
    };
    let validators = meta.map(|m| Validators::of(&m, sidecar));
    if let Some(validators) = &validators {
        if let Some(mut response) = validators.apply(&mut req) {
            if sidecar.is_some() {
                compression::add_vary(response.headers_mut());
            }
            return Ok(response);
        }
    }
    let service = match sidecar {
        None => service,
        Some(Encoding::Gzip) => service.precompressed_gzip(),
        Some(Encoding::Brotli) => service.precompressed_br(),
        Some(Encoding::Zstd) => service.precompressed_zstd(),
    };
    let response = service.oneshot(req).await.map_err(|err| {
        GatewayError::internal(format!("serving {}", file.display())).with_cause(err)
    })?;
    let (mut parts, body) = response.into_parts();
    // Files are shared by every tenant; nothing in them varies by cookie or auth.
    parts
        .headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    if let Some(validators) = validators {
        if matches!(
            parts.status,
            StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        ) {
            parts.headers.insert(header::ETAG, validators.etag);
        }
    }
    if parts.headers.contains_key(header::CONTENT_ENCODING) {
        compression::add_vary(&mut parts.headers);
    }
    Ok(Response::from_parts(parts, GatewayBody::static_file(body)))
}

/// The precompressed sidecar the client gets, if any: among the `offered` encodings
/// whose `FILE.<suffix>` is a regular file not older than `file`, the one the client's
/// `Accept-Encoding` prefers.
async fn choose_sidecar(
    file: &Path,
    meta: &std::fs::Metadata,
    headers: &HeaderMap,
    offered: &[Encoding],
) -> Option<Encoding> {
    let accept = headers.get(header::ACCEPT_ENCODING)?;
    // Cheap first: no stat for encodings the client does not name (ServeFile, which
    // sends the sidecar, knows no `*`; such a client gets the file compressed on the fly).
    let wanted: Vec<Encoding> = offered
        .iter()
        .copied()
        .filter(|&e| compression::names(accept, e))
        .collect();
    let modified = meta.modified().ok()?;
    let mut fresh = Vec::with_capacity(wanted.len());
    for encoding in wanted {
        let mut name = file.as_os_str().to_owned();
        name.push(".");
        name.push(encoding.file_suffix());
        if let Ok(side) = tokio::fs::metadata(Path::new(&name)).await {
            if side.is_file() && side.modified().is_ok_and(|m| m >= modified) {
                fresh.push(encoding);
            }
        }
    }
    compression::negotiate(Some(accept), &fresh)
}

/// A file's validators as the client sees them.
struct Validators {
    /// Strong entity tag: `"<mtime secs hex>-<size hex>"`, as nginx makes it.
    etag: HeaderValue,
    /// `Last-Modified` as tower-http formats it, for `If-Range` dates.
    last_modified: Option<String>,
}

impl Validators {
    /// The validators of `meta`'s file, or of its `sidecar` encoding of it.
    fn of(meta: &std::fs::Metadata, sidecar: Option<Encoding>) -> Self {
        let modified = meta.modified().ok();
        let secs = modified
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let etag = match sidecar {
            None => format!("\"{secs:x}-{:x}\"", meta.len()),
            Some(encoding) => format!("\"{secs:x}-{:x}-{}\"", meta.len(), encoding.as_str()),
        };
        Self {
            // Quotes, hex digits and a dash: always a valid value.
            etag: HeaderValue::try_from(etag).unwrap_or(HeaderValue::from_static("\"0-0\"")),
            last_modified: modified.map(httpdate::fmt_http_date),
        }
    }

    /// Answers `If-None-Match` itself (304) and adjusts the request so ServeFile does the
    /// rest right: `If-Modified-Since` is ignored when `If-None-Match` is present
    /// (RFC 9110 §13.1.3), and a `Range` whose `If-Range` no longer matches is served
    /// whole (§13.1.5).
    fn apply<B>(&self, req: &mut Request<B>) -> Option<Response<GatewayBody>> {
        let method = req.method().clone();
        let headers = req.headers_mut();
        if let Some(if_none_match) = headers.get(header::IF_NONE_MATCH) {
            if (method == Method::GET || method == Method::HEAD)
                && none_match_hits(if_none_match, &self.etag)
            {
                let mut response = Response::new(GatewayBody::empty());
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                let headers = response.headers_mut();
                headers.insert(header::ETAG, self.etag.clone());
                if let Some(date) = self.last_modified.as_deref() {
                    if let Ok(date) = HeaderValue::from_str(date) {
                        headers.insert(header::LAST_MODIFIED, date);
                    }
                }
                return Some(response);
            }
            headers.remove(header::IF_MODIFIED_SINCE);
        }
        if headers.contains_key(header::RANGE) && !self.if_range_holds(headers) {
            headers.remove(header::RANGE);
        }
        None
    }

    /// Whether a `Range` may be honoured: no `If-Range`, or one naming the current
    /// entity tag (strong comparison) or the exact `Last-Modified` date.
    fn if_range_holds(&self, headers: &HeaderMap) -> bool {
        let Some(if_range) = headers.get(header::IF_RANGE) else {
            return true;
        };
        let value = if_range.as_bytes().trim_ascii();
        if value.starts_with(b"\"") {
            return value == self.etag.as_bytes();
        }
        self.last_modified
            .as_ref()
            .is_some_and(|date| value == date.as_bytes())
    }
}

/// `If-None-Match` against our tag: `*`, or any listed tag equal under weak comparison.
fn none_match_hits(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    if_none_match
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|tag| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn serves_content_type_etag_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("style.css");
        std::fs::write(&file, "body { color: red }").unwrap();
        let response = serve_file(&file, Request::new(()), &[]).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/css");
        assert!(response.headers().contains_key(header::LAST_MODIFIED));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"body { color: red }");

        let ranged = Request::builder()
            .header(header::RANGE, "bytes=0-3")
            .body(())
            .unwrap();
        let response = serve_file(&file, ranged, &[]).await.unwrap();
        assert_eq!(response.status(), 206);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"body");
    }

    #[test]
    fn if_none_match_compares_weakly_and_if_range_strongly() {
        let etag = HeaderValue::from_static("\"5f-d\"");
        let hits = |v: &'static str| none_match_hits(&HeaderValue::from_static(v), &etag);
        assert!(hits("\"5f-d\"") && hits("W/\"5f-d\"") && hits("\"x\", \"5f-d\"") && hits("*"));
        assert!(!hits("\"5f-e\"") && !hits("5f-d"));

        let validators = Validators {
            etag: etag.clone(),
            last_modified: Some("Tue, 01 Jan 2030 00:00:00 GMT".into()),
        };
        let holds = |v: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_RANGE, HeaderValue::from_static(v));
            validators.if_range_holds(&headers)
        };
        assert!(holds("\"5f-d\"") && holds("Tue, 01 Jan 2030 00:00:00 GMT"));
        assert!(
            !holds("W/\"5f-d\"") && !holds("\"other\"") && !holds("Mon, 01 Jan 2029 00:00:00 GMT")
        );
        assert!(validators.if_range_holds(&HeaderMap::new()));
    }
}
