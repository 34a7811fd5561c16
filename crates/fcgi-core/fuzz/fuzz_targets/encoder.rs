//! Fuzz target: arbitrary params and body chunks, encoded as a request and decoded back
//! with the crate's own decoders.
#![no_main]

use arbitrary::Arbitrary;
use fcgi_core_fuzz::EncoderInput;

/// What libFuzzer's bytes are read as.
#[derive(Debug, Arbitrary)]
struct Input {
    request_id: u16,
    keep_conn: bool,
    params: Vec<Param>,
    body_chunks: Vec<Chunk>,
}

/// A pair; `grow_to` stretches the value (by repeating it) so that pairs near and over
/// the 65535-byte record limit are reachable from small inputs.
#[derive(Debug, Arbitrary)]
struct Param {
    name: Vec<u8>,
    value: Vec<u8>,
    grow_to: Option<u16>,
}

/// A body chunk; `grow_to` (mod 200,001) stretches it past the 65528-byte record cut.
#[derive(Debug, Arbitrary)]
struct Chunk {
    data: Vec<u8>,
    grow_to: Option<u32>,
}

fn grow(bytes: Vec<u8>, to: Option<usize>) -> Vec<u8> {
    match to {
        Some(len) if bytes.is_empty() => vec![b'x'; len],
        Some(len) => bytes.iter().copied().cycle().take(len).collect(),
        None => bytes,
    }
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    let input = EncoderInput {
        request_id: input.request_id,
        keep_conn: input.keep_conn,
        params: input
            .params
            .into_iter()
            .map(|p| (p.name, grow(p.value, p.grow_to.map(usize::from))))
            .collect(),
        body_chunks: input
            .body_chunks
            .into_iter()
            .map(|c| grow(c.data, c.grow_to.map(|n| n as usize % 200_001)))
            .collect(),
    };
    fcgi_core_fuzz::encoder(&input);
});
