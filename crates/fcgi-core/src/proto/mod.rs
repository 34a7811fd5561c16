//! The sans-IO FastCGI codec: records, name-value pairs, CGI response heads, and the
//! response state machine. Nothing here does IO or knows about tokio: bytes go in,
//! records and events come out, and encoders write into any `BufMut`.

pub mod cgi;
pub mod decoder;
pub mod encoder;
pub mod params;
pub mod record;
pub mod response;

use record::RecordType;

/// The peer broke the FastCGI protocol (or the CGI response format).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A record header with a version other than 1.
    #[error("unsupported FastCGI version {0}")]
    UnsupportedVersion(u8),
    /// A record for another request on this connection.
    #[error("record for request {got}, expected {expected}")]
    UnexpectedRequestId {
        /// The request in flight.
        expected: u16,
        /// The id the record carried.
        got: u16,
    },
    /// A record type a server does not send to a client.
    #[error("unexpected {0:?} record")]
    UnexpectedRecord(RecordType),
    /// END_REQUEST whose body is not 8 bytes.
    #[error("malformed END_REQUEST body")]
    MalformedEndRequest,
    /// END_REQUEST (complete) came before the CGI head was finished.
    #[error("request ended before the CGI headers were complete")]
    EndBeforeHeaders,
    /// The CGI head grew past the limit.
    #[error("CGI header block larger than {limit} bytes")]
    HeadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The CGI head could not be parsed.
    #[error(transparent)]
    Cgi(#[from] cgi::CgiError),
    /// Name-value pairs could not be parsed.
    #[error(transparent)]
    NameValue(#[from] params::NameValueError),
}
