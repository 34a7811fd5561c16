//! The PHP step with the response cache in front of it (route → **cache → CGI mapping →
//! pool and FastCGI** → response mapping): a tenant with a cache gets fresh answers from
//! [`crate::cache`], one PHP call per key on a miss (its answer stored when PHP allows
//! it), stale answers while one background request refreshes them or while PHP-FPM
//! fails, and `Cache-Status` on every answer. Tenants without a cache, and requests that
//! bypass it, go to PHP as they always did ([`uncached`]).
//!
//! The cache knows nothing of PHP: this module asks it, calls PHP, and hands it the
//! answer.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Method, Request, Response};
use http_body::Body;
use http_body_util::{Either, Empty};

use crate::access::{RequestRecord, Telemetry};
use crate::body::{GatewayBody, ReadAhead};
use crate::cache::{policy, status, Entry, Fill, Lookup, RequestKey, TenantStore, CACHE_STATUS};
use crate::cgi::CgiRequest;
use crate::compression::{judge, negotiate, Encoder, Encoding, Verdict};
use crate::error::{ErrorKind, GatewayError};
use crate::fastcgi::{self, RequestBody};
use crate::peer::{ConnInfo, Peer};
use crate::snapshot::Snapshot;
use crate::spool::{SpoolLimits, TimedBody};
use crate::tenant::Tenant;
use crate::usage::CacheOutcome;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One PHP script to run for a tenant: everything but the request itself, owned, so a
/// background refresh can run it after its request is answered.
#[derive(Debug, Clone)]
pub(crate) struct PhpScript {
    /// The snapshot the request is served from (config and pools).
    pub snapshot: Arc<Snapshot>,
    /// The tenant.
    pub tenant: Arc<Tenant>,
    /// The authority as sent (`HTTP_HOST`).
    pub authority: String,
    /// The normalised host (`SERVER_NAME`).
    pub host: String,
    /// `SCRIPT_NAME`.
    pub script_name: String,
    /// `PATH_INFO`.
    pub path_info: Option<String>,
    /// The client connection.
    pub conn: ConnInfo,
}

impl PhpScript {
    /// The encodings the tenant's answers may be compressed in, preferred first.
    fn offered(&self) -> &[Encoding] {
        self.snapshot
            .config
            .compression_for(self.tenant.compression.as_deref())
    }

    fn peer(&self, parts: &Parts) -> Peer {
        Peer::resolve(
            &self.conn,
            &parts.headers,
            &self.authority,
            &self.snapshot.config.server.trusted_proxies,
        )
    }

    /// Sends the request to PHP-FPM; the answer once PHP's headers are in.
    async fn fetch<B>(
        &self,
        parts: &Parts,
        body: RequestBody<B>,
        content_length: Option<u64>,
    ) -> Result<Response<GatewayBody>, GatewayError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError> + std::fmt::Display + Send,
    {
        let config = &self.snapshot.config;
        let cgi = CgiRequest {
            tenant: &self.tenant,
            parts,
            authority: &self.authority,
            server_name: &self.host,
            script_name: &self.script_name,
            path_info: self.path_info.as_deref(),
            document_root: &config.fastcgi.fpm_root,
            peer: self.peer(parts),
            content_length,
        };
        let pool = self.snapshot.pool_for(self.tenant.upstream.as_deref());
        fastcgi::forward(pool, &cgi, body).await
    }

    /// A GET with no body, as the cache fills with.
    async fn fetch_bodiless(&self, parts: &Parts) -> Result<Response<GatewayBody>, GatewayError> {
        let timeout = self.snapshot.config.server.body_timeout;
        let body: RequestBody<Empty<Bytes>> = Either::Left(TimedBody::new(Empty::new(), timeout));
        self.fetch(parts, body, None).await
    }
}

/// A fresh answer from the tenant's cache (`store`) for a request that may be answered
/// from it, looked up before anything else is done for the request (no file system
/// check, no CGI mapping): what keeps a hit cheap. Only PHP's answers are stored, so a
/// URL found here mapped to a script when it was stored; a change of root or index
/// drops every entry. `None`: the request goes the whole way, where a miss is filled.
pub(crate) fn fresh_hit(
    store: &TenantStore,
    parts: &Parts,
    has_body: bool,
    https: bool,
    host: &str,
    offered: &[Encoding],
    record: &mut RequestRecord,
) -> Option<Response<GatewayBody>> {
    if has_body || policy::request_bypass(&parts.method, &parts.headers, store.settings()).is_some()
    {
        return None;
    }
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let key = RequestKey {
        https,
        host,
        target,
        headers: &parts.headers,
    };
    let entry = store.fresh(&key)?;
    record.cache = CacheOutcome::Hit;
    Some(from_entry(
        &entry,
        parts,
        status::hit(&entry, None),
        offered,
    ))
}

/// Runs `script` for the request, through the tenant's cache when it has one (`store`).
pub(crate) async fn serve<B>(
    script: PhpScript,
    store: Option<Arc<TenantStore>>,
    parts: Parts,
    body: B,
    record: &mut RequestRecord,
    telemetry: &Arc<Telemetry>,
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display + Send,
{
    let Some(store) = store else {
        return uncached(&script, parts, body, record).await;
    };
    let bypass = policy::request_bypass(&parts.method, &parts.headers, store.settings())
        .or_else(|| (!body.is_end_stream()).then_some("request-body"));
    if let Some(reason) = bypass {
        let mut response = uncached(&script, parts, body, record).await?;
        response
            .headers_mut()
            .insert(CACHE_STATUS, status::bypass(reason));
        return Ok(response);
    }
    cached(script, store, parts, record, telemetry).await
}

/// The PHP step without the cache: the request body as the tenant wants it sent, PHP's
/// answer, and a private file it hands over.
pub(crate) async fn uncached<B>(
    script: &PhpScript,
    parts: Parts,
    body: B,
    record: &mut RequestRecord,
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display + Send,
{
    let snapshot = &script.snapshot;
    let config = &snapshot.config;
    let buffering = script
        .tenant
        .request_buffering
        .unwrap_or(config.default_request_buffering);
    let limits = SpoolLimits {
        max_body: config.server.max_body,
        body_timeout: config.server.body_timeout,
        temp_dir: config.server.temp_dir.as_deref(),
        max_spool_bytes: config.server.max_spool_bytes,
        usage: &snapshot.spool_usage,
    };
    let (body, content_length) =
        fastcgi::request_body(&parts.headers, body, buffering, &limits).await?;
    record.bytes_in = content_length.unwrap_or(0);
    let response = script.fetch(&parts, body, content_length).await?;
    crate::private_files::intercept(response, &script.tenant, &parts, record, !script.conn.tls)
        .await
}

/// A cacheable request: from the cache, or from PHP with the answer stored.
async fn cached(
    script: PhpScript,
    store: Arc<TenantStore>,
    mut parts: Parts,
    record: &mut RequestRecord,
    telemetry: &Arc<Telemetry>,
) -> Result<Response<GatewayBody>, GatewayError> {
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let https = script.peer(&parts).https;
    let key = RequestKey {
        https,
        host: &script.host,
        target: &target,
        headers: &parts.headers,
    };
    let (fill, stale, reason) = match store.lookup(&key).await {
        Lookup::Fresh { entry, .. } => {
            record.cache = CacheOutcome::Hit;
            return Ok(from_entry(
                &entry,
                &parts,
                status::hit(&entry, None),
                script.offered(),
            ));
        }
        Lookup::Stale { entry, refresh } => {
            record.cache = CacheOutcome::Stale;
            let status = status::hit(&entry, Some("stale-while-revalidate"));
            let response = from_entry(&entry, &parts, status, script.offered());
            if let Some(fill) = refresh {
                refresh_in_background(script, fill, &parts, telemetry.clone());
            }
            return Ok(response);
        }
        Lookup::Miss {
            fill,
            stale,
            reason,
        } => (fill, stale, reason),
    };
    record.cache = CacheOutcome::Miss;
    let Some(fill) = fill else {
        // Another request held the key past the wait: answer uncached.
        let mut response = fetch_or_stale(&script, &parts, stale.as_ref(), record)
            .await?
            .into_response();
        response.headers_mut().insert(
            CACHE_STATUS,
            status::forwarded(reason, false, Some("lock-timeout")),
        );
        return Ok(response);
    };
    // A HEAD fills the entry with the GET's answer, which then answers both.
    let client_method = std::mem::replace(&mut parts.method, Method::GET);
    let response = fetch_or_stale(&script, &parts, stale.as_ref(), record).await;
    parts.method = client_method;
    let response = match response? {
        Fetched::Php(response) => response,
        Fetched::Stale(response) => return Ok(response),
    };
    let (mut head, body) = response.into_parts();
    let freshness = match fill.judge(head.status, &head.headers, &parts.headers) {
        Ok(freshness) => freshness,
        Err(why) => {
            drop(fill);
            let response = Response::from_parts(head, body);
            let mut response = crate::private_files::intercept(
                response,
                &script.tenant,
                &parts,
                record,
                !script.conn.tls,
            )
            .await?;
            response
                .headers_mut()
                .insert(CACHE_STATUS, status::forwarded(reason, false, Some(why)));
            return Ok(response);
        }
    };
    let read = body
        .read_up_to(store.settings().max_body, record)
        .await
        .map_err(|err| {
            GatewayError::new(ErrorKind::BadGateway, "reading PHP's answer for the cache")
                .with_cause(err)
        })?;
    match read {
        ReadAhead::TooLarge(body) => {
            drop(fill);
            head.headers.insert(
                CACHE_STATUS,
                status::forwarded(reason, false, Some("too-large")),
            );
            Ok(Response::from_parts(head, *body))
        }
        ReadAhead::Whole(bytes) => {
            crate::response::keep_answered_by(&mut head.extensions, record);
            let encoded = encoded_copies(&script, head.status, &head.headers, &bytes).await;
            match fill.store(
                &parts.headers,
                head.status,
                head.headers.clone(),
                bytes.clone(),
                freshness,
                encoded,
            ) {
                Ok(entry) => Ok(from_entry(
                    &entry,
                    &parts,
                    status::forwarded(reason, true, None),
                    script.offered(),
                )),
                Err(why) => {
                    head.headers
                        .insert(CACHE_STATUS, status::forwarded(reason, false, Some(why)));
                    Ok(Response::from_parts(head, GatewayBody::full(bytes)))
                }
            }
        }
    }
}

/// Where an answer to a miss came from.
enum Fetched {
    /// PHP.
    Php(Response<GatewayBody>),
    /// The stale entry, PHP-FPM having failed (`Cache-Status` set).
    Stale(Response<GatewayBody>),
}

impl Fetched {
    fn into_response(self) -> Response<GatewayBody> {
        match self {
            Fetched::Php(response) | Fetched::Stale(response) => response,
        }
    }
}

/// PHP's answer, or `stale` (when there is one) if PHP-FPM cannot be reached or answers
/// 5xx: `stale-if-error`.
async fn fetch_or_stale(
    script: &PhpScript,
    parts: &Parts,
    stale: Option<&Arc<Entry>>,
    record: &mut RequestRecord,
) -> Result<Fetched, GatewayError> {
    let result = script.fetch_bodiless(parts).await;
    let Some(stale) = stale else {
        return result.map(Fetched::Php);
    };
    match result {
        Ok(response) if !response.status().is_server_error() => return Ok(Fetched::Php(response)),
        Ok(response) => {
            tracing::warn!(tenant = %script.tenant.name, status = %response.status(), "PHP answered 5xx; serving the stale cached answer");
            let (mut head, body) = response.into_parts();
            crate::response::keep_answered_by(&mut head.extensions, record);
            body.release_upstream(record);
        }
        Err(err) => {
            tracing::warn!(tenant = %script.tenant.name, error = %err, "PHP-FPM failed; serving the stale cached answer");
        }
    }
    record.cache = CacheOutcome::Stale;
    let status = status::hit(stale, Some("stale-if-error"));
    Ok(Fetched::Stale(from_entry(
        stale,
        parts,
        status,
        script.offered(),
    )))
}

/// The answer from a stored entry (200, 304 or 206; HEAD gets the headers only in the
/// response step): compressed as stored when the client accepts one of `offered` that
/// the entry holds (and asks for no range), so a hit never compresses.
fn from_entry(
    entry: &Entry,
    parts: &Parts,
    cache_status: HeaderValue,
    offered: &[Encoding],
) -> Response<GatewayBody> {
    let encoding = negotiate(parts.headers.get(header::ACCEPT_ENCODING), offered)
        .filter(|_| !parts.headers.contains_key(header::RANGE));
    entry
        .answer_in(&parts.headers, cache_status, encoding)
        .map(GatewayBody::full)
}

/// Bodies this long and longer are compressed on the blocking pool, not on a runtime
/// thread.
const COMPRESS_INLINE_MAX: usize = 32 * 1024;

/// A 200's body compressed in each encoding the tenant offers, when compression applies
/// to it (type, size, no `Content-Encoding` or `no-transform`) and makes it smaller: what
/// the entry keeps so that its hits never compress. Once per fill, not per hit.
async fn encoded_copies(
    script: &PhpScript,
    status: http::StatusCode,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> Vec<(Encoding, Bytes)> {
    let offered = script.offered();
    let min_bytes = script.snapshot.config.server.compression_min_bytes;
    if status != http::StatusCode::OK
        || offered.is_empty()
        || (body.len() as u64) < min_bytes
        || judge(status, headers, false, true, min_bytes) != Verdict::Compress
    {
        return Vec::new();
    }
    let inline = body.len() < COMPRESS_INLINE_MAX;
    let (body, offered) = (body.clone(), offered.to_vec());
    let compress = move || {
        offered
            .into_iter()
            .filter_map(|encoding| {
                let mut encoder = Encoder::new(encoding).ok()?;
                encoder.write(&body).ok()?;
                let out = encoder.finish().ok()?;
                (out.len() < body.len()).then_some((encoding, out))
            })
            .collect()
    };
    if inline {
        compress()
    } else {
        tokio::task::spawn_blocking(compress)
            .await
            .unwrap_or_default()
    }
}

/// Refreshes an entry served stale: one GET to PHP after the client has its answer,
/// stored if PHP still allows it. Billed and logged like any PHP request.
fn refresh_in_background(script: PhpScript, fill: Fill, parts: &Parts, telemetry: Arc<Telemetry>) {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(parts.uri.clone())
        .version(parts.version)
        .body(())
        .map(|r| r.into_parts().0);
    if let Ok(refresh) = request.as_mut() {
        refresh.headers = parts.headers.clone();
    }
    let Ok(refresh) = request else {
        return;
    };
    tokio::spawn(async move {
        let mut record = RequestRecord::new(telemetry, &Method::GET, refresh.uri.path());
        record.tenant = Some(script.tenant.name.clone());
        record.cache = CacheOutcome::Miss;
        let response = match script.fetch_bodiless(&refresh).await {
            Ok(response) => response,
            Err(err) => {
                err.log(Some(&script.tenant.name));
                record.status = err.status().as_u16();
                return;
            }
        };
        let (mut head, body) = response.into_parts();
        record.status = head.status.as_u16();
        crate::response::keep_answered_by(&mut head.extensions, &mut record);
        let Ok(freshness) = fill.judge(head.status, &head.headers, &refresh.headers) else {
            body.release_upstream(&mut record);
            return;
        };
        let max_body = fill.store_of().settings().max_body;
        if let Ok(ReadAhead::Whole(bytes)) = body.read_up_to(max_body, &mut record).await {
            record.completed = true;
            let encoded = encoded_copies(&script, head.status, &head.headers, &bytes).await;
            let _ = fill.store(
                &refresh.headers,
                head.status,
                head.headers,
                bytes,
                freshness,
                encoded,
            );
        }
    });
}
