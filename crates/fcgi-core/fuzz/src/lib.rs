//! The checks behind the fuzz targets, kept apart from libFuzzer so that
//! `crates/fcgi-core/tests/fuzz_smoke.rs` runs the same code on stable, in the normal suite.
//!
//! Each check drives a public decoder (or an encoder, then the decoders) over its input and
//! panics when an invariant breaks. Decoding errors are expected; panics are bugs.

use bytes::BytesMut;
use fcgi_core::proto::cgi::{find_head_end, find_head_end_from, parse_head};
use fcgi_core::proto::decoder::{Record, RecordDecoder};
use fcgi_core::proto::encoder::{
    encode_begin_request, encode_end_request, encode_params, encode_request, encode_stream_chunk,
    encode_stream_end, request_encoded_len_bound,
};
use fcgi_core::proto::params::{decode_pair, encode_pair, encoded_pair_len, NameValueIter, Params};
use fcgi_core::proto::record::{
    BeginRequestBody, EndRequestBody, ProtocolStatus, RecordType, Role, MAX_CONTENT_LEN,
};
use fcgi_core::proto::response::{Event, ResponseDecoder, DEFAULT_MAX_HEAD_LEN};
use fcgi_core::ProtocolError;

/// What a `ResponseDecoder` made of some bytes: its events, then the error that stopped
/// it, if any.
type Outcome = (Vec<Event>, Option<ProtocolError>);

/// Runs a `ResponseDecoder` over `data`, fed `step` bytes at a time, until it needs more
/// bytes than there are or fails.
fn drive_response(data: &[u8], request_id: u16, max_head_len: usize, step: usize) -> Outcome {
    let mut decoder = ResponseDecoder::new(request_id, max_head_len);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in data.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(err) => return (events, Some(err)),
            }
        }
    }
    if data.is_empty() {
        assert_eq!(decoder.decode(&mut buf), Ok(None));
    }
    (events, None)
}

/// The order every response keeps: at most one head, body only after it, nothing after
/// the end, no empty chunks.
fn assert_event_order(events: &[Event]) {
    let mut head_seen = false;
    for (i, event) in events.iter().enumerate() {
        match event {
            Event::Head(head) => {
                assert!(!head_seen, "two heads");
                assert!(!head.headers.contains_key("status"));
                head_seen = true;
            }
            Event::Body(chunk) => assert!(head_seen && !chunk.is_empty(), "body before head"),
            Event::Stderr(chunk) => assert!(!chunk.is_empty(), "empty stderr event"),
            Event::End(_) => assert_eq!(i, events.len() - 1, "events after the end"),
        }
    }
}

/// Bytes as a server's answer: records until the decoder needs more or fails (accounting
/// for every byte), then the same bytes through a `ResponseDecoder`, whole and one byte at
/// a time, which must give the same events and the same error.
pub fn record_decoder(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut decoder = RecordDecoder::new();
    loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(record)) => {
                assert_eq!(before - buf.len(), record.header.record_len());
                assert_eq!(
                    record.content.len(),
                    usize::from(record.header.content_length)
                );
            }
            Ok(None) | Err(_) => {
                assert_eq!(buf.len(), before, "consumed bytes without a record");
                break;
            }
        }
    }

    // Answer for the id of the first record, so the input gets past the id check.
    let request_id = data
        .get(2..4)
        .map_or(1, |b| u16::from_be_bytes([b[0], b[1]]));
    for max_head_len in [16, DEFAULT_MAX_HEAD_LEN] {
        let whole = drive_response(data, request_id, max_head_len, data.len());
        let bytewise = drive_response(data, request_id, max_head_len, 1);
        assert_eq!(whole, bytewise, "read boundaries changed the outcome");
        assert_event_order(&whole.0);
    }
}

/// Bytes as PARAMS content: iteration ends, stops after its first error, and what it
/// yields re-encodes to pairs that decode the same.
pub fn name_value(data: &[u8]) {
    let mut pairs = Vec::new();
    let mut failed = false;
    for (i, item) in NameValueIter::new(data).enumerate() {
        assert!(i <= data.len(), "more items than bytes");
        assert!(!failed, "an item after an error");
        match item {
            Ok(pair) => pairs.push(pair),
            Err(_) => failed = true,
        }
    }
    let mut again = Vec::new();
    for (name, value) in &pairs {
        encode_pair(&mut again, name, value);
        assert!(encoded_pair_len(name.len(), value.len()) <= data.len());
    }
    let back: Vec<_> = NameValueIter::new(&again)
        .collect::<Result<_, _>>()
        .expect("re-encoded pairs decode");
    assert_eq!(back, pairs);
    // A pair may start anywhere, even past the end.
    for offset in (0..=data.len() + 1).take(64) {
        if let Ok((_, _, end)) = decode_pair(data, offset) {
            assert!(end > offset && end <= data.len());
        }
    }
}

/// Bytes as the start of STDOUT: a found head end is a real empty line and the first one;
/// a search in two steps (as the response decoder does it) agrees with one search; and a
/// `ResponseDecoder` given these bytes as STDOUT (in two records) agrees with
/// `find_head_end` and `parse_head`.
pub fn cgi_head(data: &[u8]) {
    let found = find_head_end(data);
    if let Some(end) = found {
        assert!(end.head_len < end.body_start && end.body_start <= data.len());
        let separator = &data[end.head_len..end.body_start];
        assert!(separator == b"\n" || separator == b"\r\n");
        assert!(end.head_len == 0 || data[end.head_len - 1] == b'\n');
        assert_eq!(
            find_head_end(&data[..end.body_start - 1]),
            None,
            "not the first"
        );
    }
    let splits: Vec<usize> = if data.len() <= 256 {
        (0..=data.len()).collect()
    } else {
        (0..=64).map(|i| i * data.len() / 64).collect()
    };
    for k in splits {
        if find_head_end(&data[..k]).is_none() {
            assert_eq!(
                find_head_end_from(data, k.saturating_sub(3)),
                found,
                "split {k}"
            );
        }
    }
    if let Ok(head) = parse_head(data) {
        assert!(!head.headers.contains_key("status"));
    }

    // The same bytes through the response decoder.
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut wire = BytesMut::new();
    for part in [&data[..split], &data[split..]] {
        encode_stream_chunk(&mut wire, RecordType::Stdout, 1, part);
    }
    encode_stream_end(&mut wire, RecordType::Stdout, 1);
    let end_ok = EndRequestBody {
        app_status: 0,
        protocol_status: ProtocolStatus::RequestComplete,
    };
    encode_end_request(&mut wire, 1, end_ok);
    let max = 1024;
    let (events, err) = drive_response(&wire, 1, max, wire.len());
    assert_event_order(&events);
    let expected_err = match found {
        Some(end) if end.head_len > max => Some(ProtocolError::HeadTooLarge { limit: max }),
        Some(end) => parse_head(&data[..end.head_len])
            .err()
            .map(ProtocolError::from),
        None if data.len().saturating_sub(1) > max => {
            Some(ProtocolError::HeadTooLarge { limit: max })
        }
        None => Some(ProtocolError::EndBeforeHeaders),
    };
    assert_eq!(err, expected_err);
    if let (None, Some(end)) = (&err, found) {
        let head = parse_head(&data[..end.head_len]).expect("parsed above");
        assert_eq!(events.first(), Some(&Event::Head(head)));
        let body: Vec<u8> = events
            .iter()
            .filter_map(|e| match e {
                Event::Body(chunk) => Some(&chunk[..]),
                _ => None,
            })
            .flatten()
            .copied()
            .collect();
        assert_eq!(body, &data[end.body_start..]);
        assert_eq!(events.last(), Some(&Event::End(end_ok)));
    }
}

/// A request to encode: params (some may be too large to insert) and body chunks.
#[derive(Debug, Clone, Default)]
pub struct EncoderInput {
    /// Request id for every record.
    pub request_id: u16,
    /// BEGIN_REQUEST's keep-connection flag.
    pub keep_conn: bool,
    /// Pairs to insert, in order.
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
    /// The body, as the pieces a streaming upload would write.
    pub body_chunks: Vec<Vec<u8>>,
}

/// Encodes a request twice (streamed chunk by chunk, and with `encode_request`) and decodes
/// both: `Params::insert` refuses exactly the pairs over one record; the accepted pairs come
/// back in order with no pair crossing a record; every stream record is non-empty but the
/// last; the STDIN bytes are the body.
pub fn encoder(input: &EncoderInput) {
    let mut params = Params::new();
    let mut accepted = Vec::new();
    for (name, value) in &input.params {
        let fits = encoded_pair_len(name.len(), value.len()) <= MAX_CONTENT_LEN;
        assert_eq!(
            params.insert(name, value).is_ok(),
            fits,
            "insert vs record size"
        );
        if fits {
            accepted.push((&name[..], &value[..]));
        }
    }
    let (id, keep_conn) = (input.request_id, input.keep_conn);

    let mut streamed = BytesMut::new();
    encode_begin_request(&mut streamed, id, Role::Responder, keep_conn);
    encode_params(&mut streamed, id, &params);
    for chunk in &input.body_chunks {
        encode_stream_chunk(&mut streamed, RecordType::Stdin, id, chunk);
    }
    encode_stream_end(&mut streamed, RecordType::Stdin, id);
    let body = input.body_chunks.concat();
    check_request(streamed, input, &accepted, &body);

    let mut whole = BytesMut::new();
    encode_request(&mut whole, id, keep_conn, &params, &body);
    assert!(whole.len() <= request_encoded_len_bound(&params, body.len()));
    check_request(whole, input, &accepted, &body);
}

fn check_request(mut wire: BytesMut, input: &EncoderInput, pairs: &[(&[u8], &[u8])], body: &[u8]) {
    let mut decoder = RecordDecoder::new();
    let mut records: Vec<Record> = Vec::new();
    while let Some(record) = decoder.decode(&mut wire).expect("our own records decode") {
        assert_eq!(record.header.request_id, input.request_id);
        assert_eq!(
            record.header.record_len() % 8,
            0,
            "records are 8-byte aligned"
        );
        records.push(record);
    }
    assert!(wire.is_empty(), "bytes after the last record");

    let mut records = records.into_iter();
    let begin = records.next().expect("BEGIN_REQUEST");
    assert_eq!(begin.header.record_type, RecordType::BeginRequest);
    let begin = BeginRequestBody::decode(&begin.content).expect("8-byte body");
    assert_eq!(begin.role, Role::Responder);
    assert_eq!(begin.keep_conn(), input.keep_conn);

    let mut decoded: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let record = records.next().expect("the empty PARAMS record");
        assert_eq!(record.header.record_type, RecordType::Params);
        if record.content.is_empty() {
            break;
        }
        assert!(record.content.len() <= MAX_CONTENT_LEN);
        for pair in NameValueIter::new(&record.content) {
            // An error here is a pair cut across two records.
            let (name, value) = pair.expect("a record holds whole pairs");
            decoded.push((name.to_vec(), value.to_vec()));
        }
    }
    let expected: Vec<(Vec<u8>, Vec<u8>)> = pairs
        .iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(decoded, expected);

    let mut stdin = Vec::new();
    let mut ended = false;
    for record in records {
        assert!(!ended, "records after the end of STDIN");
        assert_eq!(record.header.record_type, RecordType::Stdin);
        ended = record.content.is_empty();
        stdin.extend_from_slice(&record.content);
    }
    assert!(ended, "STDIN not ended");
    assert_eq!(stdin, body);
}
