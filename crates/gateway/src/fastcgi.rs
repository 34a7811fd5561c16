//! Forwarding a request to PHP-FPM: decide how the body goes (streamed with its
//! `Content-Length`, or spooled first when it has none), build the CGI params, send it
//! through the tenant's fair queue of the pool, and map the CGI response back to HTTP.

use std::sync::Arc;

use bytes::Bytes;
use fcgi_core::{Params, StderrSink};
use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::Response;
use http_body::Body;
use http_body_util::{BodyExt, Either};

use crate::access::RequestRecord;
use crate::body::GatewayBody;
use crate::error::GatewayError;
use crate::service::ConnInfo;
use crate::snapshot::Snapshot;
use crate::tenant::Tenant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What [`forward`] needs besides the HTTP request itself.
#[derive(Debug)]
pub struct PhpRequest<'a> {
    /// The snapshot the request is served from.
    pub snapshot: &'a Snapshot,
    /// The tenant that owns the host.
    pub tenant: &'a Arc<Tenant>,
    /// The authority as the client sent it (becomes `HTTP_HOST`).
    pub authority: &'a str,
    /// The normalised host that chose the tenant (becomes `SERVER_NAME`).
    pub server_name: &'a str,
    /// The script's URL path.
    pub script_name: &'a str,
    /// The path after the script, if any.
    pub path_info: Option<&'a str>,
}

/// Headers that describe one hop and never pass through a gateway.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
];

/// Sends the request to PHP-FPM and returns the response once PHP's headers are in.
pub async fn forward<B>(
    php: PhpRequest<'_>,
    parts: &Parts,
    body: B,
    record: &mut RequestRecord,
    conn: Option<ConnInfo>,
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display + Send,
{
    let config = &php.snapshot.config;
    let max_body = config.server.max_body;
    let declared = declared_length(&parts.headers)?;
    if declared.is_some_and(|len| len > max_body) {
        return Err(GatewayError::payload_too_large(max_body));
    }
    // PHP-FPM reads exactly CONTENT_LENGTH bytes: a body without one is spooled first.
    let (body, length) = match declared {
        // hyper holds a client to its declared length, so the body can stream as it is.
        Some(len) => (Either::Left(body), Some(len)),
        None if body.is_end_stream() => (Either::Left(body), None),
        None => {
            let (spooled, len) = crate::spool::spool(body, max_body).await?;
            (Either::Right(spooled), Some(len))
        }
    };
    record.bytes_in = length.unwrap_or(0);
    let conn = conn
        .or_else(|| parts.extensions.get::<ConnInfo>().copied())
        .unwrap_or_default();
    let ctx = crate::cgi::params::CgiContext {
        tenant: php.tenant,
        parts,
        authority: php.authority,
        server_name: php.server_name,
        script: crate::cgi::params::ScriptVars {
            script_name: php.script_name,
            path_info: php.path_info,
            document_root: &config.fastcgi.fpm_root,
        },
        remote: conn.remote,
        local: conn.local,
        tls: conn.tls,
        trusted_proxies: &config.server.trusted_proxies,
        content_length: length,
    };
    let mut params = Params::with_capacity(crate::cgi::params::params_capacity(&ctx));
    crate::cgi::params::build_params(&ctx, &mut params).map_err(params_error)?;
    if let Some(session) = conn.tls_session {
        crate::cgi::params::add_tls_session(&mut params, session).map_err(params_error)?;
    }
    let tenant_name = php.tenant.name.clone();
    // Decided here from what is known, rather than by fcgi-core scanning the params.
    let replayable = length.unwrap_or(0) == 0
        && matches!(
            parts.method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
        );
    let request = fcgi_core::Request::new(params)
        .with_body(body)
        .replayable(replayable)
        .queue(php.tenant.name.clone(), php.tenant.max_concurrency)
        .stderr(StderrSink::new(move |line| {
            tracing::warn!(target: "php", tenant = %tenant_name, "{}", String::from_utf8_lossy(line));
        }));
    let response = php
        .snapshot
        .pool
        .send(request)
        .await
        .map_err(|err| GatewayError::from_fastcgi(&err, config.server.retry_after))?;
    let (status, mut headers, mut fpm_body) = response.into_parts();
    // PHP rarely sends any of them: one pass over its few headers is cheaper than hashing
    // each name for a removal that finds nothing.
    if headers.keys().any(is_hop_by_hop) {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        headers.remove("keep-alive");
        headers.remove("proxy-connection");
    }
    let body = if parts.method == http::Method::HEAD {
        // PHP sends no body for HEAD; reading to END_REQUEST lets the connection be reused.
        while let Some(frame) = fpm_body.frame().await {
            if frame.is_err() {
                break;
            }
        }
        record.fpm_time = fpm_body.fpm_time();
        GatewayBody::empty()
    } else {
        GatewayBody::fastcgi(fpm_body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Whether a response header describes one hop only and must not be passed on.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == "keep-alive" || name == "proxy-connection"
}

/// The request's `Content-Length`, if it has a valid one.
fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, GatewayError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| GatewayError::bad_request("invalid Content-Length"))
}

fn params_error(err: crate::cgi::params::ParamsBuildError) -> GatewayError {
    use crate::cgi::params::ParamsBuildError;
    match &err {
        ParamsBuildError::UriTooLong { .. } => GatewayError::uri_too_long(err.to_string()),
        ParamsBuildError::HeaderTooLarge { .. } => GatewayError::header_too_large(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_recognised_and_others_pass() {
        for name in [
            "connection",
            "transfer-encoding",
            "upgrade",
            "te",
            "trailer",
            "keep-alive",
            "proxy-connection",
        ] {
            assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["content-type", "set-cookie", "x-keep-alive", "location"] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }
}
