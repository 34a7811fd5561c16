//! The gateway's request handling as a `tower::Service`: route by Host to a tenant, then
//! serve a static file or forward to PHP-FPM with the tenant's params, and map the answer
//! back to HTTP. The server in [`crate::server`] mounts it; embedders can too.
//!
//! Flow: host → tenant (404 unknown, 503 suspended) → path → static file | PHP script |
//! redirect → CGI params (+ tenant params) → pool (fair queue per tenant) → FastCGI →
//! response mapping → client.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;

use crate::access::RequestRecord;
use crate::body::GatewayBody;
use crate::cgi::script::{self, Resolution};
use crate::error::GatewayError;
use crate::routing;
use crate::snapshot::{SharedState, Snapshot};

/// The client connection a request came in on. The server puts it in the request's
/// extensions; an embedder that does not gets `0.0.0.0:0` for both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client's address (the peer of the TCP connection).
    pub remote: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// Whether the connection was TLS (terminated in front of us or by an embedder).
    pub tls: bool,
    /// What our own TLS listener negotiated (`SSL_PROTOCOL`, `SSL_CIPHER`).
    pub tls_session: Option<crate::tls::TlsSession>,
}

impl Default for ConnInfo {
    fn default() -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Self {
            remote: unspecified,
            local: unspecified,
            tls: false,
            tls_session: None,
        }
    }
}

/// The gateway as a `tower::Service<http::Request<B>>`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GatewayService {
    state: Arc<SharedState>,
}

impl GatewayService {
    /// A service serving from `state`.
    pub fn new(state: Arc<SharedState>) -> Self {
        Self { state }
    }

    /// The shared state (current snapshot, telemetry).
    pub fn state(&self) -> &Arc<SharedState> {
        &self.state
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> tower::Service<Request<B>> for GatewayService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display + Send,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { Ok(handle(state, req, None).await) })
    }
}

impl GatewayService {
    /// Serves one request from a connection whose ends the caller knows. The server uses
    /// this instead of `tower::Service::call`: no extension map to allocate for the
    /// connection info, and the caller decides where the future lives (the server boxes
    /// it, so idle keep-alive connections do not carry it).
    pub fn serve_request<B>(
        &self,
        req: Request<B>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<GatewayBody>> + Send + 'static
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError> + std::fmt::Display + Send,
    {
        handle(self.state.clone(), req, Some(conn))
    }
}

/// Serves one request; every failure becomes a response here. `conn` falls back to the
/// request's [`ConnInfo`] extension.
async fn handle<B>(
    state: Arc<SharedState>,
    req: Request<B>,
    conn: Option<ConnInfo>,
) -> Response<GatewayBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display + Send,
{
    let snapshot = state.load();
    if let Some(answer) = crate::tls::listener::plain_http_answer(&state, &snapshot, &req, conn) {
        return answer;
    }
    let head = req.method() == Method::HEAD;
    let mut record = Box::new(RequestRecord::new(
        state.telemetry.clone(),
        req.method(),
        req.uri().path(),
    ));
    let response = match route(&snapshot, req, &mut record, conn).await {
        Ok(response) => response,
        Err(err) => {
            log_error(&err, record.tenant.as_deref());
            err.into_response()
        }
    };
    let mut response = response;
    finish_headers(&mut response);
    record.status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let status = parts.status;
    let bodiless = head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    Response::from_parts(parts, body.with_record(record, content_length, bodiless))
}

fn log_error(err: &GatewayError, tenant: Option<&str>) {
    let tenant = tenant.unwrap_or("-");
    match err.source() {
        crate::error::ErrorSource::Client => {
            tracing::debug!(
                tenant,
                status = err.status().as_u16(),
                detail = err.detail(),
                "request refused"
            )
        }
        crate::error::ErrorSource::Upstream => {
            tracing::warn!(
                tenant,
                status = err.status().as_u16(),
                detail = err.detail(),
                "upstream failed"
            )
        }
        crate::error::ErrorSource::Internal => {
            tracing::error!(
                tenant,
                status = err.status().as_u16(),
                detail = err.detail(),
                "internal error"
            )
        }
    }
}

/// Headers every response gets: our `Server`, and no `X-Powered-By`.
fn finish_headers(response: &mut Response<GatewayBody>) {
    let headers = response.headers_mut();
    // A scan of the few headers is cheaper than parsing and hashing the name to remove
    // it, and the header is usually absent (`expose_php = Off`).
    if headers.keys().any(|name| name == "x-powered-by") {
        headers.remove("x-powered-by");
    }
    headers.insert(header::SERVER, HeaderValue::from_static("fcgi-gateway"));
}

async fn route<B>(
    snapshot: &Snapshot,
    req: Request<B>,
    record: &mut RequestRecord,
    conn: Option<ConnInfo>,
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display + Send,
{
    let (parts, body) = req.into_parts();
    // hyper's buffer also holds the request line (see `server::REQUEST_LINE_ALLOWANCE`),
    // so the header limit itself is enforced here.
    let max_header_bytes = snapshot.config.server.max_header_bytes;
    if header_section_len(&parts.headers) > max_header_bytes {
        return Err(GatewayError::header_too_large(format!(
            "request headers over the {max_header_bytes}-byte limit"
        )));
    }
    // A proxy in front may have routed by the other Host line (RFC 9112 §3.2: 400).
    if parts.headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(GatewayError::bad_request("more than one Host header"));
    }
    let authority = routing::request_authority(&parts)
        .ok_or_else(|| GatewayError::not_found("request names no host"))?;
    let host = routing::normalize_host(authority)
        .ok_or_else(|| GatewayError::bad_request("invalid host"))?;
    let tenant = snapshot
        .registry
        .lookup(&host)
        .ok_or_else(|| GatewayError::not_found("no tenant for this host"))?
        .clone();
    record.tenant = Some(tenant.name.clone());
    if !tenant.enabled {
        return Ok(suspended(snapshot));
    }
    let config = &snapshot.config;
    let resolution = script::resolve(
        &config.fastcgi.root,
        &config.fastcgi.index,
        parts.uri.path(),
    )
    .map_err(|err| match err {
        script::ScriptError::BadRequest(why) => GatewayError::bad_request(why),
        script::ScriptError::Io(err) => GatewayError::internal(format!("resolving path: {err}")),
    })?;
    match resolution {
        Resolution::Static { file } => {
            let req = Request::from_parts(parts, ());
            crate::static_files::serve_file(&file, req).await
        }
        Resolution::RedirectToDir { location } => {
            let location = match parts.uri.query() {
                Some(query) => format!("{location}?{query}"),
                None => location,
            };
            let mut response = Response::new(GatewayBody::empty());
            *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
            let value = HeaderValue::from_str(&location)
                .map_err(|_| GatewayError::bad_request("unencodable redirect target"))?;
            response.headers_mut().insert(header::LOCATION, value);
            Ok(response)
        }
        Resolution::Forbidden => Err(GatewayError::forbidden("path is never served")),
        Resolution::NotFound => Err(GatewayError::not_found(
            "no such file and no front controller",
        )),
        Resolution::Php {
            script_name,
            script_path: _,
            path_info,
        } => {
            let php = crate::fastcgi::PhpRequest {
                snapshot,
                tenant: &tenant,
                authority,
                server_name: &host,
                script_name: &script_name,
                path_info: path_info.as_deref(),
            };
            crate::fastcgi::forward(php, &parts, body, record, conn).await
        }
    }
}

/// The size of the header section as sent over HTTP/1 (`name: value\r\n` per field).
fn header_section_len(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// The answer of a suspended tenant: 503, the configured page, `Retry-After`.
fn suspended(snapshot: &Snapshot) -> Response<GatewayBody> {
    let mut response = Response::new(GatewayBody::full(snapshot.suspended_page.clone()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(snapshot.config.server.retry_after.as_secs().max(1)),
    );
    response
}
