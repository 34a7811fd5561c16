//! The admin API: a second HTTP listener (`[server] admin`, off when absent) to list,
//! add, replace, remove, suspend and resume tenants, reload the config, and read usage,
//! metrics and health, as JSON. `GET /openapi.json` describes it all.
//!
//! # Layout
//! - this file: the listener (HTTP/1.1 with hyper), bearer-token check, body limits and
//!   dispatch;
//! - [`route`]: method + path → [`route::Route`], pure;
//! - `tenants`: the tenant resources; edits go through
//!   [`ConfigDocument`](crate::config::ConfigDocument);
//! - `status`: reload, usage, metrics, health; `recent`: the last hour per tenant, sampled
//!   from the usage meter each minute;
//! - `dashboard`: the operator's web page (`GET /`, `/ui/…`), served without the token
//!   (it holds no data) and reading everything through this API;
//! - `error`: every failure mapped to a status and a JSON body in one place.
//!
//! # Invariants
//! - An edit is written to the config file (atomically, keeping comments) and then put
//!   in service with [`Reloader::reload`], under one mutex: the file and what is served
//!   never disagree for longer than an edit takes, a restart serves what the API said,
//!   and two edits never interleave.
//! - A refused edit writes nothing.
//! - No response and no log line carries a param value of a secret-looking name or the
//!   admin token: secrets are shown as `***`, and errors name keys, never values.
//! - With a token configured (required off loopback), every request needs
//!   `Authorization: Bearer <token>`, compared in constant time. The token is read from
//!   the config in service, so a reload rotates it; a reload that drops it turns
//!   authentication off only if the listener is bound to loopback (the address is bound
//!   once, at start, whatever a later file says).

mod cache;
mod dashboard;
mod error;
mod fleet_tenants;
mod recent;
mod route;
mod status;
mod tenants;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;

use error::ApiError;

use crate::config::AdminToken;
use crate::reload::Reloader;
use crate::server::accept;
use crate::snapshot::SharedState;
use route::{Miss, Route};

/// Largest request body accepted (a tenant is a few hundred bytes; 1 MiB leaves room for
/// large `PHP_VALUE` params and refuses a runaway upload).
pub const MAX_BODY: usize = 1 << 20;

/// How long an idle admin connection may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long shutdown waits for admin requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The OpenAPI 3.0 document of this API, served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The admin listener, bound and ready to serve.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    api: Arc<AdminApi>,
}

/// What every admin request works with.
#[derive(Debug)]
struct AdminApi {
    /// The snapshot in service (tenants, token, usage database) and the usage meter.
    state: Arc<SharedState>,
    /// Puts edits in service, and owns the reload counters and last reload error.
    reloader: Arc<Reloader>,
    /// Serializes edits: load, change, save and reload must run as one step, or two
    /// concurrent edits could each save a document without the other's change.
    edits: Arc<tokio::sync::Mutex<()>>,
    /// Whether the listener is bound to a loopback address. Config validation only
    /// sees the address in the file, so only then may a reload turn authentication off.
    loopback: bool,
    /// The last token in service: still required when a reload drops the token while
    /// the listener is bound off loopback.
    last_token: std::sync::Mutex<Option<AdminToken>>,
    /// The usage meter sampled each minute, for `GET /usage/recent`.
    recent: Arc<recent::RecentUsage>,
    /// In a fleet, the registry tenant writes go to (PostgreSQL); `None`: the file.
    fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl AdminServer {
    /// Serves on a listener already bound (inherited from systemd or a takeover).
    pub fn from_listener(
        listener: TcpListener,
        state: Arc<SharedState>,
        reloader: Arc<Reloader>,
    ) -> std::io::Result<AdminServer> {
        let loopback = listener.local_addr()?.ip().is_loopback();
        Ok(AdminServer {
            listener,
            api: Arc::new(AdminApi::new(state, reloader, loopback)),
        })
    }

    /// In a fleet: tenant writes go to `fleet`'s registry, and health, metrics and
    /// usage report it.
    pub fn with_fleet(mut self, fleet: Option<Arc<crate::fleet::Fleet>>) -> AdminServer {
        if let Some(api) = Arc::get_mut(&mut self.api) {
            api.fleet = fleet;
        }
        self
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then gives requests in flight a short grace.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let addr = self.listener.local_addr().ok();
        if let Some(addr) = addr {
            tracing::info!(%addr, "admin API listening");
        }
        let graceful = GracefulShutdown::new();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let mut shutdown = std::pin::pin!(shutdown);
        let sampler = tokio::spawn(recent::run_sampler(
            self.api.recent.clone(),
            self.api.state.telemetry.usage.clone(),
        ));
        while let Some((stream, remote)) = accept(&self.listener, &mut shutdown).await {
            let api = self.api.clone();
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(req, remote).await) }
            });
            let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    tracing::debug!(%remote, error = %err, "admin connection ended with an error");
                }
            });
        }
        drop(self.listener);
        sampler.abort();
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("admin API: grace period over; closing remaining connections");
        }
    }
}

impl AdminApi {
    fn new(state: Arc<SharedState>, reloader: Arc<Reloader>, loopback: bool) -> AdminApi {
        let token = state.load().config.server.admin_token.clone();
        let recent = Arc::new(recent::RecentUsage::default());
        recent.sample(&state.telemetry.usage);
        AdminApi {
            state,
            reloader,
            edits: Arc::new(tokio::sync::Mutex::new(())),
            loopback,
            last_token: std::sync::Mutex::new(token),
            recent,
            fleet: None,
        }
    }

    /// Answers one request and logs it (method, path, status: never the query or body).
    async fn handle<B>(&self, req: Request<B>, remote: SocketAddr) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let mut response = match self.respond(req).await {
            Ok(response) => response,
            Err(err) => {
                if err.status().is_server_error() {
                    tracing::error!(
                        target: "admin",
                        %method,
                        path,
                        error = %err,
                        "admin request failed"
                    );
                }
                err.into_response()
            }
        };
        let headers = response.headers_mut();
        // Answers carry the configuration: never from a cache.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        tracing::info!(
            target: "admin",
            %remote,
            %method,
            path,
            status = response.status().as_u16(),
            "admin request"
        );
        response
    }

    async fn respond<B>(&self, req: Request<B>) -> Result<Response<Full<Bytes>>, ApiError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // The dashboard's files hold no data: served without the token, which the page
        // then sends with each API call.
        if let Some(page) = dashboard::respond(req.method(), req.uri().path()) {
            return Ok(page);
        }
        self.authorize(req.headers())?;
        let route = match route::route(req.method(), req.uri().path()) {
            Ok(route) => route,
            Err(Miss::NotFound) => return Err(ApiError::NotFound),
            Err(Miss::MethodNotAllowed { allow }) => {
                return Err(ApiError::MethodNotAllowed { allow })
            }
            Err(Miss::Options { allow }) => {
                let mut response = Response::new(Full::default());
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                return Ok(response);
            }
        };
        if let Some(fleet) = self.fleet.clone() {
            match route {
                Route::GetTenant(name) => {
                    let mut response = tenants::show(&self.state, &name)?;
                    if let Some(tag) = fleet
                        .view()
                        .tenants
                        .get(&name)
                        .and_then(|t| fleet_tenants::etag(t.version))
                    {
                        response.headers_mut().insert(header::ETAG, tag);
                    }
                    return Ok(response);
                }
                Route::PutTenant(name) => {
                    let headers = req.headers().clone();
                    let body = read_json_body(req).await?;
                    return fleet_tenants::put(self, &fleet, &name, &headers, &body).await;
                }
                Route::DeleteTenant(name) => {
                    return fleet_tenants::delete(&fleet, &name, req.headers()).await
                }
                Route::Suspend(name) => {
                    return fleet_tenants::set_enabled(self, &fleet, &name, false, req.headers())
                        .await
                }
                Route::Resume(name) => {
                    return fleet_tenants::set_enabled(self, &fleet, &name, true, req.headers())
                        .await
                }
                Route::Usage => {
                    return status::usage_with(&self.state, req.uri().query(), Some(&fleet)).await;
                }
                Route::Metrics => {
                    return Ok(status::metrics_with(
                        &self.state,
                        &self.reloader,
                        Some(&fleet),
                    ));
                }
                Route::Health => {
                    return Ok(status::health_with(
                        &self.state,
                        &self.reloader,
                        Some(&fleet),
                    ));
                }
                _ => {}
            }
        }
        match route {
            Route::ListTenants => Ok(tenants::list(&self.state)),
            Route::GetTenant(name) => tenants::show(&self.state, &name),
            Route::PutTenant(name) => {
                let body = read_json_body(req).await?;
                tenants::put(self, &name, &body).await
            }
            Route::DeleteTenant(name) => tenants::delete(self, &name).await,
            Route::Suspend(name) => tenants::set_enabled(self, &name, false).await,
            Route::Resume(name) => tenants::set_enabled(self, &name, true).await,
            Route::PurgeCache(name) => {
                let body = read_json_body(req).await?;
                cache::purge(&self.state, &name, &body)
            }
            Route::Reload => status::reload(&self.reloader).await,
            Route::Usage => status::usage(&self.state, req.uri().query()).await,
            Route::UsageRecent => {
                status::usage_recent(&self.state, &self.recent, req.uri().query())
            }
            Route::UsageHourly => status::usage_hourly(&self.state, req.uri().query()).await,
            Route::Metrics => Ok(status::metrics(&self.state, &self.reloader)),
            Route::Upstreams => Ok(status::upstreams(&self.state)),
            Route::Health => Ok(status::health(&self.state, &self.reloader)),
            Route::OpenApi => Ok(raw_json(StatusCode::OK, OPENAPI)),
        }
    }

    /// The token requests must carry: the one in service (a reload rotates it), or,
    /// when a reload dropped it, the last one, unless the listener is on loopback.
    fn required_token(&self) -> Option<AdminToken> {
        let current = self.state.load().config.server.admin_token.clone();
        let mut last = self.last_token.lock().unwrap_or_else(|e| e.into_inner());
        match current {
            Some(token) => {
                *last = Some(token.clone());
                Some(token)
            }
            None if self.loopback => None,
            None => last.clone(),
        }
    }

    /// Checks `Authorization: Bearer <token>` when a token is required.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = self.required_token() else {
            return Ok(());
        };
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::MissingToken(
                "this API needs an `Authorization: Bearer <token>` header",
            ))?
            .as_bytes();
        let (scheme, credentials) = match value.iter().position(|&b| b == b' ') {
            Some(space) => (&value[..space], &value[space + 1..]),
            None => (value, &[][..]),
        };
        // The scheme is case-insensitive (RFC 9110 §11.1).
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(ApiError::MissingToken(
                "the Authorization scheme must be Bearer",
            ));
        }
        let presented = credentials.trim_ascii();
        if presented.is_empty() {
            return Err(ApiError::MissingToken(
                "the Authorization header has no token",
            ));
        }
        if token.matches(presented) {
            Ok(())
        } else {
            Err(ApiError::InvalidToken)
        }
    }
}

/// Reads a request body declared as JSON, up to [`MAX_BODY`] bytes.
async fn read_json_body<B>(req: Request<B>) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if !is_json(req.headers().get(header::CONTENT_TYPE)) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let too_large = ApiError::PayloadTooLarge { limit: MAX_BODY };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(too_large);
    }
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large),
        Err(err) => Err(ApiError::BadRequest(format!(
            "cannot read the request body: {err}"
        ))),
    }
}

/// Whether a `Content-Type` is `application/json` (parameters such as `charset` allowed).
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// A JSON response of `value`.
fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        // Our own types always serialize; should one not, say so in the documented shape.
        Err(err) => {
            tracing::error!(target: "admin", error = %err, "cannot encode an admin response");
            raw_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                "{\"error\":\"internal\",\"detail\":\"cannot encode the response\"}\n",
            )
        }
    }
}

/// A response whose body is already JSON text.
fn raw_json(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API over a config with `server` lines, and a way to swap in another.
    fn api_with(server: &str, loopback: bool) -> (tempfile::TempDir, AdminApi) {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with(dir.path(), server);
        let state = Arc::new(SharedState::new(
            crate::snapshot::Snapshot::build(config, None).unwrap(),
            Arc::default(),
        ));
        let reloader = Arc::new(Reloader::new(
            dir.path().join("tenants.toml"),
            state.clone(),
        ));
        (dir, AdminApi::new(state, reloader, loopback))
    }

    fn config_with(dir: &std::path::Path, server: &str) -> crate::config::Config {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[fastcgi]\nupstream = \"127.0.0.1:9\"\nroot = \".\"\n"
        );
        crate::config::Config::parse(&text, "tenants.toml", dir).unwrap()
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    #[test]
    fn a_reload_rotates_the_token_and_drops_it_only_on_loopback() {
        for loopback in [true, false] {
            let (dir, api) = api_with("admin = \"0.0.0.0:0\"\nadmin_token = \"one\"", loopback);
            assert!(api.authorize(&bearer("one")).is_ok());
            assert!(matches!(
                api.authorize(&HeaderMap::new()),
                Err(ApiError::MissingToken(_))
            ));

            let rotated = config_with(dir.path(), "admin = \"0.0.0.0:0\"\nadmin_token = \"two\"");
            api.state.apply(rotated).unwrap();
            assert!(matches!(
                api.authorize(&bearer("one")),
                Err(ApiError::InvalidToken)
            ));
            assert!(api.authorize(&bearer("two")).is_ok());

            // The file now says loopback without a token; the listener did not move.
            let dropped = config_with(dir.path(), "admin = \"127.0.0.1:0\"");
            api.state.apply(dropped).unwrap();
            assert_eq!(api.authorize(&HeaderMap::new()).is_ok(), loopback);
            assert!(api.authorize(&bearer("two")).is_ok());
        }
    }

    #[test]
    fn json_content_types_are_recognised() {
        let is = |v: &str| is_json(Some(&HeaderValue::from_str(v).unwrap()));
        assert!(is("application/json"));
        assert!(is("Application/JSON; charset=utf-8"));
        assert!(!is("application/x-www-form-urlencoded"));
        assert!(!is("text/json"));
        assert!(!is_json(None));
    }

    #[test]
    fn the_openapi_document_lists_every_route_and_only_those() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.0."));
        let paths = doc["paths"].as_object().unwrap();
        let mut documented: Vec<(String, String)> = paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| *k != "parameters")
                    .map(move |method| (path.clone(), method.to_ascii_uppercase()))
            })
            .collect();
        documented.sort();
        let mut routed: Vec<(String, String)> = route::PATHS
            .iter()
            .flat_map(|(path, methods)| {
                methods
                    .iter()
                    .map(move |m| (path.to_string(), m.to_string()))
            })
            .collect();
        routed.sort();
        assert_eq!(documented, routed);
    }

    #[test]
    fn the_documented_param_name_rules_are_the_configs() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let names =
            &doc["components"]["schemas"]["TenantInput"]["properties"]["params"]["x-propertyNames"];
        let reserved: Vec<&str> = names["not"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(reserved, crate::config::tenant::RESERVED_PARAM_NAMES);
        assert_eq!(names["pattern"], "^(?!HTTP_)[A-Za-z_][A-Za-z0-9_]*$");
    }

    #[test]
    fn every_error_code_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let codes = &doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"];
        let codes: Vec<&str> = codes
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        for err in [
            ApiError::MissingToken(""),
            ApiError::NotFound,
            ApiError::UnknownTenant(String::new()),
            ApiError::MethodNotAllowed { allow: "" },
            ApiError::UnsupportedMediaType,
            ApiError::PayloadTooLarge { limit: 0 },
            ApiError::BadRequest(String::new()),
            ApiError::InvalidJson(String::new()),
            ApiError::InvalidTenant(String::new()),
            ApiError::HostConflict(String::new()),
            ApiError::ConfigBroken(String::new()),
            ApiError::ChangedOnDisk(String::new()),
            ApiError::ReloadRejected(String::new()),
            ApiError::NotApplied(String::new()),
            ApiError::Internal(String::new()),
            ApiError::PreconditionFailed(String::new()),
            ApiError::RegistryUnavailable(String::new()),
        ] {
            assert!(
                codes.contains(&err.code()),
                "{} is not documented",
                err.code()
            );
        }
    }
}
