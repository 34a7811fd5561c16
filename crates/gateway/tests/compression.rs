//! Response compression against a real PHP-FPM and real files: every encoding decoded
//! back byte for byte, q-values, what is never compressed (small, already encoded,
//! ranges, event streams), streaming that still flushes, `Vary` and `ETag`, sidecar
//! files, and compression turned off.

mod support;

use std::io::Read;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fpm_harness::fixtures_dir;
use gateway::config::Config;
use http::Method;
use http_body_util::{BodyExt, Full};
use support::single_tenant::{client, request, send, send_head, TestGateway, HOST};
use support::{within, Reply, Served, REQUEST_LIMIT};

/// `GET path` with `Accept-Encoding: accept` (none when empty) and extra headers.
async fn get(gw: &TestGateway, path: &str, accept: &str, extra: &[(&str, &str)]) -> Reply {
    let mut req = request(gw, Method::GET, path);
    if !accept.is_empty() {
        req = req.header("accept-encoding", accept);
    }
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    send(&client(), req.body(Full::default()).unwrap()).await
}

/// The body decoded by the `Content-Encoding` it came with.
fn decoded(reply: &Reply) -> Vec<u8> {
    decode(reply.header("content-encoding"), &reply.body)
}

fn decode(encoding: Option<&str>, wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        None => out.extend_from_slice(wire),
        Some("gzip") => {
            flate2::read::GzDecoder::new(wire)
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        Some("br") => {
            brotli::Decompressor::new(wire, 4096)
                .read_to_end(&mut out)
                .expect("valid brotli");
        }
        Some("zstd") => out = zstd::decode_all(wire).expect("valid zstd"),
        Some(other) => panic!("unexpected encoding {other}"),
    }
    out
}

fn varies_by_accept_encoding(reply: &Reply) -> bool {
    reply.headers.get_all("vary").iter().any(|v| {
        v.to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    })
}

#[tokio::test]
async fn each_encoding_decodes_back_to_the_same_page() {
    let (_fpm, gw) = TestGateway::with_fpm("", "").await;
    let plain = get(&gw, "/compress.php", "", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.body.len(), 100_000);
    assert_eq!(plain.header("content-encoding"), None);
    assert!(varies_by_accept_encoding(&plain), "{:?}", plain.headers);
    for encoding in ["zstd", "br", "gzip"] {
        let reply = get(&gw, "/compress.php?length=1", encoding, &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-encoding"), Some(encoding));
        assert_eq!(reply.header("content-length"), None, "{encoding}");
        assert!(varies_by_accept_encoding(&reply), "{encoding}");
        assert!(
            reply.body.len() < plain.body.len() / 5,
            "{encoding}: {} bytes",
            reply.body.len()
        );
        assert_eq!(decoded(&reply), plain.body, "{encoding}");
    }
}

#[tokio::test]
async fn the_encoding_follows_q_values_then_the_servers_order() {
    let (_fpm, gw) = TestGateway::with_fpm("", "").await;
    for (accept, expected) in [
        ("gzip, deflate, br, zstd", Some("zstd")),
        ("gzip;q=1.0, br;q=0.5, zstd;q=0", Some("gzip")),
        ("br;q=0.8, gzip;q=0.3", Some("br")),
        ("*", Some("zstd")),
        ("*;q=0.5, zstd;q=0", Some("br")),
        ("zstd;q=0, br;q=0, gzip;q=0", None),
        ("identity", None),
        ("deflate", None),
    ] {
        let reply = get(&gw, "/compress.php", accept, &[]).await;
        assert_eq!(reply.header("content-encoding"), expected, "{accept}");
        assert!(varies_by_accept_encoding(&reply), "{accept}");
        assert_eq!(decoded(&reply).len(), 100_000, "{accept}");
    }
}

#[tokio::test]
async fn small_answers_with_a_length_go_uncompressed_and_streamed_ones_do_not() {
    let (_fpm, gw) = TestGateway::with_fpm("", "").await;
    let small = get(&gw, "/compress.php?size=500&length=1", "gzip", &[]).await;
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.header("content-length"), Some("500"));
    // The same page without a length: PHP streams it, so its size is unknown ahead.
    let streamed = get(&gw, "/compress.php?size=500", "gzip", &[]).await;
    assert_eq!(streamed.header("content-encoding"), Some("gzip"));
    assert_eq!(decoded(&streamed), small.body);
    // Types that do not shrink are left alone.
    let png = get(&gw, "/compress.php?type=image/png", "gzip", &[]).await;
    assert_eq!(png.header("content-encoding"), None);
    assert!(!varies_by_accept_encoding(&png));
}

#[tokio::test]
async fn an_answer_php_encoded_itself_is_not_encoded_again() {
    let (_fpm, gw) = TestGateway::with_fpm("", "").await;
    let plain = get(&gw, "/compress.php", "", &[]).await;
    let reply = get(&gw, "/compress.php?gzip=1&length=1", "br, zstd, gzip", &[]).await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
    assert_eq!(decoded(&reply), plain.body);
}

#[tokio::test]
async fn ranges_are_never_compressed() {
    let (_fpm, gw) = TestGateway::with_fpm("", "").await;
    let reply = get(&gw, "/compress.php", "gzip", &[("range", "bytes=0-99")]).await;
    assert_eq!(reply.header("content-encoding"), None);
    assert_eq!(reply.body.len(), 100_000);
    let partial = get(&gw, "/compress.php?status=206", "gzip", &[]).await;
    assert_eq!(partial.status, 206);
    assert_eq!(partial.header("content-encoding"), None);
    assert_eq!(partial.body.len(), 100_000);
}

#[tokio::test]
async fn a_strong_etag_is_weakened_when_the_body_is_re_encoded() {
    let (_fpm, gw) = TestGateway::with_fpm("", "").await;
    let plain = get(&gw, "/compress.php?etag=v1", "", &[]).await;
    assert_eq!(plain.header("etag"), Some("\"v1\""));
    let encoded = get(&gw, "/compress.php?etag=v1", "br", &[]).await;
    assert_eq!(encoded.header("content-encoding"), Some("br"));
    assert_eq!(encoded.header("etag"), Some("W/\"v1\""));
}

#[tokio::test]
async fn a_304_varies_by_accept_encoding() {
    let (_fpm, gw) = TestGateway::with_fpm("", "").await;
    let reply = get(&gw, "/compress.php?status=304&etag=v1", "gzip", &[]).await;
    assert_eq!(reply.status, 304);
    assert_eq!(reply.header("content-encoding"), None);
    assert!(varies_by_accept_encoding(&reply), "{:?}", reply.headers);
}

#[tokio::test]
async fn a_head_gets_the_headers_the_get_would_have() {
    let (_fpm, gw) = TestGateway::with_fpm("", "").await;
    let req = request(&gw, Method::HEAD, "/compress.php?length=1")
        .header("accept-encoding", "gzip")
        .body(Full::default())
        .unwrap();
    let reply = send(&client(), req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(reply.header("content-length"), None);
    assert!(reply.body.is_empty());
}

/// Sends `GET path` and returns the first data frame and whether the body had ended by
/// then, without reading the rest.
async fn first_chunk(gw: &TestGateway, path: &str, accept: &str) -> (http::HeaderMap, Bytes, bool) {
    let req = request(gw, Method::GET, path)
        .header("accept-encoding", accept)
        .body(Full::default())
        .unwrap();
    let response = send_head(&client(), req).await;
    let (parts, mut body) = response.into_parts();
    let first = within(REQUEST_LIMIT, "the first chunk", async {
        loop {
            let frame = body.frame().await.expect("a frame").expect("no error");
            if let Ok(data) = frame.into_data() {
                if !data.is_empty() {
                    return data;
                }
            }
        }
    })
    .await;
    let ended = http_body::Body::is_end_stream(&body);
    (parts.headers, first, ended)
}

#[tokio::test]
async fn a_compressed_stream_still_arrives_as_php_flushes_it() {
    let (_fpm, gw) = TestGateway::with_fpm("", "").await;
    // Four chunks, a second apart: the first must come out decodable on its own while
    // the script still sleeps, not at its end.
    let (headers, first, ended) =
        first_chunk(&gw, "/compress.php?chunks=4&interval_ms=1000", "gzip").await;
    assert_eq!(headers["content-encoding"], "gzip");
    assert!(!ended);
    let mut text = Vec::new();
    // The stream is not finished: read what the flushed part decodes to.
    let mut decoder = flate2::read::GzDecoder::new(&first[..]);
    let mut buf = [0u8; 4096];
    while let Ok(n) = decoder.read(&mut buf) {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("chunk 0 "), "{text:?}");
    assert!(!text.contains("chunk 3"), "{text:?}");
}

#[tokio::test]
async fn event_streams_and_unbuffered_answers_go_uncompressed_and_unbuffered() {
    let (_fpm, gw) = TestGateway::with_fpm("", "").await;
    let (headers, first, ended) =
        first_chunk(&gw, "/sse.php?count=3&interval_ms=1000", "gzip, br, zstd").await;
    assert!(!headers.contains_key("content-encoding"));
    assert!(!ended);
    assert_eq!(&first[..], b"id: 0\nevent: tick\ndata: tick 0\n\n");

    let (headers, first, ended) = first_chunk(
        &gw,
        "/compress.php?chunks=3&interval_ms=1000&nobuffer=1",
        "gzip",
    )
    .await;
    assert!(!headers.contains_key("content-encoding"));
    assert!(!ended);
    assert!(first.starts_with(b"chunk 0 "));
}

#[tokio::test]
async fn compression_is_off_with_an_empty_list() {
    let (_fpm, gw) = TestGateway::with_fpm("compression = []", "").await;
    let reply = get(&gw, "/compress.php", "gzip, br, zstd", &[]).await;
    assert_eq!(reply.header("content-encoding"), None);
    assert!(!varies_by_accept_encoding(&reply));
    assert_eq!(reply.body.len(), 100_000);
}

#[tokio::test]
async fn the_servers_list_limits_and_orders_the_encodings() {
    let (_fpm, gw) = TestGateway::with_fpm(
        "compression = [\"gzip\", \"br\"]\ncompression_min_bytes = 200000",
        "",
    )
    .await;
    // Under the raised minimum with a length: sent as it is.
    let reply = get(&gw, "/compress.php?length=1", "zstd, br, gzip", &[]).await;
    assert_eq!(reply.header("content-encoding"), None);
    let reply = get(&gw, "/compress.php", "zstd, br, gzip", &[]).await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    let reply = get(&gw, "/compress.php", "zstd", &[]).await;
    assert_eq!(reply.header("content-encoding"), None);
}

/// A gateway whose root is `root` (static files only; PHP-FPM is never asked).
async fn static_gateway(root: &std::path::Path) -> Served {
    let root = toml::Value::from(root.display().to_string());
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[fastcgi]\nupstream = \"127.0.0.1:9\"\nroot = {root}\n\n\
         [tenants.acme]\nhosts = [\"{HOST}\"]\n"
    );
    let config = Config::parse(&text, "test.toml", fixtures_dir()).expect("valid config");
    Served::bind(config).await
}

async fn static_get(served: &Served, path: &str, accept: &str, extra: &[(&str, &str)]) -> Reply {
    let mut req = http::Request::builder()
        .uri(format!("http://{}{path}", served.addr))
        .header("host", HOST);
    if !accept.is_empty() {
        req = req.header("accept-encoding", accept);
    }
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    send(&client(), req.body(Full::default()).unwrap()).await
}

fn set_mtime(path: &std::path::Path, time: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

#[tokio::test]
async fn static_files_use_fresh_sidecars_and_compress_the_rest_on_the_fly() {
    let dir = tempfile::tempdir().unwrap();
    let css: Vec<u8> = (0..2000)
        .flat_map(|i| format!(".rule-{i} {{ color: #333; }}\n").into_bytes())
        .collect();
    let file = dir.path().join("style.css");
    std::fs::write(&file, &css).unwrap();
    let br = {
        let mut out = Vec::new();
        let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 11, 22);
        std::io::Write::write_all(&mut writer, &css).unwrap();
        drop(writer);
        out
    };
    std::fs::write(dir.path().join("style.css.br"), &br).unwrap();
    let gz = {
        let mut writer = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut writer, &css).unwrap();
        writer.finish().unwrap()
    };
    std::fs::write(dir.path().join("style.css.gz"), &gz).unwrap();
    let now = SystemTime::now();
    set_mtime(&file, now - Duration::from_secs(60));
    set_mtime(&dir.path().join("style.css.br"), now);
    // Older than the file: a stale leftover that must not be served.
    set_mtime(
        &dir.path().join("style.css.gz"),
        now - Duration::from_secs(120),
    );
    let served = static_gateway(dir.path()).await;

    let plain = static_get(&served, "/style.css", "", &[]).await;
    assert_eq!(plain.body, css);
    let plain_etag = plain.header("etag").unwrap().to_owned();
    assert!(varies_by_accept_encoding(&plain));

    let sidecar = static_get(&served, "/style.css", "br, gzip", &[]).await;
    assert_eq!(sidecar.status, 200);
    assert_eq!(sidecar.header("content-encoding"), Some("br"));
    assert_eq!(sidecar.body, br, "the sidecar's bytes as they are");
    assert_eq!(
        sidecar.header("content-length"),
        Some(br.len().to_string().as_str())
    );
    assert!(sidecar
        .header("content-type")
        .unwrap()
        .starts_with("text/css"));
    assert!(varies_by_accept_encoding(&sidecar));
    let br_etag = sidecar.header("etag").unwrap().to_owned();
    assert_ne!(br_etag, plain_etag);

    // Revalidating the brotli copy: 304 with its own tag and Vary.
    let revalidated = static_get(&served, "/style.css", "br", &[("if-none-match", &br_etag)]).await;
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("etag"), Some(br_etag.as_str()));
    assert!(varies_by_accept_encoding(&revalidated));

    // The gzip sidecar is stale: compressed on the fly instead, with a weakened tag.
    let fly = static_get(&served, "/style.css", "gzip", &[]).await;
    assert_eq!(fly.header("content-encoding"), Some("gzip"));
    assert_ne!(fly.body, gz);
    assert_eq!(decoded(&fly), css);
    assert_eq!(fly.header("etag"), Some(format!("W/{plain_etag}").as_str()));

    // No zstd sidecar: on the fly too.
    let zstd = static_get(&served, "/style.css", "zstd", &[]).await;
    assert_eq!(zstd.header("content-encoding"), Some("zstd"));
    assert_eq!(decoded(&zstd), css);

    // A range is served from the file itself, uncompressed.
    let range = static_get(&served, "/style.css", "br, gzip", &[("range", "bytes=0-9")]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.header("content-encoding"), None);
    assert_eq!(&range.body[..], &css[..10]);

    // A static 304 of the plain file varies too.
    let not_modified =
        static_get(&served, "/style.css", "", &[("if-none-match", &plain_etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert!(varies_by_accept_encoding(&not_modified));
}

#[tokio::test]
async fn tenants_override_the_encodings_and_defaults_apply_to_the_others() {
    let fpm = support::start_fpm(fpm_harness::FpmConfig::new().workers(2));
    let root = toml::Value::from(fixtures_dir().display().to_string());
    let upstream = toml::Value::from(fpm.address().to_upstream_string());
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncompression = [\"zstd\", \"gzip\"]\n\n\
         [fastcgi]\nupstream = {upstream}\nroot = {root}\n\n\
         [defaults]\ncompression = [\"br\"]\n\n\
         [tenants.plain]\nhosts = [\"plain.test\"]\ncompression = []\n\n\
         [tenants.gz]\nhosts = [\"gz.test\"]\ncompression = [\"gzip\"]\n\n\
         [tenants.other]\nhosts = [\"other.test\"]\n"
    );
    let config = Config::parse(&text, "test.toml", fixtures_dir()).expect("valid config");
    let served = Served::bind(config).await;
    let fetch = |host: &'static str| {
        let req = http::Request::builder()
            .uri(format!("http://{}/compress.php", served.addr))
            .header("host", host)
            .header("accept-encoding", "zstd, br, gzip")
            .body(Full::default())
            .unwrap();
        async move { send(&client(), req).await }
    };
    let plain = fetch("plain.test").await;
    assert_eq!(plain.header("content-encoding"), None);
    assert!(!varies_by_accept_encoding(&plain));
    let gz = fetch("gz.test").await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(decoded(&gz), plain.body);
    // Neither its own list nor the server's: `[defaults]` wins.
    let other = fetch("other.test").await;
    assert_eq!(other.header("content-encoding"), Some("br"));
    assert_eq!(decoded(&other), plain.body);
}

#[tokio::test]
async fn bytes_out_count_the_compressed_bytes_sent() {
    let (_fpm, gw) = TestGateway::with_fpm("", "").await;
    let reply = get(&gw, "/compress.php", "gzip", &[]).await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    let meter = &gw.state.telemetry.usage;
    let counted = || {
        meter
            .totals()
            .values()
            .map(|u| (u.requests, u.bytes_out))
            .fold((0, 0), |(r, b), (r2, b2)| (r + r2, b + b2))
    };
    assert!(
        support::eventually(support::SOON, || counted().0 >= 1).await,
        "the request was never metered"
    );
    let (_, bytes_out) = counted();
    // The wire bytes, not the 100,000 PHP printed (headers may or may not be counted).
    assert!(
        bytes_out >= reply.body.len() as u64 && bytes_out < 50_000,
        "bytes out {bytes_out}, body on the wire {}",
        reply.body.len()
    );
}

/// The cache on, every tenant's answers kept for a minute (`compress.php` sends no
/// caching headers, so `default_ttl` applies).
const CACHED: &str = "\n[cache]\nmemory = \"16MiB\"\n\n\
                      [defaults.cache]\nenabled = true\ndefault_ttl = \"60s\"\n";

#[tokio::test]
async fn a_cached_page_is_compressed_once_when_stored_and_its_hits_never_compress() {
    let (_fpm, gw) = TestGateway::with_fpm("", CACHED).await;
    let page = "/compress.php?size=50000&etag=v1";
    let miss = get(&gw, page, "gzip", &[]).await;
    assert_eq!(miss.status, 200);
    assert!(
        miss.header("cache-status")
            .is_some_and(|s| s.contains("stored")),
        "{:?}",
        miss.headers
    );
    assert_eq!(miss.header("content-encoding"), Some("gzip"));
    let plain = get(&gw, page, "", &[]).await;
    assert!(plain
        .header("cache-status")
        .is_some_and(|s| s.contains("hit")));
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.body.len(), 50_000);
    assert!(varies_by_accept_encoding(&plain), "{:?}", plain.headers);
    assert_eq!(decoded(&miss), plain.body);

    for encoding in ["gzip", "br", "zstd"] {
        let hit = get(&gw, page, encoding, &[]).await;
        assert!(
            hit.header("cache-status")
                .is_some_and(|s| s.contains("hit")),
            "{encoding}: {:?}",
            hit.headers
        );
        assert_eq!(hit.header("content-encoding"), Some(encoding));
        // Compressed when stored, so its length is known: an answer compressed on the
        // fly has none.
        assert_eq!(
            hit.header("content-length"),
            Some(hit.body.len().to_string().as_str()),
            "{encoding}"
        );
        assert!(
            hit.body.len() < 50_000 / 5,
            "{encoding}: {}",
            hit.body.len()
        );
        assert_eq!(decoded(&hit), plain.body, "{encoding}");
        assert_eq!(hit.header("etag"), Some("W/\"v1\""), "{encoding}");
        assert!(varies_by_accept_encoding(&hit), "{encoding}");
    }

    // A range is of the page as PHP sent it; a validator still gives a 304; a HEAD the
    // GET's headers.
    let range = get(&gw, page, "gzip", &[("range", "bytes=0-9")]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.header("content-encoding"), None);
    assert_eq!(range.body, plain.body.slice(0..10));
    let not_modified = get(&gw, page, "gzip", &[("if-none-match", "W/\"v1\"")]).await;
    assert_eq!(not_modified.status, 304);
    let head = send_head(
        &client(),
        request(&gw, Method::HEAD, page)
            .header("accept-encoding", "br")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(head.headers()["content-encoding"], "br");
    let br = get(&gw, page, "br", &[]).await;
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        br.body.len().to_string()
    );
}
