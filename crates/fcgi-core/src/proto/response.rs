//! The response side of one request, as a state machine fed with records.
//!
//! ```text
//!             STDOUT (head bytes, buffered up to the limit)
//!             ┌───┐
//!             │   ▼
//!         ┌────────┐  empty line   ┌──────┐  END_REQUEST  ┌──────┐
//! start ─▶│  Head  │──────────────▶│ Body │──────────────▶│ Done │
//!         └────────┘  (Event::Head)└──────┘  (Event::End) └──────┘
//!             │                      │ ▲
//!             │ END_REQUEST          └─┘ STDOUT (Event::Body)
//!             ▼
//!      ProtocolError::EndBeforeHeaders
//! ```
//! STDERR is reported as [`Event::Stderr`] in any state before `Done`.

use bytes::{Bytes, BytesMut};

use super::cgi::{find_head_end, find_head_end_from, parse_head, CgiHead};
use super::decoder::{Record, RecordDecoder};
use super::record::{EndRequestBody, RecordType};
use super::ProtocolError;

/// What the server said, one piece at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The CGI head is complete.
    Head(CgiHead),
    /// A piece of the response body (a slice of the read buffer).
    Body(Bytes),
    /// A piece of the error stream.
    Stderr(Bytes),
    /// The request ended; nothing follows for it.
    End(EndRequestBody),
}

/// Default limit on the CGI head: 64 KiB.
pub const DEFAULT_MAX_HEAD_LEN: usize = 64 * 1024;

#[derive(Debug)]
enum State {
    /// Collecting head bytes (empty while the head arrives in one record).
    Head(BytesMut),
    /// Streaming the body.
    Body,
    /// END_REQUEST seen.
    Done,
}

/// Decodes the records of one request's response.
#[derive(Debug)]
pub struct ResponseDecoder {
    /// The request id this response must carry.
    request_id: u16,
    /// Head size limit: a server that never ends its head must not grow memory forever.
    max_head_len: usize,
    state: State,
    records: RecordDecoder,
    /// Body bytes that came in the same record as the end of the head.
    pending_body: Option<Bytes>,
}

impl ResponseDecoder {
    /// A decoder for the response to `request_id`, with a limit on the CGI head.
    pub fn new(request_id: u16, max_head_len: usize) -> Self {
        Self {
            request_id,
            max_head_len,
            state: State::Head(BytesMut::new()),
            records: RecordDecoder::new(),
            pending_body: None,
        }
    }

    /// Whether END_REQUEST was seen.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Whether the head was parsed.
    pub fn head_seen(&self) -> bool {
        !matches!(self.state, State::Head(_))
    }

    /// Takes bytes off `src` and returns the next event, or `Ok(None)` when more bytes are
    /// needed. After [`Event::End`] it consumes nothing more: bytes left in `src` then belong
    /// to no request (a connection holding them is not clean).
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Event>, ProtocolError> {
        if let Some(body) = self.pending_body.take() {
            return Ok(Some(Event::Body(body)));
        }
        loop {
            if self.is_done() {
                return Ok(None);
            }
            let Some(record) = self.records.decode(src)? else {
                return Ok(None);
            };
            if let Some(event) = self.on_record(record)? {
                return Ok(Some(event));
            }
        }
    }

    fn on_record(&mut self, record: Record) -> Result<Option<Event>, ProtocolError> {
        let header = record.header;
        if header.request_id != self.request_id {
            return Err(ProtocolError::UnexpectedRequestId {
                expected: self.request_id,
                got: header.request_id,
            });
        }
        match header.record_type {
            RecordType::Stdout => self.on_stdout(record.content),
            RecordType::Stderr if record.content.is_empty() => Ok(None),
            RecordType::Stderr => Ok(Some(Event::Stderr(record.content))),
            RecordType::EndRequest => {
                let body = EndRequestBody::decode(&record.content)
                    .ok_or(ProtocolError::MalformedEndRequest)?;
                if !self.head_seen()
                    && body.protocol_status == super::record::ProtocolStatus::RequestComplete
                {
                    return Err(ProtocolError::EndBeforeHeaders);
                }
                self.state = State::Done;
                Ok(Some(Event::End(body)))
            }
            other => Err(ProtocolError::UnexpectedRecord(other)),
        }
    }

    fn on_stdout(&mut self, content: Bytes) -> Result<Option<Event>, ProtocolError> {
        let head_buf = match &mut self.state {
            State::Body => {
                // The empty STDOUT record that ends the stream carries nothing to report.
                return Ok((!content.is_empty()).then_some(Event::Body(content)));
            }
            State::Done => return Ok(None),
            State::Head(buf) => buf,
        };
        if content.is_empty() {
            // STDOUT ended before the head did: END_REQUEST will say EndBeforeHeaders.
            return Ok(None);
        }
        // Fast path: the whole head is in this record, parse it in place.
        if head_buf.is_empty() {
            if let Some(end) = find_head_end(&content) {
                if end.head_len > self.max_head_len {
                    return Err(ProtocolError::HeadTooLarge {
                        limit: self.max_head_len,
                    });
                }
                let head = parse_head(&content[..end.head_len])?;
                self.state = State::Body;
                let rest = content.slice(end.body_start..);
                self.pending_body = (!rest.is_empty()).then_some(rest);
                return Ok(Some(Event::Head(head)));
            }
        }
        // The head spans records: gather it, looking only at line ends in the new bytes
        // (and the three before them, where an empty line may have started).
        let search_from = head_buf.len().saturating_sub(3);
        head_buf.extend_from_slice(&content);
        match find_head_end_from(head_buf, search_from) {
            Some(end) => {
                if end.head_len > self.max_head_len {
                    return Err(ProtocolError::HeadTooLarge {
                        limit: self.max_head_len,
                    });
                }
                let head = parse_head(&head_buf[..end.head_len])?;
                let mut whole = std::mem::take(head_buf);
                self.state = State::Body;
                let rest = whole.split_off(end.body_start).freeze();
                self.pending_body = (!rest.is_empty()).then_some(rest);
                Ok(Some(Event::Head(head)))
            }
            // Without an empty line yet, the head will be at least all but the last byte
            // gathered (which may be the `\r` of the empty line): fail only when even that
            // is over the limit, so the verdict does not depend on where records were cut.
            None if head_buf.len() - 1 > self.max_head_len => Err(ProtocolError::HeadTooLarge {
                limit: self.max_head_len,
            }),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::encoder::{encode_end_request, encode_stream_chunk, encode_stream_end};
    use crate::proto::record::ProtocolStatus;
    use http::StatusCode;

    fn end_ok() -> EndRequestBody {
        EndRequestBody {
            app_status: 0,
            protocol_status: ProtocolStatus::RequestComplete,
        }
    }

    fn response(stdout_chunks: &[&[u8]], stderr: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        if !stderr.is_empty() {
            encode_stream_chunk(&mut buf, RecordType::Stderr, 1, stderr);
        }
        for chunk in stdout_chunks {
            encode_stream_chunk(&mut buf, RecordType::Stdout, 1, chunk);
        }
        encode_stream_end(&mut buf, RecordType::Stdout, 1);
        encode_end_request(&mut buf, 1, end_ok());
        buf
    }

    fn events(mut buf: BytesMut, limit: usize) -> Result<Vec<Event>, ProtocolError> {
        let mut decoder = ResponseDecoder::new(1, limit);
        let mut out = Vec::new();
        while let Some(event) = decoder.decode(&mut buf)? {
            out.push(event);
        }
        assert!(decoder.is_done());
        Ok(out)
    }

    fn body_of(events: &[Event]) -> Vec<u8> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Body(b) => Some(b.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn head_then_body_then_end() {
        let evs = events(
            response(&[b"Status: 201 Created\r\nX-A: 1\r\n\r\nhello"], b"warn"),
            1024,
        )
        .unwrap();
        assert_eq!(evs[0], Event::Stderr(Bytes::from_static(b"warn")));
        let Event::Head(head) = &evs[1] else {
            panic!("no head: {evs:?}")
        };
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(body_of(&evs), b"hello");
        assert_eq!(evs.last(), Some(&Event::End(end_ok())));
    }

    #[test]
    fn a_head_split_across_records_is_gathered() {
        let whole = b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nbody";
        for cut1 in 1..whole.len() - 1 {
            for cut2 in [cut1 + 1, whole.len() - 1] {
                let evs = events(
                    response(&[&whole[..cut1], &whole[cut1..cut2], &whole[cut2..]], b""),
                    1024,
                )
                .unwrap();
                let Event::Head(head) = &evs[0] else {
                    panic!("no head at cut {cut1}/{cut2}")
                };
                assert_eq!(head.headers.get_all("set-cookie").iter().count(), 2);
                assert_eq!(body_of(&evs), b"body", "cut {cut1}/{cut2}");
            }
        }
    }

    #[test]
    fn an_empty_head_split_inside_its_crlf_is_found() {
        let evs = events(response(&[b"\r", b"\nbody"], b""), 1024).unwrap();
        assert!(matches!(&evs[0], Event::Head(h) if h.headers.is_empty()));
        assert_eq!(body_of(&evs), b"body");
    }

    #[test]
    fn a_head_of_exactly_the_limit_passes_however_it_is_split() {
        let whole: &[u8] = b"X-A: 1\r\n\r\nbody";
        let head_len = 8;
        for cut in 1..whole.len() {
            let split = response(&[&whole[..cut], &whole[cut..]], b"");
            assert!(events(split.clone(), head_len).is_ok(), "cut at {cut}");
            assert_eq!(
                events(split, head_len - 1).unwrap_err(),
                ProtocolError::HeadTooLarge {
                    limit: head_len - 1
                },
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn end_before_head_is_a_protocol_error() {
        let err = events(response(&[b"X-A: 1\r\n"], b""), 1024).unwrap_err();
        assert_eq!(err, ProtocolError::EndBeforeHeaders);
    }

    #[test]
    fn an_overloaded_end_without_head_is_reported_as_an_end() {
        let mut buf = BytesMut::new();
        encode_end_request(
            &mut buf,
            1,
            EndRequestBody {
                app_status: 0,
                protocol_status: ProtocolStatus::Overloaded,
            },
        );
        let evs = events(buf, 1024).unwrap();
        assert!(matches!(evs[0], Event::End(e) if e.protocol_status == ProtocolStatus::Overloaded));
    }

    #[test]
    fn an_oversized_head_is_an_error() {
        let big = vec![b'x'; 5000];
        let mut head = b"X-Big: ".to_vec();
        head.extend_from_slice(&big);
        let err = events(response(&[&head, &head], b""), 4096).unwrap_err();
        assert_eq!(err, ProtocolError::HeadTooLarge { limit: 4096 });
    }

    #[test]
    fn a_wrong_request_id_is_an_error() {
        let mut buf = BytesMut::new();
        encode_stream_chunk(&mut buf, RecordType::Stdout, 2, b"X: 1\r\n\r\n");
        let mut decoder = ResponseDecoder::new(1, 1024);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(ProtocolError::UnexpectedRequestId {
                expected: 1,
                got: 2
            })
        );
    }

    #[test]
    fn bytes_after_the_end_are_left_in_the_buffer() {
        let mut buf = response(&[b"\r\n"], b"");
        buf.extend_from_slice(b"junk");
        let mut decoder = ResponseDecoder::new(1, 1024);
        while decoder.decode(&mut buf).unwrap().is_some() {}
        assert_eq!(&buf[..], b"junk");
    }
}
