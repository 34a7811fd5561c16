//! The async client: a [`Request`] goes out over a [`Connection`] (alone or from a
//! [`Pool`](crate::Pool)), and a [`Response`] comes back as soon as its CGI head is parsed,
//! with the body as a stream.

mod body;
pub(crate) mod connection;
pub(crate) mod stderr;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::Empty;

pub use body::ResponseBody;
pub use connection::Connection;
pub use stderr::StderrSink;

use crate::proto::params::Params;
use crate::proto::response::DEFAULT_MAX_HEAD_LEN;
use crate::upstream::Upstream;

/// Settings of one connection's exchanges.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Give up when the server sends (or accepts) no bytes for this long.
    pub read_timeout: Duration,
    /// Largest CGI response head accepted.
    pub max_head_len: usize,
    /// Ask the server to keep the connection open (FCGI_KEEP_CONN) so it can be reused.
    pub keep_conn: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(60),
            max_head_len: DEFAULT_MAX_HEAD_LEN,
            keep_conn: true,
        }
    }
}

pub use crate::keepalive::QueueKey;

/// A FastCGI request: params, a body, and how to queue it.
///
/// The body is any [`http_body::Body`]; it is streamed to the server as STDIN, never
/// gathered in memory. PHP-FPM needs `CONTENT_LENGTH` among the params to read a body.
pub struct Request<B = Empty<Bytes>> {
    pub(crate) params: Params,
    pub(crate) body: B,
    pub(crate) queue: Option<QueueKey>,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) replayable: Option<bool>,
    pub(crate) stderr: Option<StderrSink>,
}

impl Request<Empty<Bytes>> {
    /// A request with no body.
    pub fn new(params: Params) -> Self {
        Self {
            params,
            body: Empty::new(),
            queue: None,
            max_concurrency: None,
            replayable: None,
            stderr: None,
        }
    }
}

impl<B> Request<B> {
    /// Replaces the body.
    pub fn with_body<B2>(self, body: B2) -> Request<B2> {
        Request {
            params: self.params,
            body,
            queue: self.queue,
            max_concurrency: self.max_concurrency,
            replayable: self.replayable,
            stderr: self.stderr,
        }
    }

    /// Waits for a pooled connection in `key`'s queue, and holds at most `max_concurrency`
    /// connections at once for that key. Queues share the pool fairly (see [`crate::Pool`]).
    pub fn queue(mut self, key: QueueKey, max_concurrency: Option<usize>) -> Self {
        self.queue = Some(key);
        self.max_concurrency = max_concurrency;
        self
    }

    /// Where the server's STDERR lines go (default: `tracing` at warn level).
    pub fn stderr(mut self, sink: StderrSink) -> Self {
        self.stderr = Some(sink);
        self
    }

    /// Whether the request may be sent again on a fresh connection when a reused one
    /// fails before any response byte. Defaults to: no body and an idempotent
    /// `REQUEST_METHOD` (GET, HEAD, OPTIONS, TRACE), as Go's net/http decides.
    ///
    /// A request with a body is never replayed, whatever this says: the body is streamed
    /// out, not kept, so a replay could only send it empty.
    pub fn replayable(mut self, replayable: bool) -> Self {
        self.replayable = Some(replayable);
        self
    }

    /// The params.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The params, to change.
    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }
}

impl<B: http_body::Body> Request<B> {
    pub(crate) fn is_replayable(&self) -> bool {
        self.body.is_end_stream()
            && self.replayable.unwrap_or_else(|| {
                matches!(
                    self.params.get("REQUEST_METHOD"),
                    Some(b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE")
                )
            })
    }
}

/// A response whose CGI head has arrived; the body is still on the wire.
#[derive(Debug)]
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: ResponseBody,
    upstream: Arc<Upstream>,
}

impl Response {
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: ResponseBody,
        upstream: Arc<Upstream>,
    ) -> Self {
        Self {
            status,
            headers,
            body,
            upstream,
        }
    }

    /// The server that answered (for the access log): with several servers in a pool,
    /// the one chosen, or the one a retry went to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// From the CGI `Status:` header (302 for a bare `Location:`, else 200).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The CGI headers, `Status` excluded.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body stream. Dropping it before its end closes the connection, which is how
    /// PHP-FPM learns to stop the script.
    pub fn into_body(self) -> ResponseBody {
        self.body
    }

    /// Status, headers and body.
    pub fn into_parts(self) -> (StatusCode, HeaderMap, ResponseBody) {
        (self.status, self.headers, self.body)
    }

    /// Reads the whole body into memory. For tests and small responses only.
    pub async fn collect(self) -> Result<Bytes, crate::Error> {
        use http_body_util::BodyExt;
        Ok(self.body.collect().await?.to_bytes())
    }
}
