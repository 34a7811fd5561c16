//! Property tests of the sans-IO codec: whatever the sizes and however the bytes are cut
//! (into records by the sender, into reads by the socket), every encoder round-trips
//! through the crate's own decoders, and the decoders never panic on arbitrary bytes.
//!
//! The "never panics" properties are the bounded, always-run counterpart of the fuzz
//! targets in `crates/fcgi-core/fuzz/`.

use bytes::{BufMut, Bytes, BytesMut};
use fcgi_core::proto::cgi::{find_head_end, find_head_end_from, parse_head, CgiHead};
use fcgi_core::proto::decoder::{Record, RecordDecoder};
use fcgi_core::proto::encoder::{
    encode_abort_request, encode_begin_request, encode_end_request, encode_params, encode_request,
    encode_stream_chunk, encode_stream_end, params_encoded_len_bound, request_encoded_len_bound,
    stream_encoded_len,
};
use fcgi_core::proto::params::{
    decode_pair, encode_pair, encoded_pair_len, NameValueIter, Params, ParamsError,
};
use fcgi_core::proto::record::{
    BeginRequestBody, EndRequestBody, Header, ProtocolStatus, RecordType, Role, HEADER_LEN,
    MAX_CONTENT_LEN, VERSION_1,
};
use fcgi_core::proto::response::{Event, ResponseDecoder, DEFAULT_MAX_HEAD_LEN};
use fcgi_core::ProtocolError;
use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{HeaderMap, StatusCode};
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `len` bytes derived from `seed`: large inputs without one proptest value per byte
/// (which would make generation and shrinking slow).
fn filler(len: usize, seed: u8) -> Vec<u8> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// Lengths biased towards the edges of a record: tiny, full, and anything between.
fn content_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0..=64usize,
        1 => (MAX_CONTENT_LEN - 70)..=MAX_CONTENT_LEN,
        2 => 0..=MAX_CONTENT_LEN,
        1 => Just(MAX_CONTENT_LEN),
    ]
}

/// Sorted, deduplicated cut points in `0..=len`, picked by proptest.
fn cut_points(len: usize, picks: &[Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = picks.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// `data` cut at `cuts` (some pieces may be empty: a read can return nothing new).
fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts {
        out.push(&data[start..cut]);
        start = cut;
    }
    out.push(&data[start..]);
    out
}

/// Feeds `wire` to a [`RecordDecoder`] one piece at a time, as reads would deliver it.
fn records_in_pieces(wire: &[u8], cuts: &[usize]) -> Vec<Record> {
    let mut decoder = RecordDecoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in pieces(wire, cuts) {
        buf.extend_from_slice(piece);
        while let Some(record) = decoder.decode(&mut buf).expect("well-formed wire") {
            out.push(record);
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    out
}

/// Writes one record with an arbitrary padding (the decoder must accept any padding, not
/// only the 8-byte alignment our encoder uses).
fn put_raw_record(dst: &mut BytesMut, header: Header, content: &[u8]) {
    header.encode(dst);
    dst.put_slice(content);
    dst.put_bytes(0xAA, header.padding_length as usize);
}

/// Feeds `wire` to a [`ResponseDecoder`] one piece at a time; all events, or the error.
fn response_events(
    wire: &[u8],
    cuts: &[usize],
    request_id: u16,
    max_head_len: usize,
) -> Result<(Vec<Event>, BytesMut), ProtocolError> {
    let mut decoder = ResponseDecoder::new(request_id, max_head_len);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in pieces(wire, cuts) {
        buf.extend_from_slice(piece);
        while let Some(event) = decoder.decode(&mut buf)? {
            events.push(event);
        }
    }
    Ok((events, buf))
}

fn end_ok() -> EndRequestBody {
    EndRequestBody {
        app_status: 0,
        protocol_status: ProtocolStatus::RequestComplete,
    }
}

// ---------------------------------------------------------------------------------------
// (a) Records
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct RawRecord {
    type_byte: u8,
    request_id: u16,
    content_len: usize,
    seed: u8,
    padding: u8,
}

fn raw_record() -> impl Strategy<Value = RawRecord> {
    (
        any::<u8>(),
        any::<u16>(),
        content_len(),
        any::<u8>(),
        prop_oneof![Just(None), any::<u8>().prop_map(Some)],
    )
        .prop_map(|(type_byte, request_id, content_len, seed, padding)| {
            let padding =
                padding.unwrap_or_else(|| fcgi_core::proto::record::padding_for(content_len));
            RawRecord {
                type_byte,
                request_id,
                content_len,
                seed,
                padding,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Records of any type, id, content size and padding come back whole and in order,
    /// wherever the reads cut the stream.
    #[test]
    fn records_round_trip_through_chunked_reads(
        records in prop::collection::vec(raw_record(), 1..5),
        picks in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        for r in &records {
            let content = filler(r.content_len, r.seed);
            let header = Header {
                version: VERSION_1,
                record_type: RecordType::from_u8(r.type_byte),
                request_id: r.request_id,
                content_length: r.content_len as u16,
                padding_length: r.padding,
            };
            put_raw_record(&mut wire, header, &content);
            expected.push((header, content));
        }
        let cuts = cut_points(wire.len(), &picks);
        let decoded = records_in_pieces(&wire, &cuts);
        prop_assert_eq!(decoded.len(), expected.len());
        for (record, (header, content)) in decoded.iter().zip(&expected) {
            prop_assert_eq!(record.header, *header);
            prop_assert_eq!(&record.content[..], &content[..]);
        }
    }

    /// A record is never handed out before its last padding byte is in, and an
    /// incomplete record consumes nothing.
    #[test]
    fn an_incomplete_record_is_none_and_consumes_nothing(
        r in raw_record(),
        cut in any::<Index>(),
    ) {
        let mut wire = BytesMut::new();
        let header = Header {
            version: VERSION_1,
            record_type: RecordType::from_u8(r.type_byte),
            request_id: r.request_id,
            content_length: r.content_len as u16,
            padding_length: r.padding,
        };
        put_raw_record(&mut wire, header, &filler(r.content_len, r.seed));
        let cut = cut.index(wire.len());
        let mut partial = BytesMut::from(&wire[..cut]);
        prop_assert_eq!(RecordDecoder::new().decode(&mut partial), Ok(None));
        prop_assert_eq!(partial.len(), cut);
    }

    /// Any version byte other than 1 is refused before anything is consumed.
    #[test]
    fn other_versions_are_refused(version in any::<u8>().prop_filter("not 1", |v| *v != 1)) {
        let mut wire = BytesMut::from(&[version, 6, 0, 1, 0, 0, 0, 0][..]);
        prop_assert_eq!(
            RecordDecoder::new().decode(&mut wire),
            Err(ProtocolError::UnsupportedVersion(version))
        );
        prop_assert_eq!(wire.len(), HEADER_LEN);
    }

    /// The typed records (BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST) round-trip their
    /// bodies for any id, role, flag and status, and are 8-byte aligned.
    #[test]
    fn typed_records_round_trip(
        request_id in any::<u16>(),
        role in any::<u16>(),
        keep_conn in any::<bool>(),
        app_status in any::<u32>(),
        protocol_status in any::<u8>(),
        picks in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let mut wire = BytesMut::new();
        encode_begin_request(&mut wire, request_id, Role::from_u16(role), keep_conn);
        encode_abort_request(&mut wire, request_id);
        let end = EndRequestBody {
            app_status,
            protocol_status: ProtocolStatus::from_u8(protocol_status),
        };
        encode_end_request(&mut wire, request_id, end);
        prop_assert_eq!(wire.len() % 8, 0);
        let records = records_in_pieces(&wire, &cut_points(wire.len(), &picks));
        let types: Vec<_> = records.iter().map(|r| r.header.record_type).collect();
        prop_assert_eq!(
            types,
            vec![RecordType::BeginRequest, RecordType::AbortRequest, RecordType::EndRequest]
        );
        prop_assert!(records.iter().all(|r| r.header.request_id == request_id));
        let begin = BeginRequestBody::decode(&records[0].content).unwrap();
        prop_assert_eq!(begin.role.as_u16(), role);
        prop_assert_eq!(begin.keep_conn(), keep_conn);
        prop_assert!(records[1].content.is_empty());
        prop_assert_eq!(EndRequestBody::decode(&records[2].content), Some(end));
    }
}

// ---------------------------------------------------------------------------------------
// (b) Name-value pairs
// ---------------------------------------------------------------------------------------

/// Name and value lengths around the one-byte/four-byte boundary, and large ones.
fn pair_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0..=8usize,
        4 => 124..=132usize,
        1 => 0..=1024usize,
        1 => 65_000..=70_000usize,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any pair round-trips, at its exact encoded size, with the short length form
    /// exactly below 128; every truncation of it is an error, never a panic.
    #[test]
    fn name_value_pairs_round_trip(
        name_len in pair_len(),
        value_len in pair_len(),
        seed in any::<u8>(),
        prefix_len in 0..4usize,
    ) {
        let name = filler(name_len, seed);
        let value = filler(value_len, seed.wrapping_add(1));
        let mut buf = vec![0x55; prefix_len];
        encode_pair(&mut buf, &name, &value);
        prop_assert_eq!(buf.len() - prefix_len, encoded_pair_len(name_len, value_len));
        let name_prefix = if name_len < 128 { 1 } else { 4 };
        prop_assert_eq!(buf[prefix_len] & 0x80 != 0, name_len >= 128);
        prop_assert_eq!(buf[prefix_len + name_prefix] & 0x80 != 0, value_len >= 128);

        let (n, v, end) = decode_pair(&buf, prefix_len).unwrap();
        prop_assert_eq!(n, &name[..]);
        prop_assert_eq!(v, &value[..]);
        prop_assert_eq!(end, buf.len());

        // Cut inside the lengths, the name and the value.
        let pair_len = buf.len() - prefix_len;
        for cut in [0, 1, name_prefix, name_prefix + 1, pair_len / 2, pair_len - 1] {
            let cut = prefix_len + cut.min(pair_len - 1);
            prop_assert!(decode_pair(&buf[..cut], prefix_len).is_err());
        }
    }

    /// A sequence of pairs iterates back in order.
    #[test]
    fn name_value_sequences_round_trip(
        lens in prop::collection::vec((pair_len(), 0..200usize), 0..8),
        seed in any::<u8>(),
    ) {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = lens
            .iter()
            .enumerate()
            .map(|(i, &(n, v))| (filler(n, seed ^ i as u8), filler(v, !seed ^ i as u8)))
            .collect();
        let mut buf = Vec::new();
        for (n, v) in &pairs {
            encode_pair(&mut buf, n, v);
        }
        let back: Vec<(Vec<u8>, Vec<u8>)> = NameValueIter::new(&buf)
            .map(|p| p.map(|(n, v)| (n.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(back, pairs);
    }
}

// ---------------------------------------------------------------------------------------
// (c) Params framed into PARAMS records
// ---------------------------------------------------------------------------------------

fn param_pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let value_len = prop_oneof![
        6 => 0..=300usize,
        2 => 10_000..=40_000usize,
        1 => (MAX_CONTENT_LEN - 80)..=(MAX_CONTENT_LEN + 10),
    ];
    ("[A-Z_]{0,40}", value_len, any::<u8>())
        .prop_map(|(name, len, seed)| (name.into_bytes(), filler(len, seed)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Params go out as records that each hold whole pairs, packed greedily, within the
    /// advertised bound, and come back in insertion order. A pair too large for one record
    /// is refused and leaves the set unchanged.
    #[test]
    fn params_round_trip_without_splitting_a_pair(
        pairs in prop::collection::vec(param_pair(), 0..12),
        request_id in any::<u16>(),
        picks in prop::collection::vec(any::<Index>(), 0..10),
    ) {
        let mut params = Params::new();
        let mut accepted = Vec::new();
        for (name, value) in &pairs {
            let before = params.clone();
            match params.insert(name, value) {
                Ok(_) => accepted.push((name.clone(), value.clone())),
                Err(ParamsError::PairTooLarge { encoded_len, .. }) => {
                    prop_assert!(encoded_len > MAX_CONTENT_LEN);
                    prop_assert_eq!(encoded_len, encoded_pair_len(name.len(), value.len()));
                    prop_assert!(params == before, "a refused pair changed the set");
                }
            }
        }
        prop_assert_eq!(params.len(), accepted.len());
        let iterated: Vec<_> = params.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(&iterated, &accepted);

        let mut wire = BytesMut::new();
        encode_params(&mut wire, request_id, &params);
        prop_assert!(wire.len() <= params_encoded_len_bound(&params));
        let records = records_in_pieces(&wire, &cut_points(wire.len(), &picks));

        let (last, body) = records.split_last().unwrap();
        prop_assert!(last.content.is_empty(), "the stream ends with an empty record");
        let mut decoded = Vec::new();
        let mut firsts = Vec::new();
        for record in &records {
            prop_assert_eq!(record.header.record_type, RecordType::Params);
            prop_assert_eq!(record.header.request_id, request_id);
            prop_assert!(record.content.len() <= MAX_CONTENT_LEN);
            prop_assert_eq!(record.header.record_len() % 8, 0);
            let mut first = None;
            for pair in NameValueIter::new(&record.content) {
                // An error here is a pair cut across two records.
                let (n, v) = pair.map_err(|e| TestCaseError::fail(format!("{e}")))?;
                first.get_or_insert(encoded_pair_len(n.len(), v.len()));
                decoded.push((n.to_vec(), v.to_vec()));
            }
            firsts.push(first);
        }
        prop_assert_eq!(&decoded, &accepted);
        // Greedy packing: a record was closed only because the next pair did not fit.
        for (i, record) in body.iter().enumerate().take(body.len().saturating_sub(1)) {
            prop_assert!(!record.content.is_empty());
            let next_first = firsts[i + 1].unwrap();
            prop_assert!(record.content.len() + next_first > MAX_CONTENT_LEN);
        }

        // The whole request stays within its bound too.
        let mut request = BytesMut::new();
        encode_request(&mut request, request_id, true, &params, b"body");
        prop_assert!(request.len() <= request_encoded_len_bound(&params, 4));
    }

    /// `insert_with_prefix` is `insert` of the joined, mapped name; `append` is inserting
    /// the other set's pairs one by one.
    #[test]
    fn params_builders_agree(
        prefix in "[A-Z_]{0,8}",
        suffix in "[a-z-]{0,20}",
        value in "[ -~]{0,64}",
        other in prop::collection::vec(("[A-Z]{1,8}", "[ -~]{0,16}"), 0..5),
    ) {
        let map = |b: u8| if b == b'-' { b'_' } else { b.to_ascii_uppercase() };
        let mut built = Params::new();
        built.insert_with_prefix(prefix.as_bytes(), suffix.as_bytes(), map, value.as_bytes()).unwrap();
        let mut joined = prefix.clone().into_bytes();
        joined.extend(suffix.bytes().map(map));
        let mut expected = Params::new();
        expected.insert(&joined, &value).unwrap();
        prop_assert!(built == expected);

        let other_params = Params::try_from(other.clone()).unwrap();
        built.append(&other_params);
        for (n, v) in &other {
            expected.insert(n, v).unwrap();
        }
        prop_assert!(built == expected);
        prop_assert_eq!(built.len(), 1 + other.len());
    }
}

// ---------------------------------------------------------------------------------------
// (d) STDIN bodies
// ---------------------------------------------------------------------------------------

fn body_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0..=100usize,
        1 => 65_520..=65_545usize,
        2 => 0..=200_000usize,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A body written as stream chunks plus the end record reads back as the same bytes,
    /// in non-empty records of the right type and id, ended by exactly one empty record.
    #[test]
    fn stdin_bodies_round_trip(
        chunk_lens in prop::collection::vec(body_len(), 0..4),
        seed in any::<u8>(),
        request_id in any::<u16>(),
        picks in prop::collection::vec(any::<Index>(), 0..10),
    ) {
        let chunks: Vec<Vec<u8>> = chunk_lens
            .iter()
            .enumerate()
            .map(|(i, &len)| filler(len, seed.wrapping_add(i as u8)))
            .collect();
        let mut wire = BytesMut::new();
        let mut expected_len = 0;
        for chunk in &chunks {
            encode_stream_chunk(&mut wire, RecordType::Stdin, request_id, chunk);
            expected_len += stream_encoded_len(chunk.len());
            prop_assert_eq!(wire.len(), expected_len);
        }
        encode_stream_end(&mut wire, RecordType::Stdin, request_id);
        let records = records_in_pieces(&wire, &cut_points(wire.len(), &picks));
        let (last, data) = records.split_last().unwrap();
        prop_assert!(last.content.is_empty());
        let mut joined = Vec::new();
        for record in &records {
            prop_assert_eq!(record.header.record_type, RecordType::Stdin);
            prop_assert_eq!(record.header.request_id, request_id);
            prop_assert_eq!(record.header.record_len() % 8, 0);
        }
        for record in data {
            prop_assert!(!record.content.is_empty(), "an empty record would end the stream early");
            joined.extend_from_slice(&record.content);
        }
        prop_assert_eq!(joined, chunks.concat());
    }
}

// ---------------------------------------------------------------------------------------
// (e) CGI heads through ResponseDecoder
// ---------------------------------------------------------------------------------------

/// An HTTP token (header name) that is not `Status`.
fn header_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}".prop_filter("Status is not a header", |n| {
        !n.eq_ignore_ascii_case("status")
    })
}

/// Visible ASCII with inner spaces, nothing to trim (or empty).
fn header_value() -> impl Strategy<Value = String> {
    "([!-~]([ -~]{0,24}[!-~])?)?"
}

#[derive(Debug, Clone)]
struct CgiCase {
    /// Header lines as (name, value), names drawn from a small pool so they repeat.
    headers: Vec<(String, String)>,
    /// `Status` line: where it goes, how the name is spelled, the code, a reason.
    status: Option<(Index, String, u16, String)>,
    /// Whitespace after each colon (ignored by the parser).
    spacing: Vec<String>,
    /// Per line (and for the empty line): CRLF or LF.
    crlf: Vec<bool>,
    body: Vec<u8>,
}

fn cgi_case() -> impl Strategy<Value = CgiCase> {
    let pool = prop::collection::vec(header_name(), 1..5);
    let headers = pool.prop_flat_map(|pool| {
        prop::collection::vec((prop::sample::select(pool), header_value()), 0..10)
    });
    // Location sometimes, to exercise the implied 302.
    let headers = (headers, any::<Option<Index>>(), "/[a-z]{0,8}").prop_map(
        |(mut headers, location, path)| {
            if let Some(at) = location {
                let at = at.index(headers.len() + 1);
                headers.insert(at, ("Location".to_owned(), path));
            }
            headers
        },
    );
    let status = prop::option::of((
        any::<Index>(),
        prop::sample::select(vec!["Status", "status", "STATUS", "StAtUs"]).prop_map(String::from),
        100u16..=999,
        prop_oneof![Just(String::new()), " [A-Za-z ]{0,12}"],
    ));
    let spacing = prop::collection::vec(prop_oneof![Just(""), Just(" "), Just("  \t")], 1..4)
        .prop_map(|v| v.into_iter().map(String::from).collect());
    let crlf = prop::collection::vec(any::<bool>(), 1..6);
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        (0..70_000usize, any::<u8>()).prop_map(|(len, seed)| filler(len, seed)),
    ];
    (headers, status, spacing, crlf, body).prop_map(|(headers, status, spacing, crlf, body)| {
        CgiCase {
            headers,
            status,
            spacing,
            crlf,
            body,
        }
    })
}

impl CgiCase {
    /// The STDOUT stream and the length of its head (up to, not including, the empty line).
    fn render(&self) -> (Vec<u8>, usize) {
        let mut lines: Vec<(String, String)> = self.headers.clone();
        if let Some((at, name, code, reason)) = &self.status {
            lines.insert(
                at.index(lines.len() + 1),
                (name.clone(), format!("{code}{reason}")),
            );
        }
        let mut out = Vec::new();
        for (i, (name, value)) in lines.iter().enumerate() {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(self.spacing[i % self.spacing.len()].as_bytes());
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(self.line_end(i));
        }
        let head_len = out.len();
        out.extend_from_slice(self.line_end(lines.len()));
        out.extend_from_slice(&self.body);
        (out, head_len)
    }

    fn line_end(&self, i: usize) -> &'static [u8] {
        if self.crlf[i % self.crlf.len()] {
            b"\r\n"
        } else {
            b"\n"
        }
    }

    fn expected_head(&self) -> CgiHead {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let status = match &self.status {
            Some((_, _, code, _)) => StatusCode::from_u16(*code).unwrap(),
            None if headers.contains_key(LOCATION) => StatusCode::FOUND,
            None => StatusCode::OK,
        };
        CgiHead { status, headers }
    }
}

/// A response on the wire: STDOUT cut into records at `record_cuts`, STDERR records slipped
/// in before some of them, the empty STDOUT record, END_REQUEST.
fn response_wire(stdout: &[u8], record_cuts: &[usize], stderr: &[(Index, Vec<u8>)]) -> Vec<u8> {
    let segments: Vec<&[u8]> = pieces(stdout, record_cuts)
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    let mut stderr_at: Vec<(usize, &[u8])> = stderr
        .iter()
        .map(|(at, chunk)| (at.index(segments.len() + 1), &chunk[..]))
        .collect();
    stderr_at.sort_by_key(|(at, _)| *at);
    let mut wire = BytesMut::new();
    let mut next_stderr = stderr_at.iter().peekable();
    for (i, segment) in segments.iter().enumerate() {
        while let Some((_, chunk)) = next_stderr.next_if(|(at, _)| *at == i) {
            encode_stream_chunk(&mut wire, RecordType::Stderr, 1, chunk);
        }
        encode_stream_chunk(&mut wire, RecordType::Stdout, 1, segment);
    }
    for (_, chunk) in next_stderr {
        encode_stream_chunk(&mut wire, RecordType::Stderr, 1, chunk);
    }
    encode_stream_end(&mut wire, RecordType::Stdout, 1);
    encode_end_request(&mut wire, 1, end_ok());
    wire.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the headers, line ends, record boundaries and read boundaries, the decoder
    /// yields one head with the rendered status and headers, then the body byte for byte,
    /// the STDERR chunks, and the end.
    #[test]
    fn cgi_responses_round_trip(
        case in cgi_case(),
        record_picks in prop::collection::vec(any::<Index>(), 0..6),
        read_picks in prop::collection::vec(any::<Index>(), 0..6),
        stderr in prop::collection::vec((any::<Index>(), "[ -~]{1,20}".prop_map(String::into_bytes)), 0..3),
    ) {
        let (stdout, _) = case.render();
        let record_cuts = cut_points(stdout.len(), &record_picks);
        let wire = response_wire(&stdout, &record_cuts, &stderr);
        let (events, rest) = response_events(
            &wire, &cut_points(wire.len(), &read_picks), 1, DEFAULT_MAX_HEAD_LEN,
        ).map_err(|e| TestCaseError::fail(format!("{e}: {:?}", String::from_utf8_lossy(&stdout))))?;
        prop_assert!(rest.is_empty());

        let mut head = None;
        let mut body = Vec::new();
        let mut errors = Vec::new();
        for (i, event) in events.iter().enumerate() {
            match event {
                Event::Head(h) => {
                    prop_assert!(head.is_none(), "two heads");
                    head = Some(h.clone());
                }
                Event::Body(chunk) => {
                    prop_assert!(head.is_some(), "body before head");
                    prop_assert!(!chunk.is_empty());
                    body.extend_from_slice(chunk);
                }
                Event::Stderr(chunk) => errors.extend_from_slice(chunk),
                Event::End(end) => {
                    prop_assert_eq!(i, events.len() - 1, "end is last");
                    prop_assert_eq!(*end, end_ok());
                }
            }
        }
        prop_assert!(matches!(events.last(), Some(Event::End(_))));
        prop_assert_eq!(head, Some(case.expected_head()));
        prop_assert_eq!(body, case.body.clone());
        // STDERR chunks go out ordered by where they were slipped in (a stable sort).
        let mut expected_errors = stderr.clone();
        let segments = pieces(&stdout, &record_cuts).iter().filter(|p| !p.is_empty()).count();
        expected_errors.sort_by_key(|(at, _)| at.index(segments + 1));
        let expected_errors: Vec<u8> = expected_errors.into_iter().flat_map(|(_, c)| c).collect();
        prop_assert_eq!(errors, expected_errors);
    }

    /// The head limit is exact and does not depend on where the records were cut: a head
    /// of exactly the limit passes, one byte over fails.
    #[test]
    fn the_head_limit_is_exact_whatever_the_records(
        case in cgi_case(),
        record_picks in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let (stdout, head_len) = case.render();
        let wire = response_wire(&stdout, &cut_points(stdout.len(), &record_picks), &[]);
        prop_assert!(response_events(&wire, &[], 1, head_len).is_ok());
        if head_len > 0 {
            prop_assert_eq!(
                response_events(&wire, &[], 1, head_len - 1).unwrap_err(),
                ProtocolError::HeadTooLarge { limit: head_len - 1 }
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Decoders never panic on arbitrary bytes
// ---------------------------------------------------------------------------------------

/// Bytes that look like records often enough to get past the header checks: a few
/// records with random fields (version mostly 1), then random corruption.
fn record_soup() -> impl Strategy<Value = Vec<u8>> {
    let record = (
        prop_oneof![9 => Just(1u8), 1 => any::<u8>()],
        prop_oneof![4 => 3u8..=7, 1 => any::<u8>()],
        prop_oneof![4 => Just(1u16), 1 => any::<u16>()],
        prop::collection::vec(any::<u8>(), 0..64),
        prop_oneof![Just(0u8), any::<u8>()],
    );
    let records = prop::collection::vec(record, 0..8).prop_map(|records| {
        let mut wire = BytesMut::new();
        for (version, type_byte, id, content, padding) in records {
            let header = Header {
                version,
                record_type: RecordType::from_u8(type_byte),
                request_id: id,
                content_length: content.len() as u16,
                padding_length: padding % 16,
            };
            put_raw_record(&mut wire, header, &content);
        }
        wire.to_vec()
    });
    let corruptions = prop::collection::vec((any::<Index>(), any::<u8>()), 0..4);
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        3 => (records, corruptions, any::<Option<Index>>()).prop_map(|(mut wire, corruptions, truncate)| {
            if !wire.is_empty() {
                for (at, byte) in corruptions {
                    let at = at.index(wire.len());
                    wire[at] = byte;
                }
            }
            if let Some(at) = truncate {
                wire.truncate(at.index(wire.len() + 1));
            }
            wire
        }),
    ]
}

/// Runs a [`ResponseDecoder`] over `wire` (cut at `cuts`) until it needs more bytes or
/// fails; returns the events, and the error if any.
fn drive_response(
    wire: &[u8],
    cuts: &[usize],
    max_head_len: usize,
) -> (Vec<Event>, Option<ProtocolError>) {
    let mut decoder = ResponseDecoder::new(1, max_head_len);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for piece in pieces(wire, cuts) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(err) => return (events, Some(err)),
            }
        }
    }
    (events, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// RecordDecoder: never panics, and accounts for every byte it consumes.
    #[test]
    fn record_decoder_never_panics(wire in record_soup()) {
        let mut buf = BytesMut::from(&wire[..]);
        let mut decoder = RecordDecoder::new();
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(record)) => {
                    prop_assert_eq!(before - buf.len(), record.header.record_len());
                    prop_assert_eq!(record.content.len(), record.header.content_length as usize);
                }
                Ok(None) | Err(_) => {
                    prop_assert_eq!(buf.len(), before);
                    break;
                }
            }
        }
    }

    /// ResponseDecoder: never panics, keeps its event order, and gives the same events
    /// (and the same error) however the bytes arrive.
    #[test]
    fn response_decoder_never_panics_and_ignores_read_boundaries(
        wire in record_soup(),
        picks in prop::collection::vec(any::<Index>(), 0..8),
        max_head_len in prop_oneof![0..64usize, Just(DEFAULT_MAX_HEAD_LEN)],
    ) {
        let whole = drive_response(&wire, &[], max_head_len);
        let cut = drive_response(&wire, &cut_points(wire.len(), &picks), max_head_len);
        prop_assert_eq!(&whole, &cut);

        let (events, _) = whole;
        let mut head_seen = false;
        for (i, event) in events.iter().enumerate() {
            match event {
                Event::Head(_) => {
                    prop_assert!(!head_seen);
                    head_seen = true;
                }
                Event::Body(chunk) => prop_assert!(head_seen && !chunk.is_empty()),
                Event::Stderr(chunk) => prop_assert!(!chunk.is_empty()),
                Event::End(_) => prop_assert_eq!(i, events.len() - 1),
            }
        }
    }

    /// Name-value iteration: never panics, ends, and what it yields re-encodes to pairs
    /// that decode the same.
    #[test]
    fn name_value_iter_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut pairs = Vec::new();
        for (i, item) in NameValueIter::new(&bytes).enumerate() {
            prop_assert!(i <= bytes.len());
            match item {
                Ok(pair) => pairs.push(pair),
                Err(_) => break,
            }
        }
        let mut again = Vec::new();
        for (n, v) in &pairs {
            encode_pair(&mut again, n, v);
        }
        let back: Vec<_> = NameValueIter::new(&again).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(back, pairs);
    }

    /// CGI head search and parsing: never panic; a found end is a real empty line, the
    /// first one, and an incremental search (as the response decoder does it) agrees.
    #[test]
    fn cgi_head_functions_never_panic(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..128),
            prop::collection::vec(prop::sample::select(b"\r\n:aZ -\t".to_vec()), 0..48),
        ],
        split in any::<Index>(),
    ) {
        let found = find_head_end(&bytes);
        if let Some(end) = found {
            prop_assert!(end.head_len < end.body_start && end.body_start <= bytes.len());
            let separator = &bytes[end.head_len..end.body_start];
            prop_assert!(separator == b"\n" || separator == b"\r\n");
            prop_assert!(end.head_len == 0 || bytes[end.head_len - 1] == b'\n');
            prop_assert_eq!(find_head_end(&bytes[..end.body_start - 1]), None, "not the first");
            let _ = parse_head(&bytes[..end.head_len]);
        }
        // Searched in two steps: the prefix first, then only from three bytes before its end.
        let k = split.index(bytes.len() + 1);
        if find_head_end(&bytes[..k]).is_none() {
            prop_assert_eq!(find_head_end_from(&bytes, k.saturating_sub(3)), found);
        }
        if let Ok(head) = parse_head(&bytes) {
            prop_assert!(!head.headers.contains_key("status"));
        }
    }
}

/// A fixed regression: an empty head whose CRLF is split across two STDOUT records.
#[test]
fn an_empty_head_split_inside_its_crlf() {
    let wire = response_wire(b"\r\nbody", &[1], &[]);
    let (events, _) = response_events(&wire, &[], 1, DEFAULT_MAX_HEAD_LEN).unwrap();
    assert_eq!(
        events[0],
        Event::Head(CgiHead {
            status: StatusCode::OK,
            headers: HeaderMap::new()
        })
    );
    assert_eq!(events[1], Event::Body(Bytes::from_static(b"body")));
}
