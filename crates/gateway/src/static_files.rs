//! Static files under the shared root (and private files PHP hands over): content types,
//! ETag (nginx's `"mtime-size"` in hex)/Last-Modified, 304 and 412, Range/206/416 and
//! HEAD, from the open-file cache ([`crate::open_file_cache`]), the body sent with
//! `sendfile(2)` on plain connections ([`crate::file_body`]).
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
use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::GatewayBody;
use crate::compression::{self, Encoding};
use crate::error::GatewayError;
use crate::file_body::FileBody;
use crate::open_file_cache::{self, OpenFile};

/// Serves one regular file for `req` (method and conditional/range headers are honoured).
/// `offered` lists the encodings whose sidecars may be served, most preferred first.
/// `zero_copy`: the connection is plain TCP, whose writes send mapped file slices with
/// `sendfile(2)`.
pub async fn serve_file<B>(
    file: &Path,
    req: Request<B>,
    offered: &[Encoding],
    zero_copy: bool,
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: Send + 'static,
{
    if let Some(refused) = refuse_method(req.method()) {
        return Ok(refused);
    }
    let opened = open_file_cache::lookup(file)
        .map_err(|err| open_error(file, err))?
        .ok_or_else(|| GatewayError::not_found("static file vanished"))?;
    let sidecar = if req.headers().contains_key(header::RANGE) {
        None
    } else {
        choose_sidecar(file, &opened, req.headers(), offered)
    };
    Ok(respond(&opened, sidecar, req, zero_copy))
}

/// Serves the file at `file` (a `/proc/self/fd/N` link to a file already opened and
/// checked, so nothing can be swapped in between) with the content type its real name
/// `named` gives it. No sidecar is looked for: the link has none beside it, and a
/// private file is compressed on the fly like any other answer. Not cached: the link's
/// name stands for another file once the descriptor is closed.
pub(crate) async fn serve_opened_file<B>(
    file: &Path,
    named: &Path,
    req: Request<B>,
    zero_copy: bool,
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: Send + 'static,
{
    if let Some(refused) = refuse_method(req.method()) {
        return Ok(refused);
    }
    let opened = OpenFile::open(file, named)
        .map_err(|err| open_error(file, err))?
        .ok_or_else(|| GatewayError::not_found("private file is not a regular file"))?;
    Ok(respond(&Arc::new(opened), None, req, zero_copy))
}

fn refuse_method(method: &Method) -> Option<Response<GatewayBody>> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let mut response = Response::new(GatewayBody::empty());
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(response)
}

fn open_error(file: &Path, err: std::io::Error) -> GatewayError {
    if err.kind() == std::io::ErrorKind::PermissionDenied {
        return GatewayError::forbidden("file is not readable");
    }
    GatewayError::internal(format!("opening {}", file.display())).with_cause(err)
}

/// The answer for `file` (or its `sidecar` encoding) to `req`: 304/412 by the
/// validators, 206/416 by `Range`, else 200; no body for HEAD.
fn respond<B>(
    file: &Arc<OpenFile>,
    sidecar: Option<(Encoding, Arc<OpenFile>)>,
    mut req: Request<B>,
    zero_copy: bool,
) -> Response<GatewayBody> {
    let validators = Validators::of(file, sidecar.as_ref().map(|(e, _)| *e));
    let head = req.method() == Method::HEAD;
    let mut response = match validators.apply(&mut req) {
        Some(answer) => answer,
        None => {
            let served = sidecar.as_ref().map_or(file, |(_, side)| side);
            let len = served.len();
            let range = match req.headers().get(header::RANGE) {
                None => Ok(None),
                Some(range) => requested_range(range, len).map(Some),
            };
            let mut response = Response::new(GatewayBody::empty());
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, file.content_type().clone());
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            headers.insert(header::LAST_MODIFIED, file.last_modified().clone());
            headers.insert(header::ETAG, validators.etag.clone());
            let (status, span) = match range {
                Ok(None) => (StatusCode::OK, 0..len),
                Ok(Some(span)) => {
                    let content_range =
                        format!("bytes {}-{}/{len}", span.start, span.end.saturating_sub(1));
                    if let Ok(value) = HeaderValue::try_from(content_range) {
                        headers.insert(header::CONTENT_RANGE, value);
                    }
                    (StatusCode::PARTIAL_CONTENT, span)
                }
                Err(()) => {
                    if let Ok(value) = HeaderValue::try_from(format!("bytes */{len}")) {
                        headers.insert(header::CONTENT_RANGE, value);
                    }
                    headers.remove(header::ETAG);
                    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                    return finish(response);
                }
            };
            headers.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(span.end - span.start),
            );
            if let Some((encoding, _)) = &sidecar {
                headers.insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(encoding.as_str()),
                );
            }
            *response.status_mut() = status;
            if !head && span.end > span.start {
                *response.body_mut() =
                    GatewayBody::file(FileBody::new(served.clone(), span, zero_copy));
            }
            response
        }
    };
    if sidecar.is_some() {
        compression::add_vary(response.headers_mut());
    }
    finish(response)
}

fn finish(mut response: Response<GatewayBody>) -> Response<GatewayBody> {
    // Files are shared by every tenant; nothing in them varies by cookie or auth.
    response
        .headers_mut()
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    response
}

/// The one byte range `Range` asks for, as `start..end`; `Err` when it cannot be served
/// (unsatisfiable, malformed, or several ranges: no multipart answers, as tower-http).
fn requested_range(value: &HeaderValue, len: u64) -> Result<std::ops::Range<u64>, ()> {
    let value = value.to_str().map_err(|_| ())?;
    let ranges = http_range_header::parse_range_header(value)
        .and_then(|parsed| parsed.validate(len))
        .map_err(|_| ())?;
    match ranges.as_slice() {
        [range] if len > 0 => Ok(*range.start()..range.end() + 1),
        _ => Err(()),
    }
}

/// The precompressed sidecar the client gets, if any: among the `offered` encodings
/// whose `FILE.<suffix>` is a regular file not older than `file`, the one the client's
/// `Accept-Encoding` prefers.
fn choose_sidecar(
    path: &Path,
    file: &OpenFile,
    headers: &HeaderMap,
    offered: &[Encoding],
) -> Option<(Encoding, Arc<OpenFile>)> {
    let accept = headers.get(header::ACCEPT_ENCODING)?;
    // Cheap first: nothing looked up for encodings the client does not name (a client
    // naming only `*` gets the file compressed on the fly).
    let mut fresh = Vec::new();
    for &encoding in offered {
        if !compression::names(accept, encoding) {
            continue;
        }
        let mut name = path.as_os_str().to_owned();
        name.push(".");
        name.push(encoding.file_suffix());
        if let Ok(Some(side)) = open_file_cache::lookup(Path::new(&name)) {
            if side.modified_secs() >= file.modified_secs() {
                fresh.push((encoding, side));
            }
        }
    }
    let encodings: Vec<Encoding> = fresh.iter().map(|(e, _)| *e).collect();
    let chosen = compression::negotiate(Some(accept), &encodings)?;
    fresh.into_iter().find(|(e, _)| *e == chosen)
}

/// A file's validators as the client sees them.
struct Validators {
    /// Strong entity tag: `"<mtime secs hex>-<size hex>"`, as nginx makes it.
    etag: HeaderValue,
    /// `Last-Modified`.
    last_modified: HeaderValue,
    /// Its time, in seconds.
    modified_secs: u64,
}

impl Validators {
    /// The validators of `file`, or of its `sidecar` encoding of it.
    fn of(file: &OpenFile, sidecar: Option<Encoding>) -> Self {
        let etag = match sidecar {
            None => file.etag().clone(),
            Some(encoding) => {
                let tag = format!("\"{}-{}\"", file.etag_core(), encoding.as_str());
                HeaderValue::try_from(tag).unwrap_or(HeaderValue::from_static("\"0-0\""))
            }
        };
        Self {
            etag,
            last_modified: file.last_modified().clone(),
            modified_secs: file.modified_secs(),
        }
    }

    /// Answers the conditional headers: `If-None-Match` (304; `If-Modified-Since` is
    /// then ignored, RFC 9110 §13.1.3), `If-Unmodified-Since` (412), `If-Modified-Since`
    /// (304); and drops a `Range` whose `If-Range` no longer matches, so the whole file
    /// is served (§13.1.5).
    fn apply<B>(&self, req: &mut Request<B>) -> Option<Response<GatewayBody>> {
        let headers = req.headers_mut();
        if let Some(if_none_match) = headers.get(header::IF_NONE_MATCH) {
            if none_match_hits(if_none_match, &self.etag) {
                return Some(self.not_modified());
            }
        } else if let Some(since) = headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(open_file_cache::http_date_secs)
        {
            if self.modified_secs <= since {
                return Some(self.not_modified());
            }
        }
        if let Some(since) = headers.get(header::IF_UNMODIFIED_SINCE) {
            if open_file_cache::http_date_secs(since).is_none_or(|since| self.modified_secs > since)
            {
                let mut response = Response::new(GatewayBody::empty());
                *response.status_mut() = StatusCode::PRECONDITION_FAILED;
                return Some(response);
            }
        }
        if headers.contains_key(header::RANGE) && !self.if_range_holds(headers) {
            headers.remove(header::RANGE);
        }
        None
    }

    fn not_modified(&self) -> Response<GatewayBody> {
        let mut response = Response::new(GatewayBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::LAST_MODIFIED, self.last_modified.clone());
        response
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
        value == self.last_modified.as_bytes()
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
        let response = serve_file(&file, Request::new(()), &[], false)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/css");
        assert!(response.headers().contains_key(header::LAST_MODIFIED));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"body { color: red }");

        let ranged = Request::builder()
            .header(header::RANGE, "bytes=0-3")
            .body(())
            .unwrap();
        let response = serve_file(&file, ranged, &[], false).await.unwrap();
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
            last_modified: HeaderValue::from_static("Tue, 01 Jan 2030 00:00:00 GMT"),
            modified_secs: 1_893_456_000,
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
