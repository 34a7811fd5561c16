//! A FastCGI server that breaks the protocol in every way we know, built from fcgi-core's
//! own encoders: each breach must give its typed error promptly, keep memory bounded,
//! never panic, and never leave its connection in the pool.
//!
//! The tests measure this process's peak memory, so they run one at a time.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fcgi_core::proto::decoder::RecordDecoder;
use fcgi_core::proto::encoder::{
    encode_end_request, encode_stream_chunk, encode_stream_end, STREAM_CHUNK_LEN,
};
use fcgi_core::proto::record::{Header, RecordType};
use fcgi_core::proto::ProtocolError;
use fcgi_core::{EndRequestBody, Error, Pool, PoolConfig, ProtocolStatus, Request, Upstream};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{get, within, Memory};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The client's read timeout in these tests; "promptly" means well within a second.
const READ_TIMEOUT: Duration = Duration::from_millis(300);
const PROMPTLY: Duration = Duration::from_secs(1);
/// Peak memory growth allowed while one breach is handled. The endless head is 10 MiB;
/// the client may hold at most its 64 KiB head limit plus a record of it.
const MAX_GROWTH_MIB: f64 = 4.0;

/// What the server answers to one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// A well-formed response whose body is the number of STDIN bytes received.
    Good,
    /// Closes the connection without a byte.
    Close,
    /// A complete STDOUT record with half a head, then half a record, then close.
    TruncatedThenClose,
    /// A complete response, but for request id 2.
    WrongRequestId,
    /// 10 MiB of header lines with no empty line, then silence.
    EndlessHead,
    /// Bytes that are not FastCGI (an HTTP response).
    Garbage,
    /// A record whose version byte is 2.
    WrongVersion,
    /// END_REQUEST (complete) with no STDOUT at all.
    EndBeforeStdout,
    /// END_REQUEST with this protocol status, no STDOUT.
    Reject(ProtocolStatus),
    /// Reads the request, never answers, keeps the connection open.
    Silence,
    /// The head and part of the body, then close.
    CloseMidBody,
    /// A good response followed by stray bytes that belong to no request.
    GoodThenStray,
}

/// A hostile server on 127.0.0.1:0. `plan(connection, request)` picks each answer, both
/// counted from 0.
struct HostileServer {
    upstream: Upstream,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HostileServer {
    async fn start(plan: fn(usize, usize) -> Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let connection = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, connection, plan));
            }
        });
        Self {
            upstream: addr.to_string().parse().expect("valid upstream"),
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn pool(&self) -> Pool {
        let mut config = PoolConfig::default();
        config.client.read_timeout = READ_TIMEOUT;
        config.max_connections = 2;
        Pool::new(self.upstream.clone(), config)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers requests on one connection until the plan closes it or the client does.
async fn serve(mut stream: TcpStream, connection: usize, plan: fn(usize, usize) -> Answer) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    for request in 0.. {
        let Some(stdin_len) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        // Write errors only mean the client hung up, which is its right.
        if answer(&mut stream, plan(connection, request), stdin_len)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Reads one request up to the end of STDIN; returns how many STDIN bytes it had, or
/// `None` when the client closed.
async fn read_request(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<usize> {
    let mut decoder = RecordDecoder::new();
    let mut stdin = 0;
    loop {
        while let Some(record) = decoder.decode(buf).expect("the client speaks FastCGI") {
            if record.header.record_type == RecordType::Stdin {
                if record.content.is_empty() {
                    return Some(stdin);
                }
                stdin += record.content.len();
            }
        }
        buf.reserve(64 * 1024);
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn end(status: ProtocolStatus) -> EndRequestBody {
    EndRequestBody {
        app_status: 0,
        protocol_status: status,
    }
}

fn good_response(out: &mut BytesMut, request_id: u16, body: &[u8]) {
    let mut stdout = b"Content-Type: text/plain\r\n\r\n".to_vec();
    stdout.extend_from_slice(body);
    encode_stream_chunk(out, RecordType::Stdout, request_id, &stdout);
    encode_stream_end(out, RecordType::Stdout, request_id);
    encode_end_request(out, request_id, end(ProtocolStatus::RequestComplete));
}

async fn answer(stream: &mut TcpStream, answer: Answer, stdin_len: usize) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    match answer {
        Answer::Good => good_response(&mut out, 1, stdin_len.to_string().as_bytes()),
        Answer::Close => return stream.shutdown().await,
        Answer::TruncatedThenClose => {
            encode_stream_chunk(&mut out, RecordType::Stdout, 1, b"Content-Type: te");
            Header::new(RecordType::Stdout, 1, 100).encode(&mut out);
            out.extend_from_slice(&[b'x'; 30]);
            stream.write_all(&out).await?;
            return stream.shutdown().await;
        }
        Answer::WrongRequestId => good_response(&mut out, 2, b"not yours"),
        Answer::EndlessHead => {
            let line = b"X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
            let lines: Vec<u8> = line
                .iter()
                .copied()
                .cycle()
                .take(STREAM_CHUNK_LEN / line.len() * line.len())
                .collect();
            let mut record = BytesMut::new();
            encode_stream_chunk(&mut record, RecordType::Stdout, 1, &lines);
            let mut sent = 0;
            while sent < 10 * 1024 * 1024 {
                stream.write_all(&record).await?;
                sent += lines.len();
            }
            // Then nothing: only the head limit can end this.
            std::future::pending::<()>().await;
        }
        Answer::Garbage => out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
        Answer::WrongVersion => {
            encode_stream_chunk(&mut out, RecordType::Stdout, 1, b"Status: 200\r\n\r\n");
            out[0] = 2;
        }
        Answer::EndBeforeStdout => {
            encode_end_request(&mut out, 1, end(ProtocolStatus::RequestComplete));
        }
        Answer::Reject(status) => encode_end_request(&mut out, 1, end(status)),
        Answer::Silence => {
            // Hold the connection until the client closes it.
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            return Ok(());
        }
        Answer::CloseMidBody => {
            encode_stream_chunk(
                &mut out,
                RecordType::Stdout,
                1,
                b"Content-Type: text/plain\r\n\r\nthe beginning of",
            );
            stream.write_all(&out).await?;
            return stream.shutdown().await;
        }
        Answer::GoodThenStray => {
            good_response(&mut out, 1, b"ok");
            encode_stream_chunk(&mut out, RecordType::Stdout, 1, b"stray");
        }
    }
    stream.write_all(&out).await
}

/// Sends one request to a server that always answers `breach`, checks the error is the
/// expected one, prompt, cheap in memory, and that the connection is not pooled: the next
/// request opens a new one.
async fn breach_gives(plan: fn(usize, usize) -> Answer, expected: fn(&Error) -> bool) -> Error {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = HostileServer::start(plan).await;
    let pool = server.pool();

    Memory::reset_peak();
    let before = Memory::now();
    let started = Instant::now();
    let result = within(Duration::from_secs(5), "the hostile exchange", async {
        let response = pool.send(get("any.php", "")).await?;
        response.collect().await
    })
    .await;
    let took = started.elapsed();
    let growth = Memory::peak_growth_mib(before, Memory::now());

    let err = result.expect_err("the breach is an error");
    assert!(expected(&err), "unexpected error: {err:?}");
    assert!(took < PROMPTLY, "the error took {took:?}: {err:?}");
    assert!(
        growth < MAX_GROWTH_MIB,
        "peak memory grew {growth:.1} MiB: {err:?}"
    );
    let stats = pool.stats();
    assert_eq!(
        (stats.open, stats.idle),
        (0, 0),
        "kept after {err:?}: {stats:?}"
    );

    // A second request is not sent on the broken connection.
    let again = within(Duration::from_secs(5), "the second exchange", async {
        let response = pool.send(get("any.php", "")).await?;
        response.collect().await
    })
    .await;
    let again = again.expect_err("the server breaks every time");
    assert!(expected(&again), "second request: {again:?}");
    assert_eq!(server.accepted(), 2, "the broken connection was reused");
    err
}

#[tokio::test]
async fn truncated_records_then_close_is_an_io_error() {
    let err = breach_gives(|_, _| Answer::TruncatedThenClose, Error::is_io).await;
    assert!(err.response_started(), "{err:?}");
}

#[tokio::test]
async fn a_close_without_a_byte_is_an_io_error() {
    let err = breach_gives(|_, _| Answer::Close, Error::is_io).await;
    assert!(!err.response_started(), "{err:?}");
}

#[tokio::test]
async fn a_record_for_another_request_is_a_protocol_error() {
    let err = breach_gives(|_, _| Answer::WrongRequestId, Error::is_protocol).await;
    assert_eq!(
        err.as_protocol(),
        Some(&ProtocolError::UnexpectedRequestId {
            expected: 1,
            got: 2
        })
    );
}

#[tokio::test]
async fn an_endless_cgi_head_is_a_protocol_error_in_bounded_memory() {
    let err = breach_gives(|_, _| Answer::EndlessHead, Error::is_protocol).await;
    assert!(
        matches!(err.as_protocol(), Some(ProtocolError::HeadTooLarge { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_is_a_protocol_error() {
    let err = breach_gives(|_, _| Answer::Garbage, Error::is_protocol).await;
    assert_eq!(
        err.as_protocol(),
        Some(&ProtocolError::UnsupportedVersion(b'H'))
    );
}

#[tokio::test]
async fn a_wrong_version_byte_is_a_protocol_error() {
    let err = breach_gives(|_, _| Answer::WrongVersion, Error::is_protocol).await;
    assert_eq!(
        err.as_protocol(),
        Some(&ProtocolError::UnsupportedVersion(2))
    );
}

#[tokio::test]
async fn end_request_before_any_stdout_is_a_protocol_error() {
    let err = breach_gives(|_, _| Answer::EndBeforeStdout, Error::is_protocol).await;
    assert_eq!(err.as_protocol(), Some(&ProtocolError::EndBeforeHeaders));
}

#[tokio::test]
async fn overloaded_is_reported_as_overloaded() {
    let err = breach_gives(
        |_, _| Answer::Reject(ProtocolStatus::Overloaded),
        Error::is_overloaded,
    )
    .await;
    assert_eq!(err.protocol_status(), Some(ProtocolStatus::Overloaded));
    assert!(!err.is_queue_timeout(), "{err:?}");
}

#[tokio::test]
async fn cant_mpx_conn_is_reported_as_such() {
    let err = breach_gives(
        |_, _| Answer::Reject(ProtocolStatus::CantMpxConn),
        Error::is_cant_mpx_conn,
    )
    .await;
    assert!(!err.is_overloaded(), "{err:?}");
}

#[tokio::test]
async fn unknown_role_is_reported_as_such() {
    let err = breach_gives(
        |_, _| Answer::Reject(ProtocolStatus::UnknownRole),
        Error::is_unknown_role,
    )
    .await;
    assert!(!err.is_overloaded(), "{err:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_read_timeout() {
    let err = breach_gives(|_, _| Answer::Silence, Error::is_read_timeout).await;
    assert!(err.is_timeout() && !err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn a_close_mid_body_fails_the_body_as_io() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = HostileServer::start(|_, _| Answer::CloseMidBody).await;
    let pool = server.pool();
    let response = within(PROMPTLY, "the head", pool.send(get("any.php", "")))
        .await
        .expect("the head is fine");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = within(PROMPTLY, "the first chunk", body.frame())
        .await
        .expect("a first chunk")
        .expect("the first chunk is fine");
    assert_eq!(
        first.into_data().ok(),
        Some(Bytes::from("the beginning of"))
    );
    let err = within(PROMPTLY, "the cut", body.frame())
        .await
        .expect("an error, not the end")
        .expect_err("the body is cut short");
    assert!(err.is_io() && err.response_started(), "{err:?}");
    let stats = pool.stats();
    assert_eq!((stats.open, stats.idle), (0, 0), "{stats:?}");
}

#[tokio::test]
async fn stray_bytes_after_the_end_keep_the_connection_out_of_the_pool() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = HostileServer::start(|_, _| Answer::GoodThenStray).await;
    let pool = server.pool();
    for _ in 0..2 {
        let (status, body) = common::send_text(&pool, get("any.php", ""))
            .await
            .expect("the response itself is fine");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
    // Each request needed a connection of its own.
    assert_eq!(server.accepted(), 2);
}

/// The pool's one replay: a kept connection the server closes instead of answering (as
/// PHP-FPM does when it recycles a worker) is replaced, and an idempotent request is sent
/// again on the new one.
#[tokio::test]
async fn a_kept_connection_closed_unanswered_is_replaced_for_an_idempotent_request() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Connection 0 answers once, then closes on the next request; later ones are fine.
    let server = HostileServer::start(|conn, req| match (conn, req) {
        (0, 0) => Answer::Good,
        (0, _) => Answer::Close,
        _ => Answer::Good,
    })
    .await;
    let pool = server.pool();
    let (status, _) = common::send_text(&pool, get("any.php", ""))
        .await
        .expect("first request");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pool.stats().idle, 1);

    let (status, body) = common::send_text(&pool, get("any.php", ""))
        .await
        .expect("replayed on a fresh connection");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "0"));
    assert_eq!(server.accepted(), 2);
}

/// A request with a body cannot be replayed: its body was streamed out, not kept. Even
/// marked replayable, it fails rather than go out again without its body.
#[tokio::test]
async fn a_request_with_a_body_is_never_replayed() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Every connection answers its first request and closes on the second.
    let server = HostileServer::start(|_, req| match req {
        0 => Answer::Good,
        _ => Answer::Close,
    })
    .await;
    let pool = server.pool();
    common::send_text(&pool, get("any.php", ""))
        .await
        .expect("first request");

    for replayable in [None, Some(true)] {
        let mut params = common::script_params("any.php", "");
        params.insert("REQUEST_METHOD", "PUT").expect("small param");
        params.insert("CONTENT_LENGTH", "5").expect("small param");
        let mut request = Request::new(params).with_body(Full::new(Bytes::from("hello")));
        if let Some(replayable) = replayable {
            request = request.replayable(replayable);
        }
        match common::send_text(&pool, request).await {
            Err(err) => assert!(err.is_io() && !err.response_started(), "{err:?}"),
            Ok((_, received)) => {
                panic!("replayed (replayable {replayable:?}); the server got {received} of 5 body bytes")
            }
        }
        // Put a kept connection back for the second round.
        if replayable.is_none() {
            common::send_text(&pool, get("any.php", ""))
                .await
                .expect("a fresh connection");
        }
    }
}

/// A pool over a hostile server (first) and a good one, passive marking only.
fn two_server_pool(hostile: &HostileServer, good: &HostileServer) -> Pool {
    let config = PoolConfig {
        client: fcgi_core::ClientConfig {
            read_timeout: READ_TIMEOUT,
            ..Default::default()
        },
        ..PoolConfig::default()
    };
    let health = fcgi_core::HealthConfig {
        interval: Duration::from_secs(60),
        ..Default::default()
    };
    let servers = [&hostile.upstream, &good.upstream]
        .map(|upstream| fcgi_core::ServerConfig::new(upstream.clone(), 2))
        .to_vec();
    Pool::with_servers(servers, config, health).expect("a valid pool")
}

#[tokio::test]
async fn a_connection_closed_before_the_answer_sends_a_get_to_the_next_server_and_marks_the_first_down(
) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let hostile = HostileServer::start(|_, _| Answer::Close).await;
    let good = HostileServer::start(|_, _| Answer::Good).await;
    let pool = two_server_pool(&hostile, &good);
    for _ in 0..3 {
        let response = within(PROMPTLY, "a GET", pool.send(get("any.php", "")))
            .await
            .expect("served by the good server");
        assert_eq!(response.upstream(), &good.upstream);
        response.collect().await.expect("body");
    }
    let stats = pool.server_stats();
    assert!(!stats[0].healthy && stats[0].failures == 1, "{stats:?}");
    assert_eq!(
        hostile.accepted(),
        1,
        "the failed server was left alone after"
    );
}

#[tokio::test]
async fn a_protocol_error_after_response_bytes_is_not_replayed_but_marks_the_server_down() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let hostile = HostileServer::start(|_, _| Answer::Garbage).await;
    let good = HostileServer::start(|_, _| Answer::Good).await;
    let pool = two_server_pool(&hostile, &good);
    let err = within(PROMPTLY, "a GET", async {
        pool.send(get("any.php", "")).await?.collect().await
    })
    .await
    .expect_err("garbage");
    assert!(err.is_protocol() && err.response_started(), "{err:?}");
    assert_eq!(good.accepted(), 0, "not replayed once response bytes came");
    let stats = pool.server_stats();
    assert!(!stats[0].healthy && stats[0].failures == 1, "{stats:?}");
    let response = within(PROMPTLY, "a GET", pool.send(get("any.php", "")))
        .await
        .expect("served by the good server");
    assert_eq!(response.upstream(), &good.upstream);
}

#[tokio::test]
async fn a_post_whose_body_went_out_is_never_sent_to_the_next_server() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let hostile = HostileServer::start(|_, _| Answer::Close).await;
    let good = HostileServer::start(|_, _| Answer::Good).await;
    let pool = two_server_pool(&hostile, &good);
    let mut params = common::script_params("any.php", "");
    params
        .insert("REQUEST_METHOD", "POST")
        .expect("small param");
    params.insert("CONTENT_LENGTH", "5").expect("small param");
    let request = Request::new(params).with_body(Full::new(Bytes::from("hello")));
    let err = within(PROMPTLY, "a POST", pool.send(request))
        .await
        .expect_err("the server closed after taking the body");
    assert!(err.is_io(), "{err:?}");
    assert_eq!(good.accepted(), 0, "the POST was replayed");
}
