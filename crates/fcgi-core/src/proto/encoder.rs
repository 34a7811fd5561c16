//! Writes records into a `BufMut`: a request (BEGIN_REQUEST, PARAMS, STDIN), stream chunks,
//! and the management and server-side records (used by tests and by other servers).
//!
//! Everything is synchronous and writes into one buffer, so a typical GET is one `write`.

use bytes::BufMut;

use super::params::Params;
use super::record::{
    put_padding, BeginRequestBody, EndRequestBody, Header, RecordType, Role, FLAG_KEEP_CONN,
    HEADER_LEN, MAX_CONTENT_LEN,
};

/// Stream data is cut into records of this size: the largest multiple of 8 that fits,
/// so full records need no padding.
pub const STREAM_CHUNK_LEN: usize = MAX_CONTENT_LEN & !7;

/// Writes one record: header, `content`, padding. `content` must fit one record.
fn put_record<B: BufMut>(dst: &mut B, record_type: RecordType, request_id: u16, content: &[u8]) {
    debug_assert!(content.len() <= MAX_CONTENT_LEN);
    let header = Header::new(record_type, request_id, content.len() as u16);
    header.encode(dst);
    dst.put_slice(content);
    put_padding(dst, header.padding_length);
}

/// Writes a BEGIN_REQUEST record.
pub fn encode_begin_request<B: BufMut>(dst: &mut B, request_id: u16, role: Role, keep_conn: bool) {
    Header::new(
        RecordType::BeginRequest,
        request_id,
        BeginRequestBody::LEN as u16,
    )
    .encode(dst);
    BeginRequestBody {
        role,
        flags: if keep_conn { FLAG_KEEP_CONN } else { 0 },
    }
    .encode(dst);
}

/// Writes an ABORT_REQUEST record.
pub fn encode_abort_request<B: BufMut>(dst: &mut B, request_id: u16) {
    put_record(dst, RecordType::AbortRequest, request_id, &[]);
}

/// Writes the whole PARAMS stream: the pairs framed into records, never splitting a pair,
/// then the empty record that closes the stream.
pub fn encode_params<B: BufMut>(dst: &mut B, request_id: u16, params: &Params) {
    let encoded = params.as_encoded();
    if encoded.len() <= MAX_CONTENT_LEN {
        // All pairs fit one record (nearly every request does: a few KB), so there is no
        // boundary to find and no need to walk the pairs.
        if !encoded.is_empty() {
            put_record(dst, RecordType::Params, request_id, encoded);
        }
        put_record(dst, RecordType::Params, request_id, &[]);
        return;
    }
    let mut record_start = 0;
    let mut last_end = 0;
    for end in params.pair_ends() {
        if end - record_start > MAX_CONTENT_LEN {
            put_record(
                dst,
                RecordType::Params,
                request_id,
                &encoded[record_start..last_end],
            );
            record_start = last_end;
        }
        last_end = end;
    }
    if last_end > record_start {
        put_record(
            dst,
            RecordType::Params,
            request_id,
            &encoded[record_start..last_end],
        );
    }
    put_record(dst, RecordType::Params, request_id, &[]);
}

/// Upper bound of the bytes [`encode_params`] writes, for reserving a buffer.
pub fn params_encoded_len_bound(params: &Params) -> usize {
    let content = params.encoded_len();
    // Each record adds a header and at most 7 bytes of padding. Framing is greedy and a
    // pair never exceeds one record, so two neighbouring records hold more than one
    // record's worth: content over `MAX / 2` per record, plus one, plus the empty end.
    let records = content / (MAX_CONTENT_LEN / 2) + 2;
    content + records * (HEADER_LEN + 7)
}

/// Writes `data` as records of `record_type` (STDIN, STDOUT, STDERR or DATA), cut at
/// [`STREAM_CHUNK_LEN`]. Writes nothing for empty data: an empty record would end the stream.
pub fn encode_stream_chunk<B: BufMut>(
    dst: &mut B,
    record_type: RecordType,
    request_id: u16,
    data: &[u8],
) {
    for chunk in data.chunks(STREAM_CHUNK_LEN) {
        put_record(dst, record_type, request_id, chunk);
    }
}

/// Bytes [`encode_stream_chunk`] writes for `len` bytes of data.
pub fn stream_encoded_len(len: usize) -> usize {
    let full = len / STREAM_CHUNK_LEN;
    let rest = len % STREAM_CHUNK_LEN;
    let mut total = full * (HEADER_LEN + STREAM_CHUNK_LEN);
    if rest > 0 {
        total += HEADER_LEN + rest + super::record::padding_for(rest) as usize;
    }
    total
}

/// Writes the empty record that ends a stream.
pub fn encode_stream_end<B: BufMut>(dst: &mut B, record_type: RecordType, request_id: u16) {
    put_record(dst, record_type, request_id, &[]);
}

/// Writes a complete request whose body is already in memory: BEGIN_REQUEST, PARAMS, and
/// the STDIN stream (just its end record when `stdin` is empty).
pub fn encode_request<B: BufMut>(
    dst: &mut B,
    request_id: u16,
    keep_conn: bool,
    params: &Params,
    stdin: &[u8],
) {
    encode_begin_request(dst, request_id, Role::Responder, keep_conn);
    encode_params(dst, request_id, params);
    encode_stream_chunk(dst, RecordType::Stdin, request_id, stdin);
    encode_stream_end(dst, RecordType::Stdin, request_id);
}

/// Upper bound of the bytes [`encode_request`] writes.
pub fn request_encoded_len_bound(params: &Params, stdin_len: usize) -> usize {
    HEADER_LEN
        + BeginRequestBody::LEN
        + params_encoded_len_bound(params)
        + stream_encoded_len(stdin_len)
        + HEADER_LEN
}

/// Writes an END_REQUEST record (server side; used by test servers).
pub fn encode_end_request<B: BufMut>(dst: &mut B, request_id: u16, body: EndRequestBody) {
    Header::new(
        RecordType::EndRequest,
        request_id,
        EndRequestBody::LEN as u16,
    )
    .encode(dst);
    body.encode(dst);
}

/// Writes a GET_VALUES management record asking for `names`. Fails when the names do not
/// fit one record.
pub fn encode_get_values<B: BufMut>(
    dst: &mut B,
    names: &[&str],
) -> Result<(), super::params::ParamsError> {
    let mut params = Params::new();
    for name in names {
        params.insert(name, "")?;
    }
    if params.encoded_len() > MAX_CONTENT_LEN {
        return Err(super::params::ParamsError::PairTooLarge {
            name: "GET_VALUES".into(),
            encoded_len: params.encoded_len(),
        });
    }
    put_record(dst, RecordType::GetValues, 0, params.as_encoded());
    Ok(())
}

/// Writes a GET_VALUES_RESULT record (server side). Fails when the pairs do not fit one
/// record.
pub fn encode_get_values_result<B: BufMut>(
    dst: &mut B,
    values: &Params,
) -> Result<(), super::params::ParamsError> {
    if values.encoded_len() > MAX_CONTENT_LEN {
        return Err(super::params::ParamsError::PairTooLarge {
            name: "GET_VALUES_RESULT".into(),
            encoded_len: values.encoded_len(),
        });
    }
    put_record(dst, RecordType::GetValuesResult, 0, values.as_encoded());
    Ok(())
}

/// Writes an UNKNOWN_TYPE management record (server side).
pub fn encode_unknown_type<B: BufMut>(dst: &mut B, record_type: u8) {
    Header::new(RecordType::UnknownType, 0, 8).encode(dst);
    super::record::UnknownTypeBody { record_type }.encode(dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decoder::{Record, RecordDecoder};
    use crate::proto::params::NameValueIter;
    use bytes::BytesMut;

    fn decode_all(mut buf: BytesMut) -> Vec<Record> {
        let mut decoder = RecordDecoder::new();
        let mut out = Vec::new();
        while let Some(record) = decoder.decode(&mut buf).unwrap() {
            out.push(record);
        }
        assert!(buf.is_empty(), "trailing bytes");
        out
    }

    #[test]
    fn a_get_request_is_begin_params_and_empty_stdin() {
        let mut params = Params::new();
        params.insert("REQUEST_METHOD", "GET").unwrap();
        let mut buf = BytesMut::new();
        encode_request(&mut buf, 1, true, &params, b"");
        assert!(buf.len() <= request_encoded_len_bound(&params, 0));
        let records = decode_all(buf);
        let types: Vec<_> = records.iter().map(|r| r.header.record_type).collect();
        assert_eq!(
            types,
            [
                RecordType::BeginRequest,
                RecordType::Params,
                RecordType::Params,
                RecordType::Stdin
            ]
        );
        let begin = BeginRequestBody::decode(&records[0].content).unwrap();
        assert!(begin.keep_conn());
        assert_eq!(begin.role, Role::Responder);
        assert!(records[2].content.is_empty());
        assert!(records[3].content.is_empty());
    }

    #[test]
    fn params_are_framed_without_splitting_a_pair() {
        let mut params = Params::new();
        // Three pairs of ~30 KB: two fit in one record, the third starts a new one.
        for name in ["A", "B", "C"] {
            params.insert(name, vec![b'x'; 30_000]).unwrap();
        }
        let mut buf = BytesMut::new();
        encode_params(&mut buf, 7, &params);
        let records = decode_all(buf);
        assert_eq!(records.len(), 3);
        let mut names = Vec::new();
        for record in &records {
            assert!(record.header.content_length as usize <= MAX_CONTENT_LEN);
            for pair in NameValueIter::new(&record.content) {
                names.push(pair.unwrap().0.to_vec());
            }
        }
        assert_eq!(names, [b"A".to_vec(), b"B".to_vec(), b"C".to_vec()]);
    }

    #[test]
    fn a_pair_of_exactly_one_record_gets_its_own_record() {
        let mut params = Params::new();
        params.insert("S", "small").unwrap();
        params.insert("Q", vec![b'q'; MAX_CONTENT_LEN - 6]).unwrap();
        let mut buf = BytesMut::new();
        encode_params(&mut buf, 1, &params);
        let records = decode_all(buf);
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].header.content_length as usize, MAX_CONTENT_LEN);
    }

    #[test]
    fn long_streams_are_cut_into_records_and_ended_by_an_empty_one() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut buf = BytesMut::new();
        encode_stream_chunk(&mut buf, RecordType::Stdin, 3, &data);
        assert_eq!(buf.len(), stream_encoded_len(data.len()));
        encode_stream_end(&mut buf, RecordType::Stdin, 3);
        let records = decode_all(buf);
        assert_eq!(records.len(), 5);
        let joined: Vec<u8> = records.iter().flat_map(|r| r.content.to_vec()).collect();
        assert_eq!(joined, data);
        assert!(records.last().unwrap().content.is_empty());
    }

    #[test]
    fn management_records_round_trip() {
        let mut buf = BytesMut::new();
        encode_get_values(&mut buf, &["FCGI_MAX_CONNS", "FCGI_MPXS_CONNS"]).unwrap();
        encode_abort_request(&mut buf, 9);
        encode_unknown_type(&mut buf, 77);
        encode_end_request(
            &mut buf,
            9,
            EndRequestBody {
                app_status: 3,
                protocol_status: crate::proto::record::ProtocolStatus::Overloaded,
            },
        );
        let records = decode_all(buf);
        assert_eq!(records[0].header.record_type, RecordType::GetValues);
        assert_eq!(records[0].header.request_id, 0);
        let names: Vec<_> = NameValueIter::new(&records[0].content)
            .map(|p| p.unwrap().0.to_vec())
            .collect();
        assert_eq!(
            names,
            [b"FCGI_MAX_CONNS".to_vec(), b"FCGI_MPXS_CONNS".to_vec()]
        );
        assert_eq!(records[1].header.record_type, RecordType::AbortRequest);
        assert_eq!(records[2].header.record_type, RecordType::UnknownType);
        let end = EndRequestBody::decode(&records[3].content).unwrap();
        assert_eq!(end.app_status, 3);
    }
}
