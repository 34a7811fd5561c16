//! Cuts whole records out of a read buffer.
//!
//! Bytes go in through a `BytesMut`; a record comes out with its content as a `Bytes`
//! that shares the buffer's memory (no copy), or `Ok(None)` when more bytes are needed.

use bytes::{Buf, Bytes, BytesMut};

use super::record::{Header, VERSION_1};
use super::ProtocolError;

/// One record as received: its header and its content (padding removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's header.
    pub header: Header,
    /// The content, a slice of the read buffer.
    pub content: Bytes,
}

/// Decodes records from a byte stream. Holds no buffer of its own: the caller owns the
/// read buffer and passes it in, so the decoder never grows memory.
#[derive(Debug, Default, Clone)]
pub struct RecordDecoder {
    _private: (),
}

impl RecordDecoder {
    /// A decoder for a fresh stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next whole record off the front of `src`, or returns `Ok(None)` (consuming
    /// nothing) when `src` does not yet hold one. A record whose version is not 1 is an
    /// error: the stream is not FastCGI, or it lost sync.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Record>, ProtocolError> {
        let Some(header) = Header::peek(src) else {
            return Ok(None);
        };
        if header.version != VERSION_1 {
            return Err(ProtocolError::UnsupportedVersion(header.version));
        }
        let total = header.record_len();
        if src.len() < total {
            // Make sure one reserve brings the whole record in.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(super::record::HEADER_LEN);
        let content = src.split_to(header.content_length as usize).freeze();
        src.advance(header.padding_length as usize);
        Ok(Some(Record { header, content }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::record::RecordType;

    #[test]
    fn needs_more_bytes_until_the_padding_is_in() {
        let mut bytes = BytesMut::new();
        crate::proto::encoder::encode_stream_chunk(&mut bytes, RecordType::Stdout, 1, b"hello");
        let full = bytes.clone();
        let mut decoder = RecordDecoder::new();
        for cut in 0..full.len() {
            let mut partial = BytesMut::from(&full[..cut]);
            assert_eq!(decoder.decode(&mut partial).unwrap(), None);
            assert_eq!(partial.len(), cut, "nothing consumed");
        }
        let record = decoder.decode(&mut bytes).unwrap().unwrap();
        assert_eq!(&record.content[..], b"hello");
        assert!(bytes.is_empty());
    }

    #[test]
    fn a_wrong_version_is_a_protocol_error() {
        let mut bytes = BytesMut::from(&[2u8, 6, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(
            RecordDecoder::new().decode(&mut bytes),
            Err(ProtocolError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn content_is_a_slice_of_the_read_buffer() {
        let mut bytes = BytesMut::new();
        crate::proto::encoder::encode_stream_chunk(&mut bytes, RecordType::Stdout, 1, &[7; 4096]);
        let base = bytes.as_ptr() as usize;
        let record = RecordDecoder::new().decode(&mut bytes).unwrap().unwrap();
        assert_eq!(record.content.as_ptr() as usize, base + 8);
    }
}
