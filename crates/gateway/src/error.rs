//! Every way a request can fail, where it came from, and the one place that maps it to a
//! status code, a retry decision (`Retry-After`) and a small HTML page.
//!
//! Each step of the flow returns its own typed error; the `From` impls at the bottom turn
//! them into a [`GatewayError`] keeping the original as its cause (as pingora-error's
//! `cause`), so the log shows the whole chain. [`ErrorKind`] is the only input to the
//! status code, the blamed party and whether the client is told to retry.
//!
//! Pages say what happened in general words and nothing about tenants, paths or PHP-FPM
//! internals; the detail goes to the log instead.

use std::borrow::Cow;
use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::GatewayBody;

/// What a cause is carried as: any error, kept whole for the log.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Who is to blame for an error: decides the status class and the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The HTTP client sent something we refuse (4xx).
    Client,
    /// PHP-FPM failed, timed out or is saturated (5xx).
    Upstream,
    /// A bug or resource problem in the gateway itself (500).
    Internal,
}

/// What failed, in the terms the answer is chosen by. Small, so the error is cheap to
/// build on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A request we cannot make sense of (400).
    BadRequest,
    /// A path that exists but is never served (403).
    Forbidden,
    /// No such page or no such site (404).
    NotFound,
    /// The client paused too long while sending its request body (408, connection
    /// closed: the rest of the body may still come).
    RequestTimeout,
    /// The Host is another tenant's than the TLS connection's name (421).
    Misdirected,
    /// The request body is over the limit (413).
    PayloadTooLarge,
    /// The request line does not fit one FastCGI param (414).
    UriTooLong,
    /// The headers are over the limit, or one does not fit a FastCGI param (431).
    HeaderTooLarge,
    /// PHP-FPM or the pool is saturated: retry later (503 with `Retry-After`).
    Overloaded,
    /// PHP-FPM could not be reached or broke the protocol (502).
    BadGateway,
    /// PHP-FPM did not answer in time (504).
    GatewayTimeout,
    /// The gateway itself failed (500).
    Internal,
}

impl ErrorKind {
    /// The status code, the party to blame, and whether a `Retry-After` goes with it:
    /// the one table every failure is answered by.
    fn decision(self) -> (StatusCode, ErrorSource, bool) {
        use ErrorSource::{Client, Internal, Upstream};
        match self {
            Self::BadRequest => (StatusCode::BAD_REQUEST, Client, false),
            Self::Forbidden => (StatusCode::FORBIDDEN, Client, false),
            Self::NotFound => (StatusCode::NOT_FOUND, Client, false),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, Client, false),
            Self::Misdirected => (StatusCode::MISDIRECTED_REQUEST, Client, false),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, Client, false),
            Self::UriTooLong => (StatusCode::URI_TOO_LONG, Client, false),
            Self::HeaderTooLarge => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Client, false),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, Upstream, true),
            Self::BadGateway => (StatusCode::BAD_GATEWAY, Upstream, false),
            Self::GatewayTimeout => (StatusCode::GATEWAY_TIMEOUT, Upstream, false),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, Internal, false),
        }
    }
}

/// A failed request, ready to be answered: what failed, what the gateway was doing, and
/// the error that caused it.
#[derive(Debug)]
pub struct GatewayError {
    kind: ErrorKind,
    /// What the gateway was doing, for the log only, never sent to the client.
    context: Cow<'static, str>,
    /// The error underneath, if any: [`std::error::Error::source`] returns it.
    cause: Option<Cause>,
}

impl GatewayError {
    /// An error of `kind`, with what the gateway was doing.
    pub fn new(kind: ErrorKind, context: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            context: context.into(),
            cause: None,
        }
    }

    /// Keeps `cause` as this error's source.
    pub fn with_cause(mut self, cause: impl Into<Cause>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// 400: a request we cannot make sense of.
    pub fn bad_request(context: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::BadRequest, context)
    }

    /// 403: a path that exists but is never served (dotfiles, escapes from the root).
    pub fn forbidden(context: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Forbidden, context)
    }

    /// 404: no such page, or no such site (the page never says which).
    pub fn not_found(context: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, context)
    }

    /// 408: the client paused too long while sending its request body. The connection
    /// is closed after the answer: the rest of the body may still come.
    pub fn request_timeout(context: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::RequestTimeout, context)
    }

    /// 413: the request body is over the limit.
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            ErrorKind::PayloadTooLarge,
            format!("request body over the {limit}-byte limit"),
        )
    }

    /// 431: the header section or one header is too large.
    pub fn header_too_large(context: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::HeaderTooLarge, context)
    }

    /// 500: the gateway itself failed.
    pub fn internal(context: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Internal, context)
    }

    /// What failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.kind.decision().0
    }

    /// Who caused it.
    pub fn origin(&self) -> ErrorSource {
        self.kind.decision().1
    }

    /// Whether the client is told when to retry (`Retry-After`): the failure is a
    /// saturation that passes, not a fault of the request.
    pub fn is_retryable(&self) -> bool {
        self.kind.decision().2
    }

    /// What the gateway was doing, without the cause.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The response: status, `Retry-After: retry_after` when the error is retryable, and
    /// a small HTML page.
    pub fn into_response(self, retry_after: Duration) -> Response<GatewayBody> {
        let (status, _, retryable) = self.kind.decision();
        let mut response = Response::new(GatewayBody::full(error_page(status)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        if retryable {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
        }
        if self.kind == ErrorKind::RequestTimeout {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// Writes the error, with its whole cause chain, to the log at the level its origin
    /// calls for (a client's mistake is routine; an upstream or internal one is not).
    pub(crate) fn log(&self, tenant: Option<&str>) {
        let tenant = tenant.unwrap_or("-");
        let status = self.status().as_u16();
        let detail = Chain(self);
        match self.origin() {
            ErrorSource::Client => {
                tracing::debug!(tenant, status, %detail, "request refused")
            }
            ErrorSource::Upstream => {
                tracing::warn!(tenant, status, %detail, "upstream failed")
            }
            ErrorSource::Internal => {
                tracing::error!(tenant, status, %detail, "internal error")
            }
        }
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status(), self.context)
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

/// An error followed by each of its causes: `a: b: c`. A cause whose text its parent
/// already printed (errors that end their message with their source's) is not repeated.
struct Chain<'a>(&'a GatewayError);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.context)?;
        let mut printed = String::new();
        let mut cause = std::error::Error::source(self.0);
        while let Some(err) = cause {
            let text = err.to_string();
            if !printed.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            printed = text;
            cause = err.source();
        }
        Ok(())
    }
}

/// A minimal page naming the status and nothing else.
pub fn error_page(status: StatusCode) -> bytes::Bytes {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    bytes::Bytes::from(format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1></body></html>\n"
    ))
}

/// PHP-FPM and the pool: every server of the upstream down 502, overloaded or queue
/// timeout 503, connect failure 502, read
/// timeout 504, protocol error 502, the client's body failing 400, a param too large 431.
impl From<fcgi_core::Error> for GatewayError {
    fn from(err: fcgi_core::Error) -> Self {
        let kind = if err.is_all_down() {
            // Every server of the upstream is marked down: answered at once, as nginx's
            // "no live upstreams".
            ErrorKind::BadGateway
        } else if err.is_overloaded() {
            ErrorKind::Overloaded
        } else if err.is_connect() {
            ErrorKind::BadGateway
        } else if err.is_timeout() {
            ErrorKind::GatewayTimeout
        } else if err.is_body() {
            ErrorKind::BadRequest
        } else if err.is_params() {
            ErrorKind::HeaderTooLarge
        } else {
            ErrorKind::BadGateway
        };
        Self::new(kind, "forwarding to PHP-FPM").with_cause(err)
    }
}

/// A CGI param that does not fit one FastCGI record: 414 for the request line, 431 for a
/// header.
impl From<crate::cgi::params::ParamsBuildError> for GatewayError {
    fn from(err: crate::cgi::params::ParamsBuildError) -> Self {
        use crate::cgi::params::ParamsBuildError;
        let kind = match &err {
            ParamsBuildError::UriTooLong { .. } => ErrorKind::UriTooLong,
            ParamsBuildError::HeaderTooLarge { .. } => ErrorKind::HeaderTooLarge,
        };
        Self::new(kind, "building the CGI params").with_cause(err)
    }
}

/// A request path that is malformed or hostile (400), or a filesystem that fails (500).
impl From<crate::resolve::ResolveError> for GatewayError {
    fn from(err: crate::resolve::ResolveError) -> Self {
        let kind = match &err {
            crate::resolve::ResolveError::BadPath(_) => ErrorKind::BadRequest,
            crate::resolve::ResolveError::Io(_) => ErrorKind::Internal,
        };
        Self::new(kind, "resolving the request path").with_cause(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_name_the_status_and_nothing_else() {
        let page = error_page(StatusCode::NOT_FOUND);
        let text = std::str::from_utf8(&page).unwrap();
        assert!(text.contains("404 Not Found"));
        assert!(!text.contains("tenant"));
    }

    #[test]
    fn unavailable_sets_retry_after() {
        let response =
            GatewayError::new(ErrorKind::Overloaded, "x").into_response(Duration::from_secs(30));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
    }

    #[test]
    fn the_cause_is_kept_and_logged_in_the_chain() {
        let io = std::io::Error::other("disk on fire");
        let err = GatewayError::internal("serving a file").with_cause(io);
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("disk on fire"));
        assert_eq!(Chain(&err).to_string(), "serving a file: disk on fire");
        // The page says nothing of it.
        let response = err.into_response(Duration::from_secs(1));
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    /// An error whose message ends with its source's, as thiserror's `"...: {0}"` does.
    #[derive(Debug)]
    struct Wraps(std::io::Error);

    impl std::fmt::Display for Wraps {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot connect to 127.0.0.1:9000: {}", self.0)
        }
    }

    impl std::error::Error for Wraps {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_its_parent_already_printed_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let text = io.to_string();
        let err = GatewayError::new(ErrorKind::BadGateway, "forwarding").with_cause(Wraps(io));
        assert_eq!(
            Chain(&err).to_string(),
            format!("forwarding: cannot connect to 127.0.0.1:9000: {text}")
        );
    }
}
