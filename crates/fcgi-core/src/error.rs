//! The client's error type: opaque, with predicates a gateway uses to pick a status code
//! (502, 503 or 504) and a retry decision.

use std::fmt;
use std::time::Duration;

use crate::proto::record::ProtocolStatus;
use crate::proto::ProtocolError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error from the FastCGI client or pool.
///
/// Match on the predicates, not on the message:
///
/// | predicate | what happened | a gateway answers |
/// |---|---|---|
/// | [`is_overloaded`](Error::is_overloaded) | FCGI_OVERLOADED, or the pool's queue was full or timed out | 503 |
/// | [`is_connect`](Error::is_connect) | the connection could not be made (refused, unreachable, timed out) | 502 |
/// | [`is_timeout`](Error::is_timeout) | connect, read or queue timeout | 504 |
/// | [`is_protocol`](Error::is_protocol) | the server broke FastCGI or CGI | 502 |
/// | [`is_all_down`](Error::is_all_down) | every server of the pool is marked down | 502 |
pub struct Error {
    kind: Kind,
    source: Option<BoxError>,
    /// Whether any response byte was received: before that, an idempotent request can be
    /// replayed on another connection.
    response_started: bool,
}

/// What went wrong; small so the error stays cheap on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Connect,
    ConnectTimeout(Duration),
    ReadTimeout(Duration),
    Io,
    UnexpectedEof,
    Protocol,
    Rejected(ProtocolStatus),
    QueueTimeout(Duration),
    QueueFull(usize),
    AllDown,
    Body,
    Params,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Self {
            kind,
            source: None,
            response_started: false,
        }
    }

    pub(crate) fn with(kind: Kind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
            response_started: false,
        }
    }

    pub(crate) fn io(err: std::io::Error) -> Self {
        Self::with(Kind::Io, err)
    }

    pub(crate) fn protocol(err: ProtocolError) -> Self {
        Self::with(Kind::Protocol, err)
    }

    pub(crate) fn started(mut self, started: bool) -> Self {
        self.response_started = started;
        self
    }

    /// The connection could not be established (refused, no such socket, or timed out).
    pub fn is_connect(&self) -> bool {
        matches!(self.kind, Kind::Connect | Kind::ConnectTimeout(_))
    }

    /// A timeout: connecting, waiting for bytes from the server, or waiting in the pool's
    /// queue.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            Kind::ConnectTimeout(_) | Kind::ReadTimeout(_) | Kind::QueueTimeout(_)
        )
    }

    /// The server sent no bytes for longer than the read timeout.
    pub fn is_read_timeout(&self) -> bool {
        matches!(self.kind, Kind::ReadTimeout(_))
    }

    /// The server broke the FastCGI protocol or sent an unparsable CGI head.
    pub fn is_protocol(&self) -> bool {
        matches!(self.kind, Kind::Protocol)
    }

    /// No capacity: the server answered FCGI_OVERLOADED, or the pool's queue was full or
    /// its wait timed out.
    pub fn is_overloaded(&self) -> bool {
        matches!(
            self.kind,
            Kind::Rejected(ProtocolStatus::Overloaded) | Kind::QueueTimeout(_) | Kind::QueueFull(_)
        )
    }

    /// The request waited in the pool's queue longer than allowed.
    pub fn is_queue_timeout(&self) -> bool {
        matches!(self.kind, Kind::QueueTimeout(_))
    }

    /// The server refused a second request on the connection (FCGI_CANT_MPX_CONN).
    pub fn is_cant_mpx_conn(&self) -> bool {
        matches!(self.kind, Kind::Rejected(ProtocolStatus::CantMpxConn))
    }

    /// The server does not play the requested role (FCGI_UNKNOWN_ROLE).
    pub fn is_unknown_role(&self) -> bool {
        matches!(self.kind, Kind::Rejected(ProtocolStatus::UnknownRole))
    }

    /// The END_REQUEST protocol status, when the server rejected the request with one.
    pub fn protocol_status(&self) -> Option<ProtocolStatus> {
        match self.kind {
            Kind::Rejected(status) => Some(status),
            _ => None,
        }
    }

    /// The connection closed before the request ended, or another socket error.
    pub fn is_io(&self) -> bool {
        matches!(self.kind, Kind::Io | Kind::UnexpectedEof)
    }

    /// Reading the caller's request body failed (the HTTP client went away mid-upload).
    pub fn is_body(&self) -> bool {
        matches!(self.kind, Kind::Body)
    }

    /// Every server of the pool is marked down (health checks or passive failures), so the
    /// request failed at once instead of waiting for one.
    pub fn is_all_down(&self) -> bool {
        matches!(self.kind, Kind::AllDown)
    }

    /// A param did not fit one PARAMS record.
    pub fn is_params(&self) -> bool {
        matches!(self.kind, Kind::Params)
    }

    /// Whether any byte of the response had arrived when this error happened.
    pub fn response_started(&self) -> bool {
        self.response_started
    }

    /// The underlying protocol error, if this is one.
    pub fn as_protocol(&self) -> Option<&ProtocolError> {
        self.source.as_ref()?.downcast_ref()
    }

    fn describe(&self) -> String {
        match self.kind {
            Kind::Connect => "cannot connect to FastCGI server".into(),
            Kind::ConnectTimeout(t) => {
                format!("connecting to FastCGI server timed out after {t:?}")
            }
            Kind::ReadTimeout(t) => format!("FastCGI server sent nothing for {t:?}"),
            Kind::Io => "FastCGI connection failed".into(),
            Kind::UnexpectedEof => {
                "FastCGI server closed the connection before the request ended".into()
            }
            Kind::Protocol => "FastCGI protocol error".into(),
            Kind::Rejected(status) => format!("FastCGI server rejected the request: {status:?}"),
            Kind::QueueTimeout(t) => format!("no FastCGI connection free within {t:?}"),
            Kind::QueueFull(n) => format!("FastCGI connection queue is full ({n} waiting)"),
            Kind::AllDown => "every FastCGI server of the pool is down".into(),
            Kind::Body => "reading the request body failed".into(),
            Kind::Params => "a FastCGI param is too large".into(),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("fcgi_core::Error");
        d.field("kind", &self.kind);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

impl From<ProtocolError> for Error {
    fn from(err: ProtocolError) -> Self {
        Self::protocol(err)
    }
}

impl From<crate::proto::params::ParamsError> for Error {
    fn from(err: crate::proto::params::ParamsError) -> Self {
        Self::with(Kind::Params, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_follow_the_kind() {
        let overloaded = Error::new(Kind::Rejected(ProtocolStatus::Overloaded));
        assert!(overloaded.is_overloaded() && !overloaded.is_timeout());
        let queue = Error::new(Kind::QueueTimeout(Duration::from_secs(1)));
        assert!(queue.is_overloaded() && queue.is_timeout() && queue.is_queue_timeout());
        let connect = Error::new(Kind::ConnectTimeout(Duration::from_secs(1)));
        assert!(connect.is_connect() && connect.is_timeout());
        let read = Error::new(Kind::ReadTimeout(Duration::from_secs(1)));
        assert!(read.is_timeout() && read.is_read_timeout() && !read.is_connect());
        let protocol = Error::from(ProtocolError::EndBeforeHeaders);
        assert!(protocol.is_protocol());
        assert_eq!(
            protocol.as_protocol(),
            Some(&ProtocolError::EndBeforeHeaders)
        );
        assert!(Error::new(Kind::Rejected(ProtocolStatus::CantMpxConn)).is_cant_mpx_conn());
        assert!(Error::new(Kind::Rejected(ProtocolStatus::UnknownRole)).is_unknown_role());
        let down = Error::new(Kind::AllDown);
        assert!(down.is_all_down() && !down.is_overloaded() && !down.is_timeout());
    }

    #[test]
    fn display_includes_the_source() {
        let err = Error::from(ProtocolError::UnsupportedVersion(9));
        assert_eq!(
            err.to_string(),
            "FastCGI protocol error: unsupported FastCGI version 9"
        );
    }
}
