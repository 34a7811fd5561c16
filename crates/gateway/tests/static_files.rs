//! Static files under the shared root: content types, validators and conditional
//! requests, ranges, and HEAD.

mod support;

use http_body_util::Empty;
use support::multi_tenant::{request, TestGateway};

const HELLO: &str = "hello static\n";

#[tokio::test]
async fn static_files_are_served_with_their_content_type() {
    let gw = TestGateway::start().await;
    let reply = gw.get("t1.example", "/static/hello.txt").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), HELLO);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        reply.header("content-type")
    );
    assert_eq!(reply.header("content-length"), Some("13"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));

    let reply = gw.get("t2.example", "/static/style.css").await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/css"));
    assert!(reply.text().contains("body { color: #333; }"));
}

#[tokio::test]
async fn static_files_carry_an_etag_and_last_modified() {
    let gw = TestGateway::start().await;
    let reply = gw.get("t1.example", "/static/hello.txt").await;
    let etag = reply.header("etag").expect("ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let last_modified = reply.header("last-modified").expect("Last-Modified");
    httpdate::parse_http_date(last_modified).expect("an HTTP date");
    // The tag is stable between requests for an unchanged file.
    let again = gw.get("t1.example", "/static/hello.txt").await;
    assert_eq!(again.header("etag"), Some(etag));
}

#[tokio::test]
async fn a_matching_if_none_match_is_304_without_a_body() {
    let gw = TestGateway::start().await;
    let first = gw.get("t1.example", "/static/hello.txt").await;
    let etag = first.header("etag").expect("ETag").to_owned();

    for if_none_match in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
    ] {
        let reply = conditional(&gw, "if-none-match", &if_none_match).await;
        assert_eq!(reply.status, 304, "If-None-Match: {if_none_match}");
        assert!(reply.body.is_empty());
        assert_eq!(reply.header("etag"), Some(etag.as_str()));
    }

    let reply = conditional(&gw, "if-none-match", "\"stale-tag\"").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), HELLO);
}

#[tokio::test]
async fn a_current_if_modified_since_is_304() {
    let gw = TestGateway::start().await;
    let first = gw.get("t1.example", "/static/hello.txt").await;
    let last_modified = first
        .header("last-modified")
        .expect("Last-Modified")
        .to_owned();

    let reply = conditional(&gw, "if-modified-since", &last_modified).await;
    assert_eq!(reply.status, 304);
    assert!(reply.body.is_empty());

    let reply = conditional(&gw, "if-modified-since", "Thu, 01 Jan 1998 00:00:00 GMT").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), HELLO);

    // A stale If-None-Match wins over a current If-Modified-Since (RFC 9110 §13.2.2).
    let reply = gw
        .send(
            request("GET", "t1.example", "/static/hello.txt")
                .header("if-none-match", "\"stale-tag\"")
                .header("if-modified-since", &last_modified)
                .body(Empty::new())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_range_is_206_with_content_range() {
    let gw = TestGateway::start().await;
    let reply = conditional(&gw, "range", "bytes=0-4").await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.header("content-range"), Some("bytes 0-4/13"));
    assert_eq!(reply.text(), "hello");

    let reply = conditional(&gw, "range", "bytes=-7").await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.text(), "static\n");

    let reply = conditional(&gw, "range", "bytes=100-200").await;
    assert_eq!(reply.status, 416);
}

#[tokio::test]
async fn a_range_with_a_stale_if_range_gets_the_whole_file() {
    let gw = TestGateway::start().await;
    let etag = gw
        .get("t1.example", "/static/hello.txt")
        .await
        .header("etag")
        .expect("ETag")
        .to_owned();
    let ranged = |if_range: String| {
        request("GET", "t1.example", "/static/hello.txt")
            .header("range", "bytes=0-4")
            .header("if-range", if_range)
            .body(Empty::new())
            .unwrap()
    };
    let reply = gw.send(ranged(etag)).await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.text(), "hello");
    let reply = gw.send(ranged("\"stale-tag\"".into())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), HELLO);
}

#[tokio::test]
async fn head_has_the_headers_and_no_body() {
    let gw = TestGateway::start().await;
    let reply = gw
        .raw(b"HEAD /static/hello.txt HTTP/1.1\r\nHost: t1.example\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert_eq!(reply.header("content-length"), Some("13"));
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert!(reply.header("etag").is_some());
    assert!(reply.header("last-modified").is_some());
    assert!(
        reply.body.is_empty(),
        "HEAD sent a body: {:?}",
        reply.text()
    );
}

async fn conditional(gw: &TestGateway, name: &str, value: &str) -> support::Reply {
    gw.send(
        request("GET", "t1.example", "/static/hello.txt")
            .header(name, value)
            .body(Empty::new())
            .unwrap(),
    )
    .await
}
