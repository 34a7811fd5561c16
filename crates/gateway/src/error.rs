//! Every way a request can fail, where it came from, and the one place that maps it to a
//! status code, a `Retry-After` and a small HTML page.
//!
//! Pages say what happened in general words and nothing about tenants, paths or PHP-FPM
//! internals; the detail goes to the log instead.

use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::GatewayBody;

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

/// A failed request, ready to be answered.
#[derive(Debug, Clone)]
pub struct GatewayError {
    status: StatusCode,
    source: ErrorSource,
    retry_after: Option<Duration>,
    /// For the log only, never sent to the client.
    detail: String,
}

impl GatewayError {
    /// An error with an explicit status.
    pub fn new(status: StatusCode, source: ErrorSource, detail: impl Into<String>) -> Self {
        Self {
            status,
            source,
            retry_after: None,
            detail: detail.into(),
        }
    }

    /// 400: a request we cannot make sense of.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorSource::Client, detail)
    }

    /// 403: a path that exists but is never served (dotfiles, escapes from the root).
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorSource::Client, detail)
    }

    /// 404: no such page, or no such site (the page never says which).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorSource::Client, detail)
    }

    /// 408: the client paused too long while sending its request body. The connection
    /// is closed after the answer: the rest of the body may still come.
    pub fn request_timeout(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, ErrorSource::Client, detail)
    }

    /// 413: the request body is over the limit.
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorSource::Client,
            format!("request body over the {limit}-byte limit"),
        )
    }

    /// 414: the URI does not fit one FastCGI param.
    pub fn uri_too_long(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::URI_TOO_LONG, ErrorSource::Client, detail)
    }

    /// 431: a header does not fit one FastCGI param.
    pub fn header_too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorSource::Client,
            detail,
        )
    }

    /// 503 with `Retry-After`: the tenant is suspended or the pool is saturated.
    pub fn unavailable(retry_after: Duration, detail: impl Into<String>) -> Self {
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorSource::Upstream,
            detail,
        );
        err.retry_after = Some(retry_after);
        err
    }

    /// 500: the gateway itself failed.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorSource::Internal,
            detail,
        )
    }

    /// Maps a FastCGI client error: overloaded or queue timeout 503, connect failure 502,
    /// read timeout 504, protocol error 502, client's body failing 400.
    pub fn from_fastcgi(err: &fcgi_core::Error, retry_after: Duration) -> Self {
        let detail = err.to_string();
        if err.is_overloaded() {
            Self::unavailable(retry_after, detail)
        } else if err.is_connect() {
            Self::new(StatusCode::BAD_GATEWAY, ErrorSource::Upstream, detail)
        } else if err.is_timeout() {
            Self::new(StatusCode::GATEWAY_TIMEOUT, ErrorSource::Upstream, detail)
        } else if err.is_body() {
            Self::new(StatusCode::BAD_REQUEST, ErrorSource::Client, detail)
        } else if err.is_params() {
            Self::header_too_large(detail)
        } else {
            Self::new(StatusCode::BAD_GATEWAY, ErrorSource::Upstream, detail)
        }
    }

    /// The status code this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Who caused it.
    pub fn source(&self) -> ErrorSource {
        self.source
    }

    /// The log detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The `Retry-After` sent with it, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The response: status, `Retry-After` when set, and a small HTML page.
    pub fn into_response(self) -> Response<GatewayBody> {
        let page = error_page(self.status);
        let mut response = Response::new(GatewayBody::full(page));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        if let Some(after) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.detail)
    }
}

impl std::error::Error for GatewayError {}

/// A minimal page naming the status and nothing else.
pub fn error_page(status: StatusCode) -> bytes::Bytes {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    bytes::Bytes::from(format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1></body></html>\n"
    ))
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
        let response = GatewayError::unavailable(Duration::from_secs(30), "x").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
    }
}
