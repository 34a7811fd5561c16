//! A tenant's private files handed to the gateway by PHP with `X-Accel-Redirect` or
//! `X-Sendfile`, against a real PHP-FPM: served whole, by range, by HEAD and as 304 with
//! PHP's own download headers; confined to the tenant's `private_root` against every
//! escape; never honoured for a tenant without one; PHP-FPM's connection free while the
//! client still downloads; the params PHP reads; the bytes metered to the tenant.

mod support;

use std::fs;
use std::path::PathBuf;

use bytes::Bytes;
use fpm_harness::{fixtures_dir, Crc32, Fpm, FpmConfig, Listen};
use gateway::config::Config;
use http_body_util::{BodyExt, Empty};
use support::logs::LogCapture;
use support::multi_tenant::{request, send_streaming_to, send_with_headers};
use support::payload::pattern;
use support::{eventually, start_fpm, within, Reply, Served, REQUEST_LIMIT};

/// The Moodle-style download: big enough that it cannot sit in socket buffers.
const BIG: usize = 50 << 20;

/// Two tenants with private roots (`a` its own, `b` its own) beside `plain`, which has
/// none, in front of a PHP-FPM pool of ONE connection, with the files on disk.
struct Private {
    served: Served,
    _fpm: Fpm,
    dir: tempfile::TempDir,
}

impl Private {
    async fn start() -> Private {
        Self::with_defaults("").await
    }

    /// `defaults` goes into `[defaults]` (e.g. a `private_root` with `{tenant}`).
    async fn with_defaults(defaults: &str) -> Private {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        fs::create_dir_all(data.join("a/filedir/ab")).unwrap();
        fs::create_dir_all(data.join("b")).unwrap();
        fs::create_dir_all(dir.path().join("outside")).unwrap();
        fs::write(data.join("a/filedir/ab/big.bin"), pattern(0, BIG)).unwrap();
        fs::write(data.join("a/report.pdf"), b"%PDF-1.4 private report").unwrap();
        fs::write(data.join("a/my file.txt"), b"spaced name").unwrap();
        fs::write(data.join("b/secret.txt"), b"tenant b's secret").unwrap();
        fs::write(dir.path().join("outside/secret.txt"), b"outside secret").unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("outside/secret.txt"),
            data.join("a/link-out.txt"),
        )
        .unwrap();
        std::os::unix::fs::symlink(data.join("a/report.pdf"), data.join("a/link-in.pdf")).unwrap();

        let fpm = start_fpm(FpmConfig::new().listen(Listen::Unix).workers(3));
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [fastcgi]\nupstream = {upstream:?}\nroot = {root:?}\nmax_connections = 1\n\n\
             [defaults]\n{defaults}\n\n\
             [tenants.a]\nhosts = [\"a.example\"]\nprivate_root = {a:?}\n\n\
             [tenants.b]\nhosts = [\"b.example\"]\nprivate_root = {b:?}\n\n\
             [tenants.plain]\nhosts = [\"plain.example\"]\n",
            upstream = fpm.address().to_upstream_string(),
            root = fixtures_dir().display().to_string(),
            a = data.join("a").display().to_string(),
            b = data.join("b").display().to_string(),
        );
        let config = Config::parse(&text, "tenants.toml", dir.path())
            .unwrap_or_else(|err| panic!("test config is valid: {err}\n{text}"));
        Private {
            served: Served::bind(config).await,
            _fpm: fpm,
            dir,
        }
    }

    fn root(&self, tenant: &str) -> PathBuf {
        self.dir.path().join("data").join(tenant)
    }

    async fn get(&self, host: &str, target: &str) -> Reply {
        self.send("GET", host, target, &[]).await
    }

    async fn send(
        &self,
        method: &str,
        host: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        send_with_headers(self.served.addr, method, host, target, headers).await
    }
}

/// A query value percent-encoded (everything but unreserved characters and `/`), so
/// PHP's `$_GET` holds exactly `value`.
fn q(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn crc(bytes: &[u8]) -> String {
    let mut crc = Crc32::default();
    crc.update(bytes);
    crc.hex()
}

#[tokio::test]
async fn a_moodle_style_download_of_a_50_mib_private_file_arrives_intact() {
    let gw = Private::start().await;
    // What Moodle sends with `$CFG->xsendfilealiases = ['/' => $CFG->dataroot]`, with
    // the doubled slash a mapping like Symfony's (`<root>=/`) makes of it.
    let reply = gw
        .get(
            "a.example",
            &format!("/xaccel.php?accel={}", q("//filedir/ab/big.bin")),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), BIG);
    assert_eq!(crc(&reply.body), crc(&pattern(0, BIG)));
    assert_eq!(
        reply.header("content-length"),
        Some(BIG.to_string().as_str())
    );
    assert!(reply.header("etag").is_some());
    assert!(reply.header("last-modified").is_some());
    assert_eq!(reply.header("x-accel-redirect"), None);
    assert!(!reply.text().contains("php body"));
}

#[tokio::test]
async fn a_private_file_honours_range_head_and_if_none_match() {
    let gw = Private::start().await;
    let target = format!("/xaccel.php?accel={}", q("/filedir/ab/big.bin"));
    let reply = gw
        .send(
            "GET",
            "a.example",
            &target,
            &[("range", "bytes=1000000-1000099")],
        )
        .await;
    assert_eq!(reply.status, 206);
    assert_eq!(&reply.body[..], &pattern(1_000_000, 100)[..]);
    assert_eq!(
        reply.header("content-range"),
        Some(format!("bytes 1000000-1000099/{BIG}").as_str())
    );
    let etag = reply.header("etag").expect("ETag on a 206").to_owned();

    let head = gw.send("HEAD", "a.example", &target, &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(BIG.to_string().as_str())
    );
    assert_eq!(head.header("etag"), Some(etag.as_str()));

    let not_modified = gw
        .send("GET", "a.example", &target, &[("if-none-match", &etag)])
        .await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("x-accel-redirect"), None);
}

#[tokio::test]
async fn phps_content_type_disposition_and_cache_control_win() {
    let gw = Private::start().await;
    let target = format!(
        "/xaccel.php?accel=/report.pdf&disposition={}&type={}&cache={}",
        q("report 2024.pdf"),
        q("application/x-moodle-report"),
        q("private, max-age=60"),
    );
    let reply = gw.get("a.example", &target).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "%PDF-1.4 private report");
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment; filename=\"report 2024.pdf\"")
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/x-moodle-report")
    );
    assert_eq!(reply.header("cache-control"), Some("private, max-age=60"));

    // PHP's default type wins too, as with nginx; without any, the file's own.
    let reply = gw.get("a.example", "/xaccel.php?accel=/report.pdf").await;
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let reply = gw
        .get("a.example", "/xaccel.php?accel=/report.pdf&notype=1")
        .await;
    assert_eq!(reply.header("content-type"), Some("application/pdf"));
    // Percent-decoded like nginx's.
    let reply = gw
        .get(
            "a.example",
            &format!("/xaccel.php?accel={}", q("/my%20file.txt")),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "spaced name");
}

#[tokio::test]
async fn x_sendfile_serves_an_absolute_path_inside_the_private_root() {
    let gw = Private::start().await;
    let file = gw.root("a").join("report.pdf");
    let reply = gw
        .get(
            "a.example",
            &format!("/xaccel.php?sendfile={}", q(&file.display().to_string())),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "%PDF-1.4 private report");
    assert_eq!(reply.header("x-sendfile"), None);
    // A symlink that stays inside the root is followed.
    let reply = gw.get("a.example", "/xaccel.php?accel=/link-in.pdf").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "%PDF-1.4 private report");
}

#[tokio::test]
async fn every_escape_from_the_private_root_is_refused_with_403_and_logged() {
    let log = LogCapture::default();
    let _guard = log.install_text();
    let gw = Private::start().await;
    let outside = gw.dir.path().join("outside/secret.txt");
    let b_secret = gw.root("b").join("secret.txt");
    let escapes = [
        format!("accel={}", q("/../b/secret.txt")),
        format!("accel={}", q("/filedir/../../b/secret.txt")),
        format!("accel={}", q("/..%2f..%2foutside/secret.txt")),
        format!("accel={}", q("/%2e%2e/b/secret.txt")),
        format!("accel={}", q("/report.pdf%00.txt")),
        format!("accel={}", q("/link-out.txt")),
        format!("sendfile={}", q(&outside.display().to_string())),
        format!("sendfile={}", q(&b_secret.display().to_string())),
        format!(
            "sendfile={}",
            q(&format!("{}/../b/secret.txt", gw.root("a").display()))
        ),
        format!("sendfile={}", q("/etc/passwd")),
        format!("sendfile={}", q("report.pdf")),
    ];
    for escape in &escapes {
        let reply = gw.get("a.example", &format!("/xaccel.php?{escape}")).await;
        assert_eq!(reply.status, 403, "{escape}");
        let text = reply.text();
        assert!(
            !text.contains("secret") && !text.contains("php body") && !text.contains("root:"),
            "{escape}: {text}"
        );
        assert_eq!(reply.header("x-accel-redirect"), None);
        assert_eq!(reply.header("x-sendfile"), None);
    }
    let refusals = log
        .lines()
        .into_iter()
        .filter(|line| line.contains("private file refused") && line.contains("tenant=a"))
        .count();
    assert_eq!(refusals, escapes.len(), "{:#?}", log.lines());

    // Tenant b's own file is there for b, and a file missing from a's root is a 404.
    let reply = gw.get("b.example", "/xaccel.php?accel=/secret.txt").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "tenant b's secret");
    let reply = gw.get("a.example", "/xaccel.php?accel=/secret.txt").await;
    assert_eq!(reply.status, 404);
}

#[tokio::test]
async fn a_tenant_without_private_root_never_has_the_headers_honoured() {
    let gw = Private::start().await;
    let report = gw.root("a").join("report.pdf");
    for handoff in [
        "accel=/report.pdf".to_owned(),
        format!("sendfile={}", q(&report.display().to_string())),
    ] {
        let reply = gw
            .get("plain.example", &format!("/xaccel.php?{handoff}"))
            .await;
        assert_eq!(reply.status, 500, "{handoff}");
        assert!(!reply.text().contains("PDF"), "{handoff}");
        assert!(!reply.text().contains("php body"), "{handoff}");
        assert_eq!(reply.header("x-accel-redirect"), None);
        assert_eq!(reply.header("x-sendfile"), None);
    }
    // Nor does PHP learn it could use them.
    let reply = gw
        .get(
            "plain.example",
            &format!("/xaccel.php?file={}", q(&report.display().to_string())),
        )
        .await;
    assert_eq!(reply.status, 501);
}

#[tokio::test]
async fn the_php_fpm_connection_is_free_while_the_client_still_downloads() {
    let gw = Private::start().await;
    // The pool has one connection: a second PHP request is answered only if the download
    // does not hold it.
    let req = request(
        "GET",
        "a.example",
        &format!("/xaccel.php?accel={}", q("/filedir/ab/big.bin")),
    )
    .body(Empty::<Bytes>::new())
    .unwrap();
    let response = send_streaming_to(gw.served.addr, req).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = within(REQUEST_LIMIT, "the first bytes", body.frame())
        .await
        .expect("a frame")
        .expect("no error");
    let mut received = first.data_ref().map_or(0, Bytes::len);
    assert!(received < BIG, "the download is still running");

    let hello = within(
        REQUEST_LIMIT,
        "PHP while the download runs",
        gw.get("a.example", "/hello.php"),
    )
    .await;
    assert_eq!(hello.status, 200);
    assert_eq!(hello.text(), "Hello, World!");

    let mut crc = Crc32::default();
    if let Some(data) = first.data_ref() {
        crc.update(data);
    }
    within(REQUEST_LIMIT, "the rest of the download", async {
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("no error");
            if let Some(data) = frame.data_ref() {
                received += data.len();
                crc.update(data);
            }
        }
    })
    .await;
    assert_eq!(received, BIG);
    assert_eq!(crc.hex(), self::crc(&pattern(0, BIG)));
}

#[tokio::test]
async fn php_learns_the_sendfile_type_and_mapping_and_clients_cannot_spoof_them() {
    let gw = Private::start().await;
    let root = gw.root("a").display().to_string();
    let reply = gw
        .send(
            "GET",
            "a.example",
            "/params.php?only=HTTP_X_ACCEL_MAPPING",
            &[
                ("x-accel-mapping", "/=/"),
                ("x-sendfile-type", "X-Sendfile"),
            ],
        )
        .await;
    assert_eq!(reply.text(), format!("{root}=/"));
    let reply = gw
        .send(
            "GET",
            "a.example",
            "/params.php?only=HTTP_X_SENDFILE_TYPE",
            &[("x-sendfile-type", "X-Sendfile")],
        )
        .await;
    assert_eq!(reply.text(), "X-Accel-Redirect");
    // A tenant without a private root gets neither, whatever the client sends.
    for param in ["HTTP_X_SENDFILE_TYPE", "HTTP_X_ACCEL_MAPPING"] {
        let reply = gw
            .send(
                "GET",
                "plain.example",
                &format!("/params.php?only={param}"),
                &[
                    ("x-accel-mapping", "/=/"),
                    ("x-sendfile-type", "X-Accel-Redirect"),
                ],
            )
            .await;
        assert_eq!(reply.status, 404, "{param}: {}", reply.text());
    }

    // Symfony's BinaryFileResponse, given the absolute path, maps it and is served.
    let file = gw.root("a").join("filedir/ab/big.bin");
    let reply = gw
        .send(
            "GET",
            "a.example",
            &format!("/xaccel.php?file={}", q(&file.display().to_string())),
            &[("range", "bytes=0-9")],
        )
        .await;
    assert_eq!(reply.status, 206);
    assert_eq!(&reply.body[..], &pattern(0, 10)[..]);
}

#[tokio::test]
async fn a_defaults_private_root_is_per_tenant_through_its_name() {
    let dir_for_defaults = tempfile::tempdir().unwrap();
    let template = format!("{}/{{tenant}}", dir_for_defaults.path().display());
    let gw = Private::with_defaults(&format!("private_root = {template:?}")).await;
    // `plain` names no root of its own: it inherits `<dir>/plain`.
    let plain_root = dir_for_defaults.path().join("plain");
    fs::create_dir_all(&plain_root).unwrap();
    fs::write(plain_root.join("own.txt"), b"plain's own file").unwrap();
    let reply = gw
        .get("plain.example", "/params.php?only=HTTP_X_ACCEL_MAPPING")
        .await;
    assert_eq!(reply.text(), format!("{}=/", plain_root.display()));
    let reply = gw.get("plain.example", "/xaccel.php?accel=/own.txt").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "plain's own file");
    // A tenant's own private_root wins over the default.
    let reply = gw
        .get("b.example", "/params.php?only=HTTP_X_ACCEL_MAPPING")
        .await;
    assert_eq!(reply.text(), format!("{}=/", gw.root("b").display()));
}

#[tokio::test]
async fn the_private_files_bytes_are_metered_to_the_tenant() {
    let gw = Private::start().await;
    let reply = gw
        .get(
            "a.example",
            &format!("/xaccel.php?accel={}", q("/filedir/ab/big.bin")),
        )
        .await;
    assert_eq!(reply.body.len(), BIG);
    let meter = &gw.served.state.telemetry.usage;
    eventually(REQUEST_LIMIT, || {
        meter
            .totals()
            .get("a")
            .is_some_and(|usage| usage.requests == 1)
    })
    .await;
    let usage = &meter.totals()["a"];
    assert!(
        usage.bytes_out >= BIG as u64,
        "bytes_out {} < {BIG}",
        usage.bytes_out
    );
    assert_eq!(usage.status_2xx, 1);
}

#[tokio::test]
async fn the_access_log_names_the_php_fpm_server_that_handed_the_file_over() {
    let log = LogCapture::default();
    let _guard = log.install_text();
    let gw = Private::start().await;
    let upstream = gw._fpm.address().to_upstream_string();
    for target in [
        "/xaccel.php?accel=/report.pdf",
        "/xaccel.php?accel=/nothing",
    ] {
        gw.get("a.example", target).await;
    }
    let access = |log: &LogCapture| -> Vec<String> {
        log.lines()
            .into_iter()
            .filter(|l| l.contains(" access: ") && l.contains("/xaccel.php"))
            .collect()
    };
    eventually(REQUEST_LIMIT, || access(&log).len() >= 2).await;
    for line in access(&log) {
        assert!(
            line.contains(&format!("upstream={upstream}")),
            "the served file's and the refused file's lines name the server: {line}"
        );
    }
}
