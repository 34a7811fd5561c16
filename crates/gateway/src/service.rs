//! The route step and the whole flow as a `tower::Service`: each request goes one way
//! through the steps, and only here are they put together.
//!
//! accept ([`crate::server`], [`ConnInfo`]) → **route**: host → tenant (404 unknown, 503
//! suspended), a fresh answer from the tenant's response cache
//! ([`crate::cached_origin::fresh_hit`]: nothing more to do), path → [`Resolution`]
//! ([`crate::resolve`]) → static file
//! ([`crate::static_files`]) | redirect | CGI mapping ([`crate::cgi`], the client from
//! [`Peer`]) → pool and FastCGI ([`crate::fastcgi`]) → private file handed over with
//! X-Accel-Redirect ([`crate::private_files`]) → response mapping ([`crate::response`])
//! → client. Every failure is a [`GatewayError`], answered in one
//! place ([`crate::error`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;

use crate::access::RequestRecord;
use crate::body::GatewayBody;
use crate::cached_origin::PhpScript;
use crate::compression::{ClientEncodings, Policy};
use crate::error::GatewayError;
use crate::peer::{ConnInfo, Peer};
use crate::resolve::{self, Resolution};
use crate::routing;
use crate::snapshot::{SharedState, Snapshot};
use crate::tenant::Tenant;

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
        let conn = req
            .extensions()
            .get::<ConnInfo>()
            .copied()
            .unwrap_or_default();
        Box::pin(async move { Ok(handle(state, req, conn).await) })
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
        handle(self.state.clone(), req, conn)
    }
}

/// Serves one request; every failure becomes a response here.
async fn handle<B>(
    state: Arc<SharedState>,
    req: Request<B>,
    conn: ConnInfo,
) -> Response<GatewayBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display + Send,
{
    let snapshot = state.load();
    if let Some(answer) = crate::https::plain_http::plain_http_answer(&state, &snapshot, &req, conn)
    {
        return answer;
    }
    let head = req.method() == Method::HEAD;
    let mut record = Box::new(RequestRecord::new(
        state.telemetry.clone(),
        req.method(),
        req.uri().path(),
    ));
    let client = ClientEncodings::of(req.headers());
    let mut tenant = None;
    let response = match serve(&state, &snapshot, req, conn, &mut record, &mut tenant).await {
        Ok(response) => response,
        Err(err) => {
            err.log(record.tenant.as_deref());
            err.into_response(snapshot.config.server.retry_after)
        }
    };
    let config = &snapshot.config;
    let policy = Policy {
        offered: config.compression_for(tenant.as_ref().and_then(|t| t.compression.as_deref())),
        min_bytes: config.server.compression_min_bytes,
    };
    crate::response::finish(response, record, head, &client, policy)
}

/// The flow, step after step. The record learns the tenant and the body length here, as
/// they are decided; PHP-FPM's time is filled in by the response body.
async fn serve<B>(
    state: &Arc<SharedState>,
    snapshot: &Arc<Snapshot>,
    req: Request<B>,
    conn: ConnInfo,
    record: &mut RequestRecord,
    tenant_out: &mut Option<Arc<Tenant>>,
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display + Send,
{
    let (parts, body) = req.into_parts();
    let config = &snapshot.config;
    let (cache, telemetry) = (&state.cache, &state.telemetry);
    // hyper's buffer also holds the request line (see `server::REQUEST_LINE_ALLOWANCE`),
    // so the header limit itself is enforced here.
    let max_header_bytes = config.server.max_header_bytes;
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
    *tenant_out = Some(tenant.clone());
    if !tenant.enabled {
        return Ok(suspended(snapshot));
    }
    let store = cache.tenant(&tenant.name);
    if let Some(store) = &store {
        let https = Peer::resolve(
            &conn,
            &parts.headers,
            authority,
            &config.server.trusted_proxies,
        )
        .https;
        let offered = config.compression_for(tenant.compression.as_deref());
        let has_body = !body.is_end_stream();
        if let Some(hit) =
            crate::cached_origin::fresh_hit(store, &parts, has_body, https, &host, offered, record)
        {
            return Ok(hit);
        }
    }
    match resolve::resolve(
        &config.fastcgi.root,
        &config.fastcgi.index,
        parts.uri.path(),
    )? {
        Resolution::Static { file } => {
            let req = Request::from_parts(parts, ());
            let offered = config.compression_for(tenant.compression.as_deref());
            crate::static_files::serve_file(&file, req, offered, !conn.tls).await
        }
        Resolution::RedirectToDir { location } => redirect(location, parts.uri.query()),
        Resolution::Forbidden => Err(GatewayError::forbidden("path is never served")),
        Resolution::NotFound => Err(GatewayError::not_found(
            "no such file and no front controller",
        )),
        Resolution::Php {
            script_name,
            script_path: _,
            path_info,
        } => {
            let script = PhpScript {
                snapshot: snapshot.clone(),
                tenant: tenant.clone(),
                authority: authority.to_owned(),
                host: host.into_owned(),
                script_name,
                path_info,
                conn,
            };
            crate::cached_origin::serve(script, store, parts, body, record, telemetry).await
        }
    }
}

/// The 301 that adds a directory's trailing slash, keeping the query.
fn redirect(location: String, query: Option<&str>) -> Result<Response<GatewayBody>, GatewayError> {
    let location = match query {
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
