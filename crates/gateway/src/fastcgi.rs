//! The pool and FastCGI step (CGI mapping → **pool → FastCGI** → response mapping):
//! decide how the request body goes (read whole first — the default, and always for a
//! body without `Content-Length` — or streamed with its length when the tenant turns
//! `request_buffering` off), then send the [`CgiRequest`]'s params and the body through
//! the tenant's fair queue of the pool, and hand PHP's answer to [`crate::response`].

use bytes::Bytes;
use fcgi_core::{Params, StderrSink};
use http::header::{self, HeaderMap};
use http::Response;
use http_body::Body;
use http_body_util::Either;

use crate::body::GatewayBody;
use crate::cgi::params::{build_params, params_capacity};
use crate::cgi::CgiRequest;
use crate::error::GatewayError;
use crate::spool::{is_body_timeout, SpoolLimits, SpooledBody, TimedBody};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as it goes to PHP-FPM: the client's own stream (held to
/// `body_timeout` between reads), or its spooled copy.
pub(crate) type RequestBody<B> = Either<TimedBody<B>, SpooledBody>;

/// Decides how the request body goes to PHP-FPM, which reads exactly `CONTENT_LENGTH`
/// bytes: returns the body and that length (`None`: no body). A declared length over
/// `max_body` is a 413 before anything is read, an invalid one a 400. With `buffering`
/// (the default) the body is read whole before the pool is asked, so a slow client never
/// holds a PHP-FPM worker; a body without a length is always read whole.
pub(crate) async fn request_body<B>(
    headers: &HeaderMap,
    body: B,
    buffering: bool,
    limits: &SpoolLimits<'_>,
) -> Result<(RequestBody<B>, Option<u64>), GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display + Send,
{
    let declared = declared_length(headers)?;
    if declared.is_some_and(|len| len > limits.max_body) {
        return Err(GatewayError::payload_too_large(limits.max_body));
    }
    if body.is_end_stream() || (!buffering && declared.is_some()) {
        // hyper holds a client to its declared length, so the body can stream as it is.
        return Ok((
            Either::Left(TimedBody::new(body, limits.body_timeout)),
            declared,
        ));
    }
    let (spooled, len) = crate::spool::spool(body, declared, limits).await?;
    Ok((Either::Right(spooled), Some(len)))
}

/// Sends the request to PHP-FPM and returns the response once PHP's headers are in.
/// `cgi.content_length` is the length [`request_body`] decided for `body`.
pub(crate) async fn forward<B>(
    pool: &fcgi_core::Pool,
    cgi: &CgiRequest<'_>,
    body: RequestBody<B>,
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display + Send,
{
    let mut params = Params::with_capacity(params_capacity(cgi));
    build_params(cgi, &mut params)?;
    let tenant = cgi.tenant;
    let tenant_name = tenant.name.clone();
    // Decided here from what is known, rather than by fcgi-core scanning the params.
    let replayable = cgi.content_length.unwrap_or(0) == 0
        && matches!(
            cgi.parts.method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
        );
    let request = fcgi_core::Request::new(params)
        .with_body(body)
        .replayable(replayable)
        .queue(tenant.name.clone(), tenant.max_concurrency)
        .stderr(StderrSink::new(move |line| {
            tracing::warn!(target: "php", tenant = %tenant_name, "{}", String::from_utf8_lossy(line));
        }));
    let response = pool.send(request).await.map_err(|err| {
        if is_body_timeout(&err) {
            GatewayError::request_timeout("streaming the request body to PHP-FPM").with_cause(err)
        } else {
            err.into()
        }
    })?;
    Ok(crate::response::from_fastcgi(response))
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
