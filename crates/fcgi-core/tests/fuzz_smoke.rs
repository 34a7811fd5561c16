//! The fuzz targets' checks (`fuzz/src/lib.rs`), run in the normal test suite on stable:
//! over hand-made seeds with every truncation and many one-byte changes of them, and over
//! whatever corpus and crash files a local fuzzing run left in `fuzz/corpus/<target>/` and
//! `fuzz/artifacts/<target>/` (neither is committed; a crash found there replays here).

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;

use bytes::BytesMut;
use checks::EncoderInput;
use fcgi_core::proto::encoder::{
    encode_end_request, encode_get_values_result, encode_stream_chunk, encode_stream_end,
};
use fcgi_core::proto::params::{encode_pair, Params};
use fcgi_core::proto::record::{EndRequestBody, ProtocolStatus, RecordType};

/// Most files replayed per corpus directory, to keep the suite quick.
const MAX_CORPUS_FILES: usize = 300;

/// A PHP-FPM-like answer: STDERR, a head split across two STDOUT records, body, end.
fn response_seed() -> Vec<u8> {
    let mut wire = BytesMut::new();
    encode_stream_chunk(&mut wire, RecordType::Stderr, 1, b"PHP Notice: x");
    encode_stream_chunk(
        &mut wire,
        RecordType::Stdout,
        1,
        b"Status: 404 Not Found\r\nContent-type: text/ht",
    );
    encode_stream_chunk(&mut wire, RecordType::Stdout, 1, b"ml\r\n\r\nnot here");
    encode_stream_end(&mut wire, RecordType::Stdout, 1);
    encode_end_request(
        &mut wire,
        1,
        EndRequestBody {
            app_status: 0,
            protocol_status: ProtocolStatus::RequestComplete,
        },
    );
    let mut values = Params::new();
    values.insert("FCGI_MPXS_CONNS", "0").unwrap();
    encode_get_values_result(&mut wire, &values).unwrap();
    wire.to_vec()
}

fn pairs_seed() -> Vec<u8> {
    let mut buf = Vec::new();
    encode_pair(&mut buf, b"SCRIPT_FILENAME", b"/srv/app/index.php");
    encode_pair(&mut buf, &[b'N'; 127], &[b'v'; 128]);
    encode_pair(&mut buf, b"", b"");
    buf
}

fn head_seeds() -> Vec<Vec<u8>> {
    vec![
        b"Status: 404 Not Found\r\nContent-Type: text/html\r\n\r\nbody".to_vec(),
        b"Location: /x\nSet-Cookie: a=1\nSet-Cookie: b=2\n\nbody".to_vec(),
        b"\r\nbody".to_vec(),
        b"X-A: 1\n\r\nbody\n\n".to_vec(),
    ]
}

/// `seed`, every prefix of it, and, at every position, a few byte values that matter to
/// the formats (record version and type bytes, line ends, the length top bit).
fn variations(seed: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let prefixes = (0..=seed.len()).map(|n| seed[..n].to_vec());
    let changes = (0..seed.len()).flat_map(move |at| {
        [0x00, 0x01, 0x06, 0x0a, 0x0d, 0x80, 0xff].map(move |byte| {
            let mut changed = seed.to_vec();
            changed[at] = byte;
            changed
        })
    });
    prefixes.chain(changes)
}

/// Files a local fuzzing run left for `target`, if any.
fn local_inputs(target: &str) -> Vec<Vec<u8>> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        files.extend(
            paths
                .into_iter()
                .filter(|p| p.is_file())
                .take(MAX_CORPUS_FILES)
                .filter_map(|p| std::fs::read(p).ok()),
        );
    }
    files
}

#[test]
fn record_decoder_seeds() {
    for input in variations(&response_seed()) {
        checks::record_decoder(&input);
    }
    for input in local_inputs("record_decoder") {
        checks::record_decoder(&input);
    }
}

#[test]
fn name_value_seeds() {
    for input in variations(&pairs_seed()) {
        checks::name_value(&input);
    }
    for input in local_inputs("name_value") {
        checks::name_value(&input);
    }
}

#[test]
fn cgi_head_seeds() {
    for seed in head_seeds() {
        for input in variations(&seed) {
            checks::cgi_head(&input);
        }
    }
    for input in local_inputs("cgi_head") {
        checks::cgi_head(&input);
    }
}

/// The encoder target reads its input through `arbitrary`, which this crate does not
/// depend on, so its corpus is not replayed here; these cases cover the record edges.
#[test]
fn encoder_cases() {
    let fits = vec![b'q'; 65535 - 6];
    let cases = [
        EncoderInput::default(),
        EncoderInput {
            request_id: 1,
            keep_conn: true,
            params: vec![
                (b"REQUEST_METHOD".to_vec(), b"POST".to_vec()),
                (b"Q".to_vec(), fits.clone()),
                (b"QQ".to_vec(), fits),
                (vec![b'N'; 128], vec![b'v'; 127]),
                (b"".to_vec(), b"".to_vec()),
            ],
            body_chunks: vec![vec![7; 65528], vec![], vec![8; 65529], b"tail".to_vec()],
        },
        EncoderInput {
            request_id: u16::MAX,
            keep_conn: false,
            params: (0..3)
                .map(|i| (vec![b'A' + i], vec![b'x'; 30_000]))
                .collect(),
            body_chunks: vec![b"a".to_vec()],
        },
    ];
    for case in &cases {
        checks::encoder(case);
    }
}
