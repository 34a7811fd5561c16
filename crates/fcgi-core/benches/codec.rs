//! Codec micro-benchmarks: encoding a typical PHP request (building its `Params`, framing
//! it with `encode_request`, both) and decoding a 1 MiB STDOUT response with
//! `ResponseDecoder`. Allocations per operation are counted outside the timed loops and
//! printed on stderr.
//!
//! Run: `cargo bench -p fcgi-core --bench codec`

// criterion's `criterion_group!` defines a public function it does not document.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use fcgi_core::proto::encoder::{
    encode_end_request, encode_request, encode_stream_chunk, encode_stream_end,
    request_encoded_len_bound, STREAM_CHUNK_LEN,
};
use fcgi_core::proto::record::{EndRequestBody, ProtocolStatus, RecordType};
use fcgi_core::proto::response::{Event, ResponseDecoder, DEFAULT_MAX_HEAD_LEN};
use fcgi_core::Params;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::CountingAlloc = counting_alloc::CountingAlloc;

/// CGI variables of a typical PHP front-controller request, as a gateway sets them.
const CGI_VARS: &[(&str, &str)] = &[
    ("SCRIPT_FILENAME", "/srv/tenants/acme/public/index.php"),
    ("SCRIPT_NAME", "/index.php"),
    ("REQUEST_URI", "/products/42?ref=newsletter&utm_source=mail"),
    ("DOCUMENT_URI", "/index.php"),
    ("DOCUMENT_ROOT", "/srv/tenants/acme/public"),
    ("QUERY_STRING", "ref=newsletter&utm_source=mail"),
    ("REQUEST_METHOD", "GET"),
    ("CONTENT_TYPE", ""),
    ("CONTENT_LENGTH", ""),
    ("SERVER_PROTOCOL", "HTTP/1.1"),
    ("REQUEST_SCHEME", "https"),
    ("HTTPS", "on"),
    ("GATEWAY_INTERFACE", "CGI/1.1"),
    ("SERVER_SOFTWARE", "fcgi-gateway/0.1"),
    ("REMOTE_ADDR", "203.0.113.54"),
    ("REMOTE_PORT", "51234"),
    ("SERVER_ADDR", "10.0.0.12"),
    ("SERVER_PORT", "443"),
    ("SERVER_NAME", "acme.example.com"),
    ("PATH_INFO", ""),
];

/// Request headers, turned into `HTTP_*` params.
const HEADERS: &[(&str, &str)] = &[
    ("host", "acme.example.com"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    ),
    ("accept-language", "en-US,en;q=0.9"),
    ("accept-encoding", "gzip, deflate, br"),
    (
        "cookie",
        "PHPSESSID=9f2c1d7e8a4b6c3d5e7f9a1b3c5d7e9f; csrftoken=Xk29fLq0PzR7mN4vB8cT1sW6yH3jD5gA; \
         _ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; theme=dark; lang=en",
    ),
];

/// The tenant's fixed params, appended to every request (they win, being last).
const TENANT: &[(&str, &str)] = &[
    ("DBHOST", "db-3.internal"),
    ("DBNAME", "acme_prod"),
    ("DBUSER", "acme"),
    ("DBPASS", "s3cr3t-p4ssw0rd-for-acme"),
    ("TENANT_ID", "acme"),
    ("APP_ENV", "production"),
];

fn tenant_params() -> Params {
    Params::try_from(TENANT.to_vec()).expect("small params")
}

fn header_to_cgi(b: u8) -> u8 {
    match b {
        b'-' => b'_',
        b => b.to_ascii_uppercase(),
    }
}

/// Builds a request's params the way the gateway does: CGI variables, `HTTP_*` from the
/// headers (no temporary name strings), then the tenant's params in one copy.
fn build_params(tenant: &Params) -> Params {
    let mut params = Params::with_capacity(2048);
    for (name, value) in CGI_VARS {
        params.insert(name, value).expect("small pair");
    }
    for (name, value) in HEADERS {
        params
            .insert_with_prefix(b"HTTP_", name.as_bytes(), header_to_cgi, value.as_bytes())
            .expect("small pair");
    }
    params.append(tenant);
    params
}

/// A 1 MiB response: a PHP head, then 16 full STDOUT records, the empty STDOUT record
/// and END_REQUEST.
fn big_response() -> (BytesMut, usize) {
    let head = b"X-Powered-By: PHP/8.3.6\r\nContent-type: text/html; charset=UTF-8\r\n\r\n";
    let mut stdout = head.to_vec();
    stdout.resize(16 * STREAM_CHUNK_LEN, b'x');
    let mut wire = BytesMut::new();
    encode_stream_chunk(&mut wire, RecordType::Stdout, 1, &stdout);
    encode_stream_end(&mut wire, RecordType::Stdout, 1);
    encode_end_request(
        &mut wire,
        1,
        EndRequestBody {
            app_status: 0,
            protocol_status: ProtocolStatus::RequestComplete,
        },
    );
    (wire, stdout.len() - head.len())
}

/// Decodes a whole response already in `buf`; returns the body length.
fn decode_all(buf: &mut BytesMut) -> usize {
    let mut decoder = ResponseDecoder::new(1, DEFAULT_MAX_HEAD_LEN);
    let mut body = 0;
    while let Some(event) = decoder.decode(buf).expect("valid response") {
        if let Event::Body(chunk) = event {
            body += chunk.len();
        }
    }
    body
}

/// Decodes a response that arrives in 64 KiB reads into one read buffer, the way the
/// client's connection does (the copy stands for the `read` syscall's).
fn decode_in_reads(wire: &[u8], buf: &mut BytesMut) -> usize {
    const READ: usize = 64 * 1024;
    let mut decoder = ResponseDecoder::new(1, DEFAULT_MAX_HEAD_LEN);
    let mut body = 0;
    for read in wire.chunks(READ) {
        if buf.capacity() - buf.len() < READ {
            buf.reserve(READ + 16);
        }
        buf.extend_from_slice(read);
        while let Some(event) = decoder.decode(buf).expect("valid response") {
            if let Event::Body(chunk) = event {
                body += chunk.len();
            }
        }
    }
    body
}

/// Runs `op` `n` times and prints its allocations per call.
fn report_allocations(label: &str, n: u64, mut op: impl FnMut()) {
    op(); // warm up lazily initialised state
    let before = counting_alloc::snapshot();
    for _ in 0..n {
        op();
    }
    let (allocs, bytes) = counting_alloc::snapshot().per_op_since(before, n);
    eprintln!("allocations {label:<32} {allocs:>7.2} per op ({bytes:>9.0} bytes)");
}

fn encode(c: &mut Criterion) {
    let tenant = tenant_params();
    let params = build_params(&tenant);
    let mut buf = BytesMut::with_capacity(request_encoded_len_bound(&params, 0));
    eprintln!(
        "request: {} params, {} bytes of pairs, {} bytes on the wire",
        params.len(),
        params.encoded_len(),
        {
            encode_request(&mut buf, 1, true, &params, b"");
            buf.len()
        }
    );

    report_allocations("encode/build_params", 10_000, || {
        black_box(build_params(&tenant));
    });
    report_allocations("encode/encode_request", 10_000, || {
        buf.clear();
        encode_request(&mut buf, 1, true, &params, b"");
        black_box(&buf);
    });
    report_allocations("encode/build_and_encode", 10_000, || {
        let params = build_params(&tenant);
        buf.clear();
        encode_request(&mut buf, 1, true, &params, b"");
        black_box(&buf);
    });

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("build_params", |b| {
        b.iter(|| black_box(build_params(black_box(&tenant))))
    });
    group.bench_function("encode_request", |b| {
        b.iter(|| {
            buf.clear();
            encode_request(&mut buf, 1, true, black_box(&params), b"");
            black_box(buf.len())
        })
    });
    group.bench_function("build_and_encode", |b| {
        b.iter(|| {
            let params = build_params(black_box(&tenant));
            buf.clear();
            encode_request(&mut buf, 1, true, &params, b"");
            black_box(buf.len())
        })
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let (wire, body_len) = big_response();
    let mut read_buf = BytesMut::with_capacity(64 * 1024 + 16);

    report_allocations("decode/1MiB_in_buffer (+1 copy)", 200, || {
        // The copy is the input; it allocates once, counted here.
        let mut buf = wire.clone();
        assert_eq!(decode_all(&mut buf), body_len);
    });
    report_allocations("decode/1MiB_64KiB_reads", 200, || {
        read_buf.clear();
        assert_eq!(decode_in_reads(&wire, &mut read_buf), body_len);
    });

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("1MiB_in_buffer", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut buf| black_box(decode_all(&mut buf)),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("1MiB_64KiB_reads", |b| {
        b.iter(|| {
            read_buf.clear();
            black_box(decode_in_reads(black_box(&wire), &mut read_buf))
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = encode, decode
}
criterion_main!(benches);
