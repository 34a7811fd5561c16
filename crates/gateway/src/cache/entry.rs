//! One stored answer, and the answers made from it: the whole page (as PHP sent it, or
//! compressed once when stored, for clients that accept that encoding), a 304 to a
//! conditional request, one range (206/416), and the same headers for HEAD (the
//! response step leaves the body out).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::policy::Freshness;
use crate::compression::{encode_headers, Encoding};

/// Answer headers that describe the cache's bookkeeping, not the page: read when the
/// answer is stored, never passed on.
const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");
const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
const X_ACCEL_EXPIRES: HeaderName = HeaderName::from_static("x-accel-expires");

/// A stored answer: immutable once stored, shared by every request it answers.
#[derive(Debug)]
pub struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// When it was stored (monotonic: ages never go backwards).
    stored: Instant,
    freshness: Freshness,
    /// Tags from `Cache-Tag` / `Surrogate-Key`, for purges by tag.
    tags: Box<[Box<str>]>,
    /// `Last-Modified`, parsed once, for `If-Modified-Since`.
    last_modified: Option<SystemTime>,
    /// The body compressed in each encoding the tenant offers (made when stored, so a
    /// hit never compresses); empty when compression does not apply to it.
    encoded: Box<[(Encoding, Bytes)]>,
    /// When it last answered a request ([`now_ms`]), for evicting the least recently
    /// used first.
    last_used: AtomicU64,
}

/// Uses closer together than this do not move [`Entry::last_used`] (a hot entry's
/// answers do not all write the same shared word).
const TOUCH_GRAIN_MS: u64 = 50;

/// Milliseconds since the cache's first use: the clock of [`Entry::last_used`].
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Entry {
    /// An entry for PHP's answer. The tag headers and `X-Accel-Expires` are taken out;
    /// the length is the body's own.
    pub fn new(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        freshness: Freshness,
    ) -> Self {
        let mut tags = Vec::new();
        for name in [CACHE_TAG, SURROGATE_KEY] {
            for value in headers.get_all(&name) {
                if let Ok(value) = value.to_str() {
                    tags.extend(
                        value
                            .split([',', ' '])
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .map(Box::<str>::from),
                    );
                }
            }
            headers.remove(&name);
        }
        headers.remove(X_ACCEL_EXPIRES);
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        headers.remove(header::AGE);
        let last_modified = headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        Self {
            status,
            headers,
            body,
            stored: Instant::now(),
            freshness,
            tags: tags.into_boxed_slice(),
            last_modified,
            encoded: Box::default(),
            last_used: AtomicU64::new(now_ms()),
        }
    }

    /// How long ago it last answered a request (or was stored), in milliseconds.
    pub fn unused_for_ms(&self) -> u64 {
        now_ms().saturating_sub(self.last_used.load(Ordering::Relaxed))
    }

    /// Notes a use now.
    fn touch(&self) {
        let now = now_ms();
        if now.saturating_sub(self.last_used.load(Ordering::Relaxed)) >= TOUCH_GRAIN_MS {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    /// The same entry keeping `encoded`: its body compressed, per encoding.
    pub fn with_encoded(mut self, encoded: Vec<(Encoding, Bytes)>) -> Self {
        self.encoded = encoded.into_boxed_slice();
        self
    }

    /// The body compressed in `encoding`, if it was when stored.
    pub fn encoded(&self, encoding: Encoding) -> Option<&Bytes> {
        self.encoded
            .iter()
            .find_map(|(e, bytes)| (*e == encoding).then_some(bytes))
    }

    /// Bytes it is weighed at: body, headers and tags.
    pub fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        let tags: usize = self.tags.iter().map(|t| t.len() + 16).sum();
        let encoded: usize = self.encoded.iter().map(|(_, b)| b.len() + 16).sum();
        (self.body.len() + encoded + headers + tags + 128) as u64
    }

    /// Its tags.
    pub fn tags(&self) -> &[Box<str>] {
        &self.tags
    }

    /// How old it is.
    pub fn age(&self) -> Duration {
        self.stored.elapsed()
    }

    /// Its freshness rules.
    pub fn freshness(&self) -> Freshness {
        self.freshness
    }

    /// Time left until it is stale (negative past that, in whole seconds, as
    /// `Cache-Status`'s `ttl` wants it).
    pub fn ttl_seconds(&self) -> i64 {
        let age = self.age().as_secs_f64();
        (self.freshness.ttl.as_secs_f64() - age).floor() as i64
    }

    /// Whether it is fresh.
    pub fn is_fresh(&self) -> bool {
        self.age() < self.freshness.ttl
    }

    /// Whether it may be served stale while one request refreshes it.
    pub fn within_stale_while_revalidate(&self) -> bool {
        self.age() < self.freshness.ttl + self.freshness.stale_while_revalidate
    }

    /// Whether it may be served because PHP-FPM failed.
    pub fn within_stale_if_error(&self) -> bool {
        self.age() < self.freshness.ttl + self.freshness.stale_if_error
    }

    /// The answer to a request with `request` headers: a 304 when its validators
    /// match, one range of a 200 (206, or 416 outside the body), else the whole answer.
    /// `Age` is set; `cache_status` goes in `Cache-Status`.
    pub fn answer(&self, request: &HeaderMap, cache_status: HeaderValue) -> Response<Bytes> {
        self.answer_in(request, cache_status, None)
    }

    /// As [`answer`](Self::answer), the whole page in `encoding` (the one the client
    /// negotiated) when the entry holds it compressed that way: `Content-Encoding` set,
    /// the `ETag` made weak, no `Accept-Ranges` (ranges are of the identity body).
    pub fn answer_in(
        &self,
        request: &HeaderMap,
        cache_status: HeaderValue,
        encoding: Option<Encoding>,
    ) -> Response<Bytes> {
        self.touch();
        let mut headers = self.headers.clone();
        headers.insert(header::AGE, HeaderValue::from(self.age().as_secs()));
        headers.insert(CACHE_STATUS, cache_status);
        let status_ok = self.status == StatusCode::OK;
        if status_ok && self.not_modified(request) {
            headers.remove(header::CONTENT_TYPE);
            return built(StatusCode::NOT_MODIFIED, headers, Bytes::new());
        }
        let len = self.body.len() as u64;
        if status_ok {
            if let Some(range) = request.get(header::RANGE).and_then(|r| r.to_str().ok()) {
                if let Some((status, body, content_range)) = self.range(range, len) {
                    headers.insert(header::CONTENT_RANGE, content_range);
                    return sized(status, headers, body);
                }
            }
            let copy = encoding.and_then(|e| Some(e).zip(self.encoded(e)));
            if let Some((encoding, body)) = copy {
                encode_headers(&mut headers, encoding);
                return sized(self.status, headers, body.clone());
            }
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        sized(self.status, headers, self.body.clone())
    }

    /// Whether `If-None-Match` (else `If-Modified-Since`) says the client's copy is
    /// current.
    fn not_modified(&self, request: &HeaderMap) -> bool {
        if let Some(tags) = request.get(header::IF_NONE_MATCH) {
            let Some(etag) = self.headers.get(header::ETAG) else {
                return false;
            };
            let ours = etag
                .as_bytes()
                .strip_prefix(b"W/")
                .unwrap_or(etag.as_bytes());
            return tags.as_bytes().split(|&b| b == b',').any(|tag| {
                let tag = tag.trim_ascii();
                tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == ours
            });
        }
        match (
            self.last_modified,
            request
                .get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok()),
        ) {
            (Some(modified), Some(since)) => modified <= since,
            _ => false,
        }
    }

    /// One range of the body: `(206, part, Content-Range)`, `(416, empty, */len)` when
    /// none of it is in the body; `None` to answer whole (several ranges, a bad header,
    /// or an `If-Range` that does not match).
    fn range(&self, range: &str, len: u64) -> Option<(StatusCode, Bytes, HeaderValue)> {
        let parsed = http_range_header::parse_range_header(range).ok()?;
        match parsed.validate(len) {
            Ok(ranges) if ranges.len() == 1 => {
                let (start, end) = (*ranges[0].start(), *ranges[0].end());
                let part = self.body.slice(start as usize..=end as usize);
                let value = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).ok()?;
                Some((StatusCode::PARTIAL_CONTENT, part, value))
            }
            Ok(_) => None,
            Err(_) => {
                let value = HeaderValue::from_str(&format!("bytes */{len}")).ok()?;
                Some((StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new(), value))
            }
        }
    }
}

/// An answer of `status` with `headers` and `body`.
fn built(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// [`built`], with the body's `Content-Length`.
fn sized(status: StatusCode, mut headers: HeaderMap, body: Bytes) -> Response<Bytes> {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
    built(status, headers, body)
}

/// RFC 9211's `Cache-Status` header.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(headers: &[(&'static str, &'static str)]) -> Entry {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(*n, HeaderValue::from_static(v));
        }
        let fresh = Freshness {
            ttl: Duration::from_secs(10),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        };
        Entry::new(
            StatusCode::OK,
            map,
            Bytes::from_static(b"0123456789"),
            fresh,
        )
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(*n, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn tags_are_read_and_hidden_from_clients() {
        let e = entry(&[("cache-tag", "post-1, home"), ("surrogate-key", "blog")]);
        assert_eq!(
            &*e.tags,
            &["post-1".into(), "home".into(), "blog".into()] as &[Box<str>]
        );
        let answer = e.answer(&HeaderMap::new(), HeaderValue::from_static("x"));
        assert!(answer.headers().get("cache-tag").is_none());
        assert_eq!(answer.headers()["content-length"], "10");
    }

    #[test]
    fn validators_give_304_and_ranges_206_or_416() {
        let e = entry(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sat, 01 Jan 2000 00:00:00 GMT"),
        ]);
        let status = HeaderValue::from_static("x");
        let answer = e.answer(
            &request(&[("if-none-match", "\"v0\", W/\"v1\"")]),
            status.clone(),
        );
        assert_eq!(answer.status(), StatusCode::NOT_MODIFIED);
        let answer = e.answer(
            &request(&[("if-modified-since", "Sun, 02 Jan 2000 00:00:00 GMT")]),
            status.clone(),
        );
        assert_eq!(answer.status(), StatusCode::NOT_MODIFIED);
        let answer = e.answer(&request(&[("range", "bytes=2-4")]), status.clone());
        assert_eq!(answer.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(&answer.body()[..], b"234");
        assert_eq!(answer.headers()["content-range"], "bytes 2-4/10");
        let answer = e.answer(&request(&[("range", "bytes=20-")]), status);
        assert_eq!(answer.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    }
}
