//! Response compression, part of response mapping: which encoding a client gets
//! (`Accept-Encoding` with q-values against the server's preference), which answers are
//! worth compressing, and the streaming [`Encoder`] the response body runs its bytes
//! through.
//!
//! Levels are the fast ones Caddy and nginx default to, since the gateway compresses on
//! the fly for every request: gzip 5 (Caddy's default; nginx's `gzip_comp_level` is 1),
//! brotli quality 4 (Caddy's `encode br` range; 11 is for precompressed files only) and
//! zstd 3 (zstd's own default, Caddy's "default" speed).
//!
//! Never compressed: answers that already carry a `Content-Encoding`, ranges (a request
//! with `Range`, or a 206), `text/event-stream`, answers whose script sent
//! `X-Accel-Buffering: no` or `Cache-Control: no-transform`, bodies under `compression_min_bytes` (judged by
//! `Content-Length`; a streamed answer without one is compressed). The encoder flushes
//! whenever the source has nothing more ready, so what PHP flushes reaches the client.

use std::io::{self, Write};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use serde::{Deserialize, Serialize};

/// gzip level (flate2's scale 0-9).
pub const GZIP_LEVEL: u32 = 5;
/// Brotli quality (0-11).
pub const BROTLI_QUALITY: u32 = 4;
/// Brotli window (log2 of its size): 512 KiB, ngx_brotli's default, not the encoder's
/// 4 MiB, since every response being compressed holds one.
const BROTLI_LGWIN: u32 = 19;
/// zstd window (log2), 512 KiB for the same reason (level 3 would take 2 MiB).
const ZSTD_WINDOW_LOG: u32 = 19;
/// zstd level (1-22).
pub const ZSTD_LEVEL: i32 = 3;
/// How much compressed output is gathered before it is sent without waiting for a flush.
const OUTPUT_CHUNK: usize = 16 << 10;

/// A content coding the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum Encoding {
    /// Zstandard (RFC 8878).
    #[serde(rename = "zstd")]
    Zstd,
    /// Brotli (RFC 7932).
    #[serde(rename = "br")]
    Brotli,
    /// gzip (RFC 1952).
    #[serde(rename = "gzip")]
    Gzip,
}

impl Encoding {
    /// The token in `Accept-Encoding` and `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The suffix of a precompressed sidecar file (`style.css.br`).
    pub fn file_suffix(self) -> &'static str {
        match self {
            Encoding::Zstd => "zst",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gz",
        }
    }
}

/// Default for `[server] compression`: every encoding, best ratio first.
pub const DEFAULT_ENCODINGS: [Encoding; 3] = [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];
/// Default for `[server] compression_min_bytes`: below this a body is sent as it is.
pub const DEFAULT_MIN_BYTES: u64 = 1024;

/// The encoding the client gets: among `offered` (the server's order, which breaks
/// q-value ties), the one `accept` gives the highest q-value, `*` standing for any
/// encoding not named. `None` means identity: nothing offered is acceptable, or the
/// client sent no `Accept-Encoding`.
pub fn negotiate(accept: Option<&HeaderValue>, offered: &[Encoding]) -> Option<Encoding> {
    let accept = accept?.to_str().ok()?;
    let mut best: Option<(Encoding, u16)> = None;
    for &encoding in offered {
        let mut named = None;
        let mut star = None;
        for item in accept.split(',') {
            let mut fields = item.split(';');
            let token = fields.next().unwrap_or("").trim();
            let q = fields
                .find_map(|param| {
                    let (name, value) = param.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| parse_qvalue(value.trim()))
                })
                .unwrap_or(Some(1000));
            let Some(q) = q else { continue };
            if token.eq_ignore_ascii_case(encoding.as_str())
                || (encoding == Encoding::Gzip && token.eq_ignore_ascii_case("x-gzip"))
            {
                named = Some(named.map_or(q, |n: u16| n.max(q)));
            } else if token == "*" {
                star = Some(q);
            }
        }
        let q = named.or(star).unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((encoding, q));
        }
    }
    best.map(|(encoding, _)| encoding)
}

/// Whether `accept` names `encoding` itself with a q-value above 0 (`*` does not count).
pub fn names(accept: &HeaderValue, encoding: Encoding) -> bool {
    let Ok(accept) = accept.to_str() else {
        return false;
    };
    accept.split(',').any(|item| {
        let mut fields = item.split(';');
        let token = fields.next().unwrap_or("").trim();
        token.eq_ignore_ascii_case(encoding.as_str())
            && fields
                .find_map(|param| {
                    let (name, value) = param.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| parse_qvalue(value.trim()))
                })
                .unwrap_or(Some(1000))
                .is_some_and(|q| q > 0)
    })
}

/// A q-value (RFC 9110 §12.4.2) in thousandths; `None` when malformed.
fn parse_qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for i in 0..3 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| u16::from(b - b'0'));
        thousandths = thousandths * 10 + digit;
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// What compression makes of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not a kind of answer that is ever compressed: no `Vary` either.
    Never,
    /// Would be compressed for another request (another `Accept-Encoding`, a bigger
    /// body): it varies by `Accept-Encoding`, but goes as it is.
    VaryOnly,
    /// Compress it.
    Compress,
}

/// Judges an answer by its status and headers. `range` says the request asked for a
/// range; `accepted` says the client accepts an encoding the server offers.
pub fn judge(
    status: StatusCode,
    headers: &HeaderMap,
    range: bool,
    accepted: bool,
    min_bytes: u64,
) -> Verdict {
    if headers.contains_key(header::CONTENT_ENCODING)
        || forbids_transform(headers)
        || status == StatusCode::PARTIAL_CONTENT
        || headers.contains_key(header::CONTENT_RANGE)
        || headers
            .get("x-accel-buffering")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no"))
    {
        return Verdict::Never;
    }
    match headers.get(header::CONTENT_TYPE) {
        Some(content_type) if !is_compressible_type(content_type) => return Verdict::Never,
        // A 304 carries no body and usually no type: it stands for the 200 it validates,
        // which caches must know varies.
        None if status != StatusCode::NOT_MODIFIED => return Verdict::Never,
        _ => {}
    }
    if !accepted || range || status == StatusCode::NOT_MODIFIED {
        return Verdict::VaryOnly;
    }
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len < min_bytes);
    if small || status.is_informational() || status == StatusCode::NO_CONTENT {
        Verdict::VaryOnly
    } else {
        Verdict::Compress
    }
}

/// `Cache-Control: no-transform` (RFC 9111 §5.2.2.6): the script wants its bytes as
/// they are.
fn forbids_transform(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    })
}

/// Text, JSON, JavaScript, XML, SVG, wasm and fonts; never `text/event-stream`, whose
/// events must not wait in an encoder.
pub fn is_compressible_type(content_type: &HeaderValue) -> bool {
    let Ok(text) = content_type.to_str() else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    match kind {
        "text" => sub != "event-stream",
        "font" => true,
        "image" => sub == "svg+xml" || sub == "x-icon" || sub == "vnd.microsoft.icon",
        "application" => {
            matches!(
                sub,
                "json"
                    | "javascript"
                    | "x-javascript"
                    | "ecmascript"
                    | "xml"
                    | "wasm"
                    | "manifest+json"
                    | "vnd.ms-fontobject"
                    | "x-font-ttf"
                    | "x-font-otf"
                    | "x-font-opentype"
                    | "font-woff"
                    | "x-httpd-php"
                    | "graphql-response+json"
            ) || sub.ends_with("+json")
                || sub.ends_with("+xml")
        }
        _ => false,
    }
}

/// Adds `Accept-Encoding` to `Vary` unless it is there already (or `Vary: *`).
pub fn add_vary(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|f| f == "*" || f.eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// The headers of an answer whose body is re-encoded: `Content-Encoding` set, the length
/// gone (it is not known ahead), a strong `ETag` made weak (the bytes differ, the meaning
/// does not; nginx does the same), `Accept-Ranges` gone (ranges of the encoded body are
/// not offered).
pub fn encode_headers(headers: &mut HeaderMap, encoding: Encoding) {
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.as_str()),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    if let Some(etag) = headers.get(header::ETAG) {
        if etag.as_bytes().starts_with(b"\"") {
            let mut weak = Vec::with_capacity(etag.len() + 2);
            weak.extend_from_slice(b"W/");
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                headers.insert(header::ETAG, weak);
            }
        }
    }
    add_vary(headers);
}

/// A streaming compressor writing into memory: bytes go in with [`write`](Self::write),
/// compressed bytes come out of [`take`](Self::take), [`flush`](Self::flush) (everything
/// written so far becomes decodable) and [`finish`](Self::finish).
pub struct Encoder {
    // `None` once finished.
    state: Option<State>,
    // Input written since the last flush: a flush with nothing new would only add bytes.
    unflushed: bool,
}

enum State {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.state {
            Some(State::Gzip(_)) => "gzip",
            Some(State::Brotli(_)) => "br",
            Some(State::Zstd(_)) => "zstd",
            None => "finished",
        };
        f.debug_struct("Encoder").field("kind", &kind).finish()
    }
}

impl Encoder {
    /// An encoder for `encoding` at the gateway's level for it.
    pub fn new(encoding: Encoding) -> io::Result<Self> {
        let state = match encoding {
            Encoding::Gzip => State::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Encoding::Brotli => State::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                BROTLI_QUALITY,
                BROTLI_LGWIN,
            ))),
            Encoding::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
                encoder.window_log(ZSTD_WINDOW_LOG)?;
                State::Zstd(encoder)
            }
        };
        Ok(Self {
            state: Some(state),
            unflushed: false,
        })
    }

    /// Compresses `data` (output may stay inside the encoder until a flush).
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.unflushed = true;
        match &mut self.state {
            Some(State::Gzip(e)) => e.write_all(data),
            Some(State::Brotli(e)) => e.write_all(data),
            Some(State::Zstd(e)) => e.write_all(data),
            None => Err(io::Error::other("write after finish")),
        }
    }

    /// Compressed bytes ready to send (possibly none).
    pub fn take(&mut self) -> Bytes {
        let out = match &mut self.state {
            Some(State::Gzip(e)) => e.get_mut(),
            Some(State::Brotli(e)) => e.get_mut(),
            Some(State::Zstd(e)) => e.get_mut(),
            None => return Bytes::new(),
        };
        Bytes::from(std::mem::take(out))
    }

    /// How many compressed bytes wait to be taken.
    pub fn buffered(&self) -> usize {
        match &self.state {
            Some(State::Gzip(e)) => e.get_ref().len(),
            Some(State::Brotli(e)) => e.get_ref().len(),
            Some(State::Zstd(e)) => e.get_ref().len(),
            None => 0,
        }
    }

    /// Whether input was written since the last flush.
    pub fn has_unflushed(&self) -> bool {
        self.unflushed
    }

    /// Makes everything written so far decodable and returns the compressed bytes.
    pub fn flush(&mut self) -> io::Result<Bytes> {
        match &mut self.state {
            Some(State::Gzip(e)) => e.flush()?,
            Some(State::Brotli(e)) => e.flush()?,
            Some(State::Zstd(e)) => e.flush()?,
            None => {}
        }
        self.unflushed = false;
        Ok(self.take())
    }

    /// Ends the stream and returns the last compressed bytes; later calls return none.
    pub fn finish(&mut self) -> io::Result<Bytes> {
        let out = match self.state.take() {
            Some(State::Gzip(e)) => e.finish()?,
            Some(State::Brotli(mut e)) => {
                e.flush()?;
                e.into_inner()
            }
            Some(State::Zstd(e)) => e.finish()?,
            None => Vec::new(),
        };
        self.unflushed = false;
        Ok(Bytes::from(out))
    }

    /// Whether [`finish`](Self::finish) was called.
    pub fn is_finished(&self) -> bool {
        self.state.is_none()
    }

    /// Whether enough output gathered to be worth sending before the next flush.
    pub(crate) fn output_due(&self) -> bool {
        self.buffered() >= OUTPUT_CHUNK
    }
}

/// What compression needs to know of the request, taken before the request is consumed.
#[derive(Debug, Clone, Default)]
pub struct ClientEncodings {
    /// The request's `Accept-Encoding`.
    pub(crate) accept: Option<HeaderValue>,
    /// Whether the request has a `Range`.
    pub(crate) range: bool,
}

impl ClientEncodings {
    /// Reads the request's headers.
    pub fn of(headers: &HeaderMap) -> Self {
        Self {
            accept: headers.get(header::ACCEPT_ENCODING).cloned(),
            range: headers.contains_key(header::RANGE),
        }
    }
}

/// The server's compression settings for one answer (the tenant's or the server's).
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Encodings offered, most preferred first; empty: off.
    pub offered: &'a [Encoding],
    /// Smallest `Content-Length` worth compressing.
    pub min_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn accept(v: &'static str) -> HeaderValue {
        HeaderValue::from_static(v)
    }

    #[test]
    fn negotiation_follows_q_values_then_server_order() {
        let all = DEFAULT_ENCODINGS;
        let pick = |v: &'static str| negotiate(Some(&accept(v)), &all);
        assert_eq!(pick("gzip, deflate, br, zstd"), Some(Encoding::Zstd));
        assert_eq!(pick("gzip, br;q=0.9"), Some(Encoding::Gzip));
        assert_eq!(pick("br;q=0.5, gzip;q=0.4"), Some(Encoding::Brotli));
        assert_eq!(pick("zstd;q=0, br;q=0, gzip;q=0"), None);
        assert_eq!(pick("*"), Some(Encoding::Zstd));
        assert_eq!(pick("*;q=0.1, zstd;q=0"), Some(Encoding::Brotli));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("deflate"), None);
        assert_eq!(pick("GZIP;Q=1.000"), Some(Encoding::Gzip));
        assert_eq!(pick("gzip;q=2"), None);
        assert_eq!(negotiate(None, &all), None);
        assert_eq!(
            negotiate(
                Some(&accept("gzip, br")),
                &[Encoding::Brotli, Encoding::Gzip]
            ),
            Some(Encoding::Brotli)
        );
        assert_eq!(negotiate(Some(&accept("zstd")), &[]), None);
        assert!(names(&accept("gzip, br;q=0.5"), Encoding::Brotli));
        assert!(!names(&accept("*, br;q=0"), Encoding::Brotli));
        assert!(!names(&accept("*"), Encoding::Gzip));
    }

    #[test]
    fn judge_skips_encoded_ranges_streams_and_small_bodies() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        let html = headers(&[("content-type", "text/html; charset=UTF-8")]);
        assert_eq!(
            judge(StatusCode::OK, &html, false, true, 1024),
            Verdict::Compress
        );
        assert_eq!(
            judge(StatusCode::OK, &html, false, false, 1024),
            Verdict::VaryOnly
        );
        assert_eq!(
            judge(StatusCode::OK, &html, true, true, 1024),
            Verdict::VaryOnly
        );
        assert_eq!(
            judge(StatusCode::PARTIAL_CONTENT, &html, true, true, 1024),
            Verdict::Never
        );
        let small = headers(&[
            ("content-type", "application/json"),
            ("content-length", "10"),
        ]);
        assert_eq!(
            judge(StatusCode::OK, &small, false, true, 1024),
            Verdict::VaryOnly
        );
        for never in [
            headers(&[("content-type", "text/html"), ("content-encoding", "gzip")]),
            headers(&[("content-type", "text/event-stream")]),
            headers(&[("content-type", "text/html"), ("x-accel-buffering", "no")]),
            headers(&[
                ("content-type", "text/html"),
                ("cache-control", "public, no-transform"),
            ]),
            headers(&[("content-type", "image/png")]),
            headers(&[]),
        ] {
            assert_eq!(
                judge(StatusCode::OK, &never, false, true, 0),
                Verdict::Never
            );
        }
        assert_eq!(
            judge(StatusCode::NOT_MODIFIED, &headers(&[]), false, true, 0),
            Verdict::VaryOnly
        );
    }

    #[test]
    fn compressible_types_cover_text_json_js_xml_svg_wasm_fonts() {
        for t in [
            "text/html",
            "text/css; charset=utf-8",
            "application/json",
            "application/ld+json",
            "application/javascript",
            "application/xml",
            "application/atom+xml",
            "image/svg+xml",
            "application/wasm",
            "font/ttf",
            "font/otf",
        ] {
            assert!(is_compressible_type(&HeaderValue::from_static(t)), "{t}");
        }
        for t in [
            "image/png",
            "font",
            "application/octet-stream",
            "text/event-stream",
            "video/mp4",
        ] {
            assert!(!is_compressible_type(&HeaderValue::from_static(t)), "{t}");
        }
    }

    #[test]
    fn encoded_headers_weaken_the_etag_and_drop_the_length() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5000"));
        headers.insert(header::VARY, HeaderValue::from_static("Cookie"));
        encode_headers(&mut headers, Encoding::Brotli);
        assert_eq!(headers[header::ETAG], "W/\"abc\"");
        assert_eq!(headers[header::CONTENT_ENCODING], "br");
        assert!(!headers.contains_key(header::CONTENT_LENGTH));
        let vary: Vec<_> = headers.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Cookie", "Accept-Encoding"]);
        add_vary(&mut headers);
        assert_eq!(headers.get_all(header::VARY).iter().count(), 2);
    }

    #[test]
    fn every_encoder_round_trips_and_flushes_decodable_output() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {i} of the page\n").into_bytes())
            .collect();
        for encoding in DEFAULT_ENCODINGS {
            let mut encoder = Encoder::new(encoding).unwrap();
            let mut wire = Vec::new();
            encoder.write(&text[..1000]).unwrap();
            let flushed = encoder.flush().unwrap();
            assert!(!flushed.is_empty(), "{encoding:?} flush gave nothing");
            wire.extend_from_slice(&flushed);
            // What was flushed decodes on its own to what was written.
            let partial = decode_prefix(encoding, &wire);
            assert_eq!(&partial[..], &text[..1000], "{encoding:?}");
            encoder.write(&text[1000..]).unwrap();
            wire.extend_from_slice(&encoder.take());
            wire.extend_from_slice(&encoder.finish().unwrap());
            assert!(encoder.is_finished());
            assert!(wire.len() < text.len() / 4, "{encoding:?}: {}", wire.len());
            assert_eq!(decode_prefix(encoding, &wire), text, "{encoding:?}");
        }
    }

    /// Decodes as much of `wire` as it holds (a flushed stream has no end yet).
    fn decode_prefix(encoding: Encoding, wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let mut reader: Box<dyn Read> = match encoding {
            Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(wire)),
            Encoding::Brotli => Box::new(brotli::Decompressor::new(wire, 4096)),
            Encoding::Zstd => Box::new(zstd::stream::read::Decoder::new(wire).unwrap()),
        };
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    }
}
