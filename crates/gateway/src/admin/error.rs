//! Every way an admin request fails, and the one place that maps each to a status code,
//! a stable `error` code and the JSON body `{"error": CODE, "detail": TEXT}`.
//!
//! Details say what was wrong in the operator's terms (the tenant, the host, the file and
//! line) and never a param value: values are database passwords, and a message that
//! quotes one ends up in a ticket or a terminal scrollback.

use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use bytes::Bytes;

use crate::config::{ConfigError, ConfigErrorKind, EditError};

/// `WWW-Authenticate` for a request without usable credentials (RFC 6750 §3).
const CHALLENGE: &str = "Bearer realm=\"gateway-admin\"";
/// `WWW-Authenticate` for a request with a wrong token.
const CHALLENGE_INVALID: &str = "Bearer realm=\"gateway-admin\", error=\"invalid_token\"";

/// A failed admin request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer` header, or another scheme.
    #[error("{0}")]
    MissingToken(&'static str),
    /// A bearer token that is not the configured one.
    #[error("the bearer token is not valid")]
    InvalidToken,
    /// No resource at this path.
    #[error("no such resource; GET /openapi.json lists them")]
    NotFound,
    /// The tenant named in the path is not configured.
    #[error("no tenant {0:?}")]
    UnknownTenant(String),
    /// The resource exists, the method does not.
    #[error("method not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The `Allow` header.
        allow: &'static str,
    },
    /// A body that is not declared as JSON.
    #[error("the request body must be sent as Content-Type: application/json")]
    UnsupportedMediaType,
    /// A body over the limit.
    #[error("the request body is over the {limit}-byte limit")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A malformed query string or an unreadable body.
    #[error("{0}")]
    BadRequest(String),
    /// A body that is not JSON at all.
    #[error("{0}")]
    InvalidJson(String),
    /// A tenant that breaks the config rules: unknown field, wrong type, bad name or
    /// host, reserved param, a host listed twice.
    #[error("{0}")]
    InvalidTenant(String),
    /// A host another tenant already serves.
    #[error("{0}")]
    HostConflict(String),
    /// The config file on disk is broken independently of this request; nothing can be
    /// saved until it is fixed by hand.
    #[error("{0}")]
    ConfigBroken(String),
    /// Someone else wrote the config file while this edit was being made.
    #[error("{0}")]
    ChangedOnDisk(String),
    /// `POST /reload` found the file invalid; the old config keeps serving.
    #[error("{0}")]
    ReloadRejected(String),
    /// The edit was saved but could not be put in service; the old config keeps serving
    /// until the cause is fixed and the file reloaded.
    #[error("{0}")]
    NotApplied(String),
    /// Anything else: a file or database that cannot be read or written.
    #[error("{0}")]
    Internal(String),
    /// In a fleet: `If-Match` named another version than the tenant's.
    #[error("{0}")]
    PreconditionFailed(String),
    /// In a fleet: the registry (PostgreSQL) cannot be reached; nothing was written.
    #[error("{0}")]
    RegistryUnavailable(String),
}

impl ApiError {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingToken(_) | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::NotFound | Self::UnknownTenant(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) | Self::InvalidJson(_) | Self::InvalidTenant(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::HostConflict(_) | Self::ConfigBroken(_) | Self::ChangedOnDisk(_) => {
                StatusCode::CONFLICT
            }
            Self::ReloadRejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotApplied(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::RegistryUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable, machine-readable `error` field (the OpenAPI document lists them).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken(_) | Self::InvalidToken => "unauthorized",
            Self::NotFound => "not_found",
            Self::UnknownTenant(_) => "unknown_tenant",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BadRequest(_) => "bad_request",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidTenant(_) => "invalid_tenant",
            Self::HostConflict(_) => "host_conflict",
            Self::ConfigBroken(_) => "config_broken",
            Self::ChangedOnDisk(_) => "changed_on_disk",
            Self::ReloadRejected(_) => "reload_rejected",
            Self::NotApplied(_) => "not_applied",
            Self::Internal(_) => "internal",
            Self::PreconditionFailed(_) => "precondition_failed",
            Self::RegistryUnavailable(_) => "registry_unavailable",
        }
    }

    /// The JSON error response, with `WWW-Authenticate` or `Allow` where the status
    /// calls for one.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({ "error": self.code(), "detail": self.to_string() });
        let mut response = super::json_response(self.status(), &body);
        let extra = match &self {
            Self::MissingToken(_) => Some((header::WWW_AUTHENTICATE, CHALLENGE)),
            Self::InvalidToken => Some((header::WWW_AUTHENTICATE, CHALLENGE_INVALID)),
            Self::MethodNotAllowed { allow } => Some((header::ALLOW, *allow)),
            _ => None,
        };
        if let Some((name, value)) = extra {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        response
    }

    /// Maps a failed edit of the config file. `file_was_valid` is asked only when the
    /// edited config is invalid, to tell a bad request (the edit broke it) from a file
    /// that was already broken (no edit can be saved until it is fixed by hand).
    pub fn from_edit(err: EditError, file_was_valid: impl FnOnce() -> bool) -> Self {
        match err {
            EditError::UnknownTenant { tenant, .. } => Self::UnknownTenant(tenant),
            EditError::Invalid(config) if file_was_valid() => Self::from_invalid_tenant(&config),
            EditError::Invalid(config) => Self::ConfigBroken(format!(
                "the config file is invalid, fix it first: {config}"
            )),
            err @ (EditError::Syntax { .. } | EditError::NotATable { .. }) => {
                Self::ConfigBroken(format!("the config file cannot be edited: {err}"))
            }
            err @ EditError::ChangedOnDisk { .. } => Self::ChangedOnDisk(err.to_string()),
            err => Self::Internal(err.to_string()),
        }
    }

    /// A tenant the config rules refuse: 409 for a host another tenant holds, else 400.
    /// The detail is the rule broken, without the file position: the edited text that
    /// position points into was never written.
    fn from_invalid_tenant(err: &ConfigError) -> Self {
        let reason = err.kind().to_string();
        match err.kind() {
            ConfigErrorKind::DuplicateHost { first, second, .. } if first != second => {
                Self::HostConflict(reason)
            }
            _ => Self::InvalidTenant(reason),
        }
    }
}

/// A JSON body error, with any string value it quotes replaced by "a string": serde
/// writes `invalid type: string "…", expected …`, and the string may be a password
/// sent in the wrong place.
pub fn json_error_detail(err: &serde_json::Error) -> String {
    redact_quoted_strings(&err.to_string())
}

fn redact_quoted_strings(message: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(MARK) {
        out.push_str(&rest[..start]);
        out.push_str("a string");
        // Skip to the closing quote of the Debug-escaped string.
        let mut chars = rest[start + MARK.len()..].char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = start + MARK.len() + i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_are_redacted_from_json_errors() {
        let err = serde_json::from_str::<bool>("\"hunter2 \\\" still\"").unwrap_err();
        let detail = json_error_detail(&err);
        assert!(
            !detail.contains("hunter2") && !detail.contains("still"),
            "{detail}"
        );
        assert!(detail.starts_with("invalid type: a string, expected a boolean"));
        assert_eq!(
            redact_quoted_strings("x string \"a\" y string \"b"),
            "x a string y a string"
        );
    }

    #[test]
    fn statuses_and_codes_are_paired() {
        let cases = [
            (ApiError::MissingToken("x"), 401, "unauthorized"),
            (ApiError::InvalidToken, 401, "unauthorized"),
            (ApiError::UnknownTenant("a".into()), 404, "unknown_tenant"),
            (
                ApiError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (
                ApiError::UnsupportedMediaType,
                415,
                "unsupported_media_type",
            ),
            (ApiError::HostConflict("x".into()), 409, "host_conflict"),
            (ApiError::ReloadRejected("x".into()), 422, "reload_rejected"),
        ];
        for (err, status, code) in cases {
            assert_eq!((err.status().as_u16(), err.code()), (status, code));
        }
        let response = ApiError::MethodNotAllowed { allow: "POST" }.into_response();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "POST");
        let response = ApiError::InvalidToken.into_response();
        assert!(response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
    }
}
