//! Large bodies stream through in both directions with bounded memory: a 20 MiB upload
//! generated on the fly, a 200 MiB download checked chunk by chunk.
//!
//! Both tests measure this process's peak resident memory, so they take a lock and never
//! run at the same time.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fcgi_core::Request;
use fpm_harness::FpmConfig;
use futures_util::stream;
use http::StatusCode;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use common::{get, pool, script_params, start_fpm, within, Memory};
use fpm_harness::Crc32;

/// One test at a time measures memory.
static MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Growth allowed while 20 or 200 MiB pass through. Buffering the body would cost at
/// least its size; streaming costs the read buffer (a record's worth, up to 1 MiB read
/// ahead while uploading), chunks in flight, the runtime's and the allocator's per-thread
/// overhead, and whatever the other test binary threads allocate meanwhile: a few MiB.
/// 64 MiB sits far from both, so it neither flakes nor lets a buffered 200 MiB pass.
const MAX_GROWTH_MIB: f64 = 64.0;

const UPLOAD_LEN: usize = 20 * 1024 * 1024;
const DOWNLOAD_MIB: usize = 200;

/// The upload, as chunks of uneven sizes (so STDIN records do not line up with them)
/// made on demand from one pseudo-random 64 KiB block.
fn upload_chunks() -> impl Iterator<Item = Bytes> {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let block: Bytes = (0..64 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect::<Vec<u8>>()
        .into();
    let sizes = [65_536usize, 1, 4_095, 65_535, 30_000, 8, 65_529];
    let mut sent = 0;
    let mut i = 0;
    std::iter::from_fn(move || {
        if sent == UPLOAD_LEN {
            return None;
        }
        let len = sizes[i % sizes.len()].min(UPLOAD_LEN - sent);
        let start = (i * 4_099) % (block.len() - len + 1);
        i += 1;
        sent += len;
        Some(block.slice(start..start + len))
    })
}

#[tokio::test]
async fn a_20_mib_streamed_upload_arrives_whole() {
    let _exclusive = MEMORY.lock().await;
    let fpm = start_fpm(FpmConfig::new().workers(1));
    let pool = pool(fpm.address(), |_| {});

    let mut expected = Crc32::default();
    upload_chunks().for_each(|chunk| expected.update(&chunk));

    let mut params = script_params("upload.php", "");
    params
        .insert("REQUEST_METHOD", "POST")
        .expect("small param");
    params
        .insert("CONTENT_TYPE", "application/octet-stream")
        .expect("small param");
    params
        .insert("CONTENT_LENGTH", UPLOAD_LEN.to_string())
        .expect("small param");
    let body = StreamBody::new(stream::iter(
        upload_chunks().map(|chunk| Ok::<_, Infallible>(Frame::data(chunk))),
    ));

    Memory::reset_peak();
    let before = Memory::now();
    let started = Instant::now();
    let response = within(
        Duration::from_secs(30),
        "the upload",
        pool.send(Request::new(params).with_body(body)),
    )
    .await
    .expect("upload.php answers");
    assert_eq!(response.status(), StatusCode::OK);
    let answer = within(
        Duration::from_secs(10),
        "upload.php body",
        response.collect(),
    )
    .await
    .expect("upload.php body");
    let after = Memory::now();

    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("upload.php JSON");
    assert_eq!(answer["bytes"], UPLOAD_LEN, "{answer}");
    assert_eq!(answer["crc32"], expected.hex(), "{answer}");
    let growth = Memory::peak_growth_mib(before, after);
    eprintln!("upload: {:?}, peak grew {growth:.1} MiB", started.elapsed());
    assert!(
        growth < MAX_GROWTH_MIB,
        "uploading 20 MiB grew the peak RSS by {growth:.1} MiB"
    );
}

#[tokio::test]
async fn a_200_mib_download_streams_in_bounded_memory() {
    let _exclusive = MEMORY.lock().await;
    let fpm = start_fpm(FpmConfig::new().workers(1));
    let pool = pool(fpm.address(), |_| {});
    // download.php: byte k of the body is (k % 65536) % 251.
    let block: Vec<u8> = (0..65_536u32).map(|k| (k % 251) as u8).collect();
    let total = DOWNLOAD_MIB * 1024 * 1024;

    Memory::reset_peak();
    let before = Memory::now();
    let started = Instant::now();
    let response = within(
        Duration::from_secs(10),
        "download.php head",
        pool.send(get("download.php", &format!("mib={DOWNLOAD_MIB}"))),
    )
    .await
    .expect("download.php answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"],
        total.to_string().as_str()
    );

    let mut body = response.into_body();
    let mut received = 0usize;
    let mut chunks = 0usize;
    within(Duration::from_secs(60), "the 200 MiB body", async {
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("body frame");
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            // Compare against the pattern block by block, without keeping anything.
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let offset = received % block.len();
                let n = rest.len().min(block.len() - offset);
                assert!(
                    rest[..n] == block[offset..offset + n],
                    "body differs from the pattern near byte {received}"
                );
                received += n;
                rest = &rest[n..];
            }
            chunks += 1;
        }
    })
    .await;
    let after = Memory::now();

    assert_eq!(received, total);
    assert!(
        chunks > 1_000,
        "only {chunks} chunks: the body was not streamed"
    );
    assert!(
        body.end_request().is_some(),
        "the body ended with END_REQUEST"
    );
    let growth = Memory::peak_growth_mib(before, after);
    eprintln!(
        "download: {:?}, {chunks} chunks, peak grew {growth:.1} MiB",
        started.elapsed()
    );
    assert!(
        growth < MAX_GROWTH_MIB,
        "downloading {DOWNLOAD_MIB} MiB grew the peak RSS by {growth:.1} MiB"
    );
}
