//! The FastCGI 1.0 record: its 8-byte header, the record types, and the fixed-size bodies
//! (BEGIN_REQUEST, END_REQUEST, UNKNOWN_TYPE).
//!
//! Every record on the wire is `header (8 bytes) | content (0..=65535) | padding (0..=255)`.
//! This module only knows the layout; [`crate::proto::decoder`] and
//! [`crate::proto::encoder`] move whole records in and out of buffers.

use bytes::{Buf, BufMut};

/// The only protocol version defined by FastCGI 1.0.
pub const VERSION_1: u8 = 1;
/// Size of a record header on the wire.
pub const HEADER_LEN: usize = 8;
/// The largest content a single record can carry.
pub const MAX_CONTENT_LEN: usize = 65535;
/// Request id 0 is reserved for management records (GET_VALUES and friends).
pub const MANAGEMENT_REQUEST_ID: u16 = 0;
/// `flags` bit of BEGIN_REQUEST: keep the connection open after the request.
pub const FLAG_KEEP_CONN: u8 = 1;

/// The type byte of a record.
///
/// Unknown values are kept rather than rejected: the spec asks a peer to answer
/// an unknown management type with UNKNOWN_TYPE, so the decoder must be able to carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// Client to server: starts a request (8-byte body).
    BeginRequest,
    /// Client to server: asks the server to abort a request.
    AbortRequest,
    /// Server to client: ends a request (8-byte body).
    EndRequest,
    /// Client to server: the CGI environment as name-value pairs (a stream).
    Params,
    /// Client to server: the request body (a stream).
    Stdin,
    /// Server to client: the CGI response (a stream).
    Stdout,
    /// Server to client: the error stream (a stream).
    Stderr,
    /// Client to server: extra data for the Filter role (a stream).
    Data,
    /// Management query for server variables.
    GetValues,
    /// Management answer to [`RecordType::GetValues`].
    GetValuesResult,
    /// Management answer to a management record of a type the peer does not know.
    UnknownType,
    /// Any other type byte.
    Other(u8),
}

impl RecordType {
    /// Maps a wire byte to a record type.
    pub fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::BeginRequest,
            2 => Self::AbortRequest,
            3 => Self::EndRequest,
            4 => Self::Params,
            5 => Self::Stdin,
            6 => Self::Stdout,
            7 => Self::Stderr,
            8 => Self::Data,
            9 => Self::GetValues,
            10 => Self::GetValuesResult,
            11 => Self::UnknownType,
            other => Self::Other(other),
        }
    }

    /// The wire byte of this record type.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::BeginRequest => 1,
            Self::AbortRequest => 2,
            Self::EndRequest => 3,
            Self::Params => 4,
            Self::Stdin => 5,
            Self::Stdout => 6,
            Self::Stderr => 7,
            Self::Data => 8,
            Self::GetValues => 9,
            Self::GetValuesResult => 10,
            Self::UnknownType => 11,
            Self::Other(other) => other,
        }
    }
}

/// A record header as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version; always [`VERSION_1`] for records we write.
    pub version: u8,
    /// What the content is.
    pub record_type: RecordType,
    /// Which request the record belongs to (0 = management).
    pub request_id: u16,
    /// Length of the content that follows the header.
    pub content_length: u16,
    /// Length of the padding that follows the content.
    pub padding_length: u8,
}

impl Header {
    /// A version-1 header with the padding that aligns the record to 8 bytes.
    pub fn new(record_type: RecordType, request_id: u16, content_length: u16) -> Self {
        Self {
            version: VERSION_1,
            record_type,
            request_id,
            content_length,
            padding_length: padding_for(content_length as usize),
        }
    }

    /// Reads a header from the first 8 bytes of `src`, or `None` when fewer are available.
    /// Does not consume anything.
    pub fn peek(src: &[u8]) -> Option<Self> {
        let b: &[u8; HEADER_LEN] = src.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Self {
            version: b[0],
            record_type: RecordType::from_u8(b[1]),
            request_id: u16::from_be_bytes([b[2], b[3]]),
            content_length: u16::from_be_bytes([b[4], b[5]]),
            padding_length: b[6],
        })
    }

    /// Writes the header (8 bytes).
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_u8(self.version);
        dst.put_u8(self.record_type.as_u8());
        dst.put_u16(self.request_id);
        dst.put_u16(self.content_length);
        dst.put_u8(self.padding_length);
        dst.put_u8(0);
    }

    /// Header, content and padding together.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + self.content_length as usize + self.padding_length as usize
    }
}

/// Padding that brings `content_length` up to a multiple of 8, as the spec recommends.
pub fn padding_for(content_length: usize) -> u8 {
    ((8 - (content_length % 8)) % 8) as u8
}

/// Writes `padding` zero bytes.
pub(crate) fn put_padding<B: BufMut>(dst: &mut B, padding: u8) {
    const ZEROS: [u8; 8] = [0; 8];
    let mut left = padding as usize;
    while left > 0 {
        let n = left.min(ZEROS.len());
        dst.put_slice(&ZEROS[..n]);
        left -= n;
    }
}

/// The role a BEGIN_REQUEST asks the application to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The usual CGI role: params and stdin in, a response out.
    Responder,
    /// Authorizer role.
    Authorizer,
    /// Filter role (with a DATA stream).
    Filter,
    /// Any other role value.
    Other(u16),
}

impl Role {
    /// The wire value of this role.
    pub fn as_u16(self) -> u16 {
        match self {
            Self::Responder => 1,
            Self::Authorizer => 2,
            Self::Filter => 3,
            Self::Other(other) => other,
        }
    }

    /// Maps a wire value to a role.
    pub fn from_u16(value: u16) -> Self {
        match value {
            1 => Self::Responder,
            2 => Self::Authorizer,
            3 => Self::Filter,
            other => Self::Other(other),
        }
    }
}

/// The 8-byte body of a BEGIN_REQUEST record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeginRequestBody {
    /// The role requested.
    pub role: Role,
    /// Flags; bit 0 is [`FLAG_KEEP_CONN`].
    pub flags: u8,
}

impl BeginRequestBody {
    /// Length of the body on the wire.
    pub const LEN: usize = 8;

    /// Writes the body (8 bytes).
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_u16(self.role.as_u16());
        dst.put_u8(self.flags);
        dst.put_slice(&[0; 5]);
    }

    /// Reads the body; `None` if `src` is not exactly 8 bytes.
    pub fn decode(mut src: &[u8]) -> Option<Self> {
        if src.len() != Self::LEN {
            return None;
        }
        let role = Role::from_u16(src.get_u16());
        let flags = src.get_u8();
        Some(Self { role, flags })
    }

    /// Whether the client asked to keep the connection open.
    pub fn keep_conn(&self) -> bool {
        self.flags & FLAG_KEEP_CONN != 0
    }
}

/// How the application ended a request (END_REQUEST's `protocolStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolStatus {
    /// Normal end of request.
    RequestComplete,
    /// The server refused a second concurrent request on a connection.
    CantMpxConn,
    /// The server ran out of resources (workers, connections).
    Overloaded,
    /// The server does not know the requested role.
    UnknownRole,
    /// A value not defined by the spec.
    Other(u8),
}

impl ProtocolStatus {
    /// Maps a wire value to a status.
    pub fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::RequestComplete,
            1 => Self::CantMpxConn,
            2 => Self::Overloaded,
            3 => Self::UnknownRole,
            other => Self::Other(other),
        }
    }

    /// The wire value of this status.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::RequestComplete => 0,
            Self::CantMpxConn => 1,
            Self::Overloaded => 2,
            Self::UnknownRole => 3,
            Self::Other(other) => other,
        }
    }
}

/// The 8-byte body of an END_REQUEST record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRequestBody {
    /// The application's exit status (PHP-FPM sends 0 in practice).
    pub app_status: u32,
    /// How the request ended at the protocol level.
    pub protocol_status: ProtocolStatus,
}

impl EndRequestBody {
    /// Length of the body on the wire.
    pub const LEN: usize = 8;

    /// Writes the body (8 bytes).
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_u32(self.app_status);
        dst.put_u8(self.protocol_status.as_u8());
        dst.put_slice(&[0; 3]);
    }

    /// Reads the body; `None` if `src` is not exactly 8 bytes.
    pub fn decode(mut src: &[u8]) -> Option<Self> {
        if src.len() != Self::LEN {
            return None;
        }
        let app_status = src.get_u32();
        let protocol_status = ProtocolStatus::from_u8(src.get_u8());
        Some(Self {
            app_status,
            protocol_status,
        })
    }
}

/// The 8-byte body of an UNKNOWN_TYPE record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownTypeBody {
    /// The management record type the peer did not understand.
    pub record_type: u8,
}

impl UnknownTypeBody {
    /// Length of the body on the wire.
    pub const LEN: usize = 8;

    /// Writes the body (8 bytes).
    pub fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_u8(self.record_type);
        dst.put_slice(&[0; 7]);
    }

    /// Reads the body; `None` if `src` is not exactly 8 bytes.
    pub fn decode(src: &[u8]) -> Option<Self> {
        if src.len() != Self::LEN {
            return None;
        }
        Some(Self {
            record_type: src[0],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_pads_to_eight() {
        let header = Header::new(RecordType::Stdout, 0x1234, 13);
        assert_eq!(header.padding_length, 3);
        let mut buf = Vec::new();
        header.encode(&mut buf);
        assert_eq!(buf, [1, 6, 0x12, 0x34, 0, 13, 3, 0]);
        assert_eq!(Header::peek(&buf), Some(header));
        assert_eq!(header.record_len(), 24);
    }

    #[test]
    fn header_peek_needs_eight_bytes() {
        assert_eq!(Header::peek(&[1, 6, 0, 1, 0, 0, 0]), None);
    }

    #[test]
    fn every_record_type_maps_to_its_byte_and_back() {
        for byte in 0..=255u8 {
            assert_eq!(RecordType::from_u8(byte).as_u8(), byte);
        }
        assert_eq!(RecordType::from_u8(1), RecordType::BeginRequest);
        assert_eq!(RecordType::from_u8(2), RecordType::AbortRequest);
        assert_eq!(RecordType::from_u8(3), RecordType::EndRequest);
        assert_eq!(RecordType::from_u8(4), RecordType::Params);
        assert_eq!(RecordType::from_u8(5), RecordType::Stdin);
        assert_eq!(RecordType::from_u8(6), RecordType::Stdout);
        assert_eq!(RecordType::from_u8(7), RecordType::Stderr);
        assert_eq!(RecordType::from_u8(8), RecordType::Data);
        assert_eq!(RecordType::from_u8(9), RecordType::GetValues);
        assert_eq!(RecordType::from_u8(10), RecordType::GetValuesResult);
        assert_eq!(RecordType::from_u8(11), RecordType::UnknownType);
        assert_eq!(RecordType::from_u8(12), RecordType::Other(12));
    }

    #[test]
    fn begin_request_body_round_trips_with_keep_conn() {
        let body = BeginRequestBody {
            role: Role::Responder,
            flags: FLAG_KEEP_CONN,
        };
        let mut buf = Vec::new();
        body.encode(&mut buf);
        assert_eq!(buf, [0, 1, 1, 0, 0, 0, 0, 0]);
        let back = BeginRequestBody::decode(&buf);
        assert_eq!(back, Some(body));
        assert!(body.keep_conn());
        assert_eq!(BeginRequestBody::decode(&buf[..7]), None);
    }

    #[test]
    fn end_request_body_round_trips_every_protocol_status() {
        for status in 0..=255u8 {
            let body = EndRequestBody {
                app_status: 0xdead_beef,
                protocol_status: ProtocolStatus::from_u8(status),
            };
            let mut buf = Vec::new();
            body.encode(&mut buf);
            assert_eq!(EndRequestBody::decode(&buf), Some(body));
            assert_eq!(body.protocol_status.as_u8(), status);
        }
        assert_eq!(ProtocolStatus::from_u8(2), ProtocolStatus::Overloaded);
    }

    #[test]
    fn unknown_type_body_round_trips() {
        let body = UnknownTypeBody { record_type: 42 };
        let mut buf = Vec::new();
        body.encode(&mut buf);
        assert_eq!(buf.len(), 8);
        assert_eq!(UnknownTypeBody::decode(&buf), Some(body));
    }

    proptest::proptest! {
        /// Any header, valid or not, reads back as written.
        #[test]
        fn any_header_round_trips(
            version: u8,
            type_byte: u8,
            request_id: u16,
            content_length: u16,
            padding_length: u8,
        ) {
            let header = Header {
                version,
                record_type: RecordType::from_u8(type_byte),
                request_id,
                content_length,
                padding_length,
            };
            let mut buf = Vec::new();
            header.encode(&mut buf);
            proptest::prop_assert_eq!(buf.len(), HEADER_LEN);
            proptest::prop_assert_eq!(Header::peek(&buf), Some(header));
            proptest::prop_assert_eq!(
                header.record_len(),
                HEADER_LEN + content_length as usize + padding_length as usize
            );
        }
    }

    #[test]
    fn roles_map_to_wire_values() {
        for value in [1u16, 2, 3, 9] {
            assert_eq!(Role::from_u16(value).as_u16(), value);
        }
    }
}
