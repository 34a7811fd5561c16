//! Checks that the PHP fixtures in tests/fixtures/php behave as documented,
//! talking FastCGI directly to a harness php-fpm (no fcgi-core involved).

mod common;

use std::fs;
use std::io::Read;
use std::time::{Duration, Instant};

use common::{read_response, write_request, FcgiResponse, Request};
use fpm_harness::{fixtures_dir, Fpm, FpmConfig, Listen};

fn fpm() -> Fpm {
    Fpm::start(FpmConfig::new().listen(Listen::Unix).workers(2)).unwrap()
}

fn get(fpm: &Fpm, script: &str, query: &str) -> FcgiResponse {
    Request::get(script, query).send(fpm.address()).unwrap()
}

/// Minimal CRC-32 (IEEE) to check upload.php's digest.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn fixture_files_exist_including_dotfiles() {
    let dir = fixtures_dir();
    for file in [
        "hello.php",
        "params.php",
        "upload.php",
        "download.php",
        "xaccel.php",
        "stderr.php",
        "status.php",
        "redirect.php",
        "sleep.php",
        "stream.php",
        "headers_big.php",
        "sse.php",
        "echo_body.php",
        "info.php",
        "index.php",
        "sub/index.php",
        "file.php",
        "static/hello.txt",
        "static/style.css",
        ".env",
        ".git/config",
        "uploads/evil.jpg",
    ] {
        assert!(dir.join(file).is_file(), "missing fixture {file}");
    }
    assert_eq!(
        fs::read_to_string(dir.join("static/hello.txt")).unwrap(),
        "hello static\n"
    );
    assert!(fs::read_to_string(dir.join(".env"))
        .unwrap()
        .contains("SECRET=do-not-serve"));
}

#[test]
fn hello_prints_exactly_hello_world() {
    let fpm = fpm();
    let response = get(&fpm, "hello.php", "");
    assert_eq!(response.body(), b"Hello, World!");
    assert_eq!(response.app_status, 0);
    assert!(response.stderr.is_empty());
}

#[test]
fn params_dumps_server_and_superglobals_as_json() {
    let fpm = fpm();
    let mut request = Request::post("params.php", "application/x-www-form-urlencoded", b"p=1");
    request.query = "g=2";
    request.extra = vec![("HTTP_COOKIE", "c=3"), ("PHP_AUTH_USER", "alice")];
    let response = request.send(fpm.address()).unwrap();
    assert_eq!(
        response.header_values("Content-Type"),
        vec!["application/json"]
    );
    let body = response.body_text();
    for needle in [
        r#""REQUEST_METHOD":"POST""#,
        r#""_GET":{"g":"2"}"#,
        r#""_POST":{"p":"1"}"#,
        r#""_COOKIE":{"c":"3"}"#,
        r#""php_auth_user":"alice""#,
        r#""SCRIPT_NAME":"/params.php""#,
    ] {
        assert!(body.contains(needle), "{needle} not in {body}");
    }
}

#[test]
fn params_only_prints_one_raw_value_or_404() {
    let fpm = fpm();
    let response = get(&fpm, "params.php", "only=REQUEST_URI");
    assert_eq!(response.body_text(), "/params.php?only=REQUEST_URI");
    let missing = get(&fpm, "params.php", "only=NO_SUCH_PARAM");
    assert_eq!(missing.headers()[0], "Status: 404 Not Found");
    assert!(missing.body().is_empty());
}

#[test]
fn upload_counts_bytes_and_crc32_of_large_octet_stream_body() {
    let fpm = fpm();
    let body: Vec<u8> = (0..(10 << 20) + 123)
        .map(|i: u32| (i % 253) as u8)
        .collect();
    let response = Request::post("upload.php", "application/octet-stream", &body)
        .send(fpm.address())
        .unwrap();
    assert_eq!(
        response.body_text(),
        format!(
            r#"{{"bytes":{},"crc32":"{:08x}"}}"#,
            body.len(),
            crc32(&body)
        )
    );
}

#[test]
fn download_streams_pattern_with_content_length_in_many_records() {
    let fpm = fpm();
    let response = get(&fpm, "download.php", "mib=2");
    assert_eq!(response.header_values("Content-Length"), vec!["2097152"]);
    let body = response.body();
    assert_eq!(body.len(), 2 << 20);
    assert!(body
        .iter()
        .enumerate()
        .all(|(k, &b)| b == ((k % 65536) % 251) as u8));
    assert!(response.stdout_records > 16, "{}", response.stdout_records);
}

#[test]
fn stderr_goes_to_fcgi_stderr_and_worker_stderr_to_fpm_log() {
    let fpm = fpm();
    let response = get(&fpm, "stderr.php", "lines=2");
    assert_eq!(response.body_text(), "ok");
    // error_log() -> FCGI_STDERR; several messages arrive joined by "; ".
    assert_eq!(
        String::from_utf8_lossy(&response.stderr),
        "PHP message: error_log line 1; PHP message: error_log line 2"
    );
    // php://stderr -> worker stderr -> php-fpm log (undecorated).
    assert!(fpm.wait_for_log("\nline 2\n", Duration::from_secs(5)));
}

#[test]
fn status_sets_code_and_repeated_headers() {
    let fpm = fpm();
    let response = get(&fpm, "status.php", "code=404");
    let headers = response.headers();
    assert_eq!(headers[0], "Status: 404 Not Found");
    assert_eq!(response.header_values("Set-Cookie"), vec!["a=1", "b=2"]);
    assert_eq!(response.header_values("X-Test"), vec!["yes"]);
    assert_eq!(response.body_text(), "status 404");

    let ok = get(&fpm, "status.php", "code=200");
    assert!(ok.header_values("Status").is_empty(), "{:?}", ok.headers());

    let unknown = get(&fpm, "status.php", "code=599");
    assert_eq!(unknown.header_values("Status"), vec!["599"]);
}

#[test]
fn xaccel_sends_the_handoff_headers_it_is_given() {
    let fpm = fpm();
    let response = get(
        &fpm,
        "xaccel.php",
        "accel=/a%20b&sendfile=/srv/x&disposition=r.pdf&cache=private&notype=1",
    );
    assert_eq!(response.header_values("X-Accel-Redirect"), vec!["/a b"]);
    assert_eq!(response.header_values("X-Sendfile"), vec!["/srv/x"]);
    assert_eq!(
        response.header_values("Content-Disposition"),
        vec!["attachment; filename=\"r.pdf\""]
    );
    assert_eq!(response.header_values("Cache-Control"), vec!["private"]);
    assert!(response.header_values("Content-Type").is_empty());
    assert_eq!(response.body_text(), "php body");
    // Without X-Sendfile-Type from the front server, the Symfony-style mode declines.
    let declined = get(&fpm, "xaccel.php", "file=/srv/x/f");
    assert_eq!(
        declined.header_values("Status"),
        vec!["501 Not Implemented"]
    );
    assert!(declined.header_values("X-Accel-Redirect").is_empty());
}

#[test]
fn redirect_without_status_gets_302_from_php() {
    let fpm = fpm();
    let response = get(&fpm, "redirect.php", "");
    assert_eq!(response.header_values("Status"), vec!["302 Found"]);
    assert_eq!(response.header_values("Location"), vec!["/elsewhere"]);
    assert!(response.body().is_empty());
}

#[test]
fn sleep_waits_requested_time() {
    let fpm = fpm();
    let start = Instant::now();
    let response = get(&fpm, "sleep.php", "ms=150");
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!(response.body_text(), "slept 150");
}

#[test]
fn stream_stops_running_when_the_client_disconnects() {
    let fpm = fpm();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let query = format!("seconds=30&marker={}", marker.display());
    let request = Request::get("stream.php", &query);
    let mut stream = fpm.address().connect(Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write_request(&mut stream, &request.params(), b"").unwrap();
    let mut buf = [0u8; 4096];
    let mut received = 0;
    while received < 2000 {
        received += stream.read(&mut buf).unwrap();
    }
    drop(stream);

    // The next write after the disconnect fails and PHP aborts the script;
    // wait (bounded, machines may be loaded) until the marker stays put.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = fs::read_to_string(&marker).unwrap();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = fs::read_to_string(&marker).unwrap();
        if now == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stream.php kept running after the client went away"
        );
        last = now;
    }
}

#[test]
fn stream_runs_to_completion_when_read() {
    let fpm = fpm();
    let response = get(&fpm, "stream.php", "seconds=0.1&interval_ms=10");
    let body = response.body_text();
    assert!(body.starts_with("line 0\n"), "{body}");
    assert!(body.ends_with("done\n"), "{body}");
}

#[test]
fn headers_big_sends_n_kib_of_headers() {
    let fpm = fpm();
    let response = get(&fpm, "headers_big.php", "kib=16");
    let big: Vec<String> = response
        .headers()
        .into_iter()
        .filter(|h| h.starts_with("X-Big-"))
        .collect();
    assert_eq!(big.len(), 16);
    assert!(big.iter().all(|h| h.len() + 2 == 1024));
    assert_eq!(response.body_text(), "headers 16");
}

#[test]
fn sse_sends_each_event_in_its_own_record() {
    let fpm = fpm();
    let start = Instant::now();
    let response = get(&fpm, "sse.php", "");
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        response.header_values("Content-Type"),
        vec!["text/event-stream;charset=UTF-8"]
    );
    let body = response.body_text();
    assert_eq!(body.matches("event: tick\n").count(), 5);
    assert!(body.ends_with("data: tick 4\n\n"));
    assert!(response.stdout_records >= 5, "{}", response.stdout_records);
}

#[test]
fn echo_body_returns_body_with_request_content_type() {
    let fpm = fpm();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
    let response = Request::post("echo_body.php", "application/x-test", &body)
        .send(fpm.address())
        .unwrap();
    assert_eq!(
        response.header_values("Content-Type"),
        vec!["application/x-test"]
    );
    assert_eq!(response.body(), body);
}

#[test]
fn info_prints_worker_pid() {
    let fpm = fpm();
    let pid: u32 = get(&fpm, "info.php", "").body_text().parse().unwrap();
    assert!(fpm.worker_pids().unwrap().contains(&pid));
}

#[test]
fn front_controllers_report_their_marker_and_routing() {
    let fpm = fpm();
    for (script, marker) in [
        ("index.php", "index"),
        ("sub/index.php", "sub"),
        ("file.php", "file.php"),
    ] {
        let mut request = Request::get(script, "");
        request.extra = vec![("PATH_INFO", "/1/x.jpg")];
        let body = request.send(fpm.address()).unwrap().body_text();
        assert!(
            body.contains(&format!(r#""marker":"{marker}""#)),
            "{script}: {body}"
        );
        assert!(body.contains(r#""PATH_INFO":"/1/x.jpg""#), "{body}");
        assert!(body.contains(&format!(r#""SCRIPT_NAME":"/{script}""#)));
    }
}

#[test]
fn php_fpm_refuses_to_execute_non_php_extensions() {
    let fpm = fpm();
    let response = get(&fpm, "uploads/evil.jpg", "");
    assert_eq!(response.header_values("Status"), vec!["403 Forbidden"]);
    assert!(!response.stdout_lossy().contains("PWNED"));
}

#[test]
fn fcgi_end_request_arrives_for_missing_script_with_404() {
    let fpm = fpm();
    let mut stream = fpm.address().connect(Duration::from_secs(5)).unwrap();
    write_request(&mut stream, &Request::get("missing.php", "").params(), b"").unwrap();
    let response = read_response(&mut stream).unwrap();
    assert_eq!(response.header_values("Status"), vec!["404 Not Found"]);
    assert_eq!(
        String::from_utf8_lossy(&response.stderr),
        "Primary script unknown"
    );
}
