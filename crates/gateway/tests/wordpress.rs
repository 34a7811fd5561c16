//! WordPress (Debian's package) behind the response cache, end to end: one codebase, two
//! tenants whose settings are FastCGI params (`DBHOST`, `DBNAME`, `DBUSER`, `DBPASS`,
//! `WWWROOT`, read by `tests/fixtures/wordpress/wp-config.php`), each with its own
//! database on a private MariaDB, each site installed through the gateway by HTTP. Every
//! PHP script run is logged by an `auto_prepend_file`, so the test sees exactly when PHP
//! ran and when the cache answered.
//!
//! Skipped with a message where MariaDB, WordPress or PHP's mysqli extension is missing
//! (`scripts/ensure-php-fpm.sh --with-wordpress` installs them).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fpm_harness::{Fpm, FpmConfig, Listen, MariaDb, WordPressRoot};
use gateway::config::Config;
use http_body_util::Full;
use support::live::toml_string;
use support::multi_tenant::{request, send_to, send_with_headers, send_within};
use support::{cache_status, is_hit, start_fpm, Reply, Served};

/// Bound for installing one site (a dozen tables created and filled) on a busy machine.
const INSTALL_LIMIT: Duration = Duration::from_secs(120);

/// The cookies that mark a WordPress visitor as logged in, or as someone whose pages
/// differ (commenters, the admin's screen settings).
const BYPASS_COOKIES: &str =
    r#"["wordpress_logged_in_*", "wp-settings-*", "comment_author_*", "wordpress_sec_*"]"#;

/// One tenant's site.
struct Site {
    /// The tenant's name in tenants.toml, also its database and database user.
    tenant: &'static str,
    /// Its host (and `WWWROOT`, `http://<host>`).
    host: &'static str,
    /// Its blog title, which its pages show and the other site's never do.
    title: &'static str,
    /// Its database user's password.
    db_password: &'static str,
}

const A: Site = Site {
    tenant: "blog_a",
    host: "blog-a.test",
    title: "Alpha Orchard Journal",
    db_password: "db-secret-a",
};

const B: Site = Site {
    tenant: "blog_b",
    host: "blog-b.test",
    title: "Bravo Harbour Notes",
    db_password: "db-secret-b",
};

/// PHP-FPM's `auto_prepend_file`: logs every script run, before WordPress starts, to
/// [`RUNS_LOG`] beside it. (PHP-FPM's status page counts a read on a kept-alive
/// connection that ends without a request as accepted, so its `accepted conn` is not an
/// exact count of the requests that ran.)
const RUN_LOGGER: &str = r#"<?php
file_put_contents(__DIR__ . '/php-runs.log',
    ($_SERVER['HTTP_HOST'] ?? '-') . ' ' . ($_SERVER['REQUEST_URI'] ?? '-') . "\n",
    FILE_APPEND | LOCK_EX);
"#;

/// The file [`RUN_LOGGER`] appends to, in the test's directory.
const RUNS_LOG: &str = "php-runs.log";

/// The admin user both sites are installed with.
const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// MariaDB, the WordPress tree, PHP-FPM and the gateway, dropped in reverse.
struct WordPress {
    served: Served,
    _fpm: Fpm,
    _root: WordPressRoot,
    _db: MariaDb,
    dir: tempfile::TempDir,
}

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if let Err(err) = fpm_harness::mariadb_binaries() {
        return Some(err.to_string());
    }
    if let Err(err) = fpm_harness::wordpress_dir() {
        return Some(err.to_string());
    }
    let fpm = match fpm_harness::php_fpm_binary() {
        Ok(fpm) => fpm,
        Err(err) => return Some(err.to_string()),
    };
    let modules = std::process::Command::new(&fpm).arg("-m").output();
    match modules {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("mysqli") => None,
        _ => Some(format!(
            "{} has no mysqli extension (package php-mysql); run \
             scripts/ensure-php-fpm.sh --with-wordpress",
            fpm.display()
        )),
    }
}

impl WordPress {
    /// Everything started and both sites installed.
    async fn start() -> WordPress {
        let (db, root) = tokio::task::spawn_blocking(|| {
            let db = MariaDb::start().expect("MariaDB starts");
            for site in [&A, &B] {
                db.create_database(site.tenant, site.tenant, site.db_password)
                    .expect("tenant database");
            }
            let root = WordPressRoot::build(&fpm_harness::wordpress_config_fixture())
                .expect("WordPress document root");
            (db, root)
        })
        .await
        .expect("setup task");
        let dir = tempfile::tempdir().expect("temp dir");
        let logger = dir.path().join("run-logger.php");
        std::fs::write(&logger, RUN_LOGGER).expect("write the run logger");
        let fpm = start_fpm(
            FpmConfig::new()
                .listen(Listen::Unix)
                .workers(4)
                .php_admin_value("auto_prepend_file", logger.display().to_string()),
        );
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [fastcgi]\nupstream = {upstream}\nroot = {root}\nmax_connections = 4\n\n\
             [cache]\nmemory = \"64MiB\"\n",
            upstream = toml_string(fpm.address().to_upstream_string()),
            root = toml_string(root.path().display()),
        );
        for site in [&A, &B] {
            text.push_str(&format!(
                "\n[tenants.{tenant}]\nhosts = [\"{host}\"]\n\
                 params = {{ DBHOST = {dbhost}, DBNAME = \"{tenant}\", DBUSER = \"{tenant}\", \
                 DBPASS = \"{password}\", WWWROOT = \"http://{host}\" }}\n\n\
                 [tenants.{tenant}.cache]\nenabled = true\ndefault_ttl = \"30s\"\n\
                 bypass_cookies = {BYPASS_COOKIES}\n",
                tenant = site.tenant,
                host = site.host,
                dbhost = toml_string(db.php_host()),
                password = site.db_password,
            ));
        }
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, text).expect("write config");
        let config = Config::load(&path).unwrap_or_else(|err| panic!("test config: {err}"));
        let wp = WordPress {
            served: Served::bind(config).await,
            _fpm: fpm,
            _root: root,
            _db: db,
            dir,
        };
        for site in [&A, &B] {
            wp.install(site).await;
        }
        wp
    }

    /// WordPress's installer, step 2 (the form's answers), as a browser posts it.
    async fn install(&self, site: &Site) {
        let form = form(&[
            ("weblog_title", site.title),
            ("user_name", ADMIN_USER),
            ("admin_password", ADMIN_PASSWORD),
            ("admin_password2", ADMIN_PASSWORD),
            ("pw_weak", "1"),
            ("admin_email", "admin@example.org"),
            ("blog_public", "1"),
        ]);
        let req = request("POST", site.host, "/wp-admin/install.php?step=2")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .unwrap();
        let reply = send_within(self.served.addr, req, INSTALL_LIMIT).await;
        assert_eq!(reply.status, 200, "install {}: {}", site.host, reply.text());
        assert!(
            reply.text().contains("WordPress has been installed"),
            "install {}: {}",
            site.host,
            reply.text()
        );
    }

    /// `GET target` on `site` with `cookies` (a `Cookie` header's value, or none).
    async fn get(&self, site: &Site, target: &str, cookies: Option<&str>) -> Reply {
        let headers: Vec<_> = cookies.map(|value| ("cookie", value)).into_iter().collect();
        send_with_headers(self.served.addr, "GET", site.host, target, &headers).await
    }

    /// Logs the admin in on `site` as a browser does (the login page's test cookie,
    /// then the form) and returns the `Cookie` header value its browser would send.
    async fn log_in(&self, site: &Site) -> String {
        let page = self.get(site, "/wp-login.php", None).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let mut jar = set_cookies(&page);
        assert!(
            jar.iter().any(|(name, _)| name == "wordpress_test_cookie"),
            "the login page sets its test cookie: {:?}",
            page.headers
        );
        let body = form(&[
            ("log", ADMIN_USER),
            ("pwd", ADMIN_PASSWORD),
            ("wp-submit", "Log In"),
            ("testcookie", "1"),
            ("redirect_to", &format!("http://{}/wp-admin/", site.host)),
        ]);
        let req = request("POST", site.host, "/wp-login.php")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", cookie_header(&jar))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let reply = send_to(self.served.addr, req).await;
        assert_eq!(reply.status, 302, "logged in: {}", reply.text());
        jar.extend(set_cookies(&reply));
        assert!(
            jar.iter()
                .any(|(name, _)| name.starts_with("wordpress_logged_in_")),
            "the login sets the logged-in cookie: {:?}",
            reply.headers
        );
        cookie_header(&jar)
    }

    /// The PHP scripts that ran so far, as `host target` lines, in order.
    fn php_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join(RUNS_LOG))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The PHP scripts that ran during `steps` (`host target` lines).
    async fn php_runs<T>(&self, steps: impl std::future::Future<Output = T>) -> (Vec<String>, T) {
        let before = self.php_log().len();
        let out = steps.await;
        let mut ran = self.php_log();
        ran.drain(..before);
        (ran, out)
    }
}

/// `application/x-www-form-urlencoded` of `fields`.
fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `name=value` of each `Set-Cookie` (a cookie deleted, with an expiry in the past,
/// left out).
fn set_cookies(reply: &Reply) -> Vec<(String, String)> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter(|value| !value.contains("=deleted") && !value.contains("Max-Age=0"))
        .filter_map(|value| {
            let pair = value.split(';').next()?;
            let (name, value) = pair.split_once('=')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .filter(|(_, value)| !value.is_empty() && value != "+")
        .collect()
}

/// A `Cookie` header with each cookie of `jar` once (the last value wins).
fn cookie_header(jar: &[(String, String)]) -> String {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (name, value) in jar {
        match seen.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => seen.push((name, value)),
        }
    }
    seen.iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test]
async fn wordpress_anonymous_home_page_is_cached_and_the_logged_in_admin_never_is() {
    if let Some(missing) = missing_prerequisite() {
        eprintln!("SKIPPED wordpress: {missing}");
        return;
    }
    let started = Instant::now();
    let wp = WordPress::start().await;
    let installed = started.elapsed();

    // Anonymous home page of A: PHP once, then the cache.
    let (runs, (first, second, miss, hit)) = wp
        .php_runs(async {
            let at = Instant::now();
            let first = wp.get(&A, "/", None).await;
            let miss = at.elapsed();
            let at = Instant::now();
            let second = wp.get(&A, "/", None).await;
            (first, second, miss, at.elapsed())
        })
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert!(first.text().contains(A.title), "{}", first.text());
    assert!(first.header("set-cookie").is_none(), "{:?}", first.headers);
    assert!(
        cache_status(&first).contains("stored"),
        "WordPress sends no caching header, so default_ttl applies: {}",
        cache_status(&first)
    );
    assert!(is_hit(&second), "{}", cache_status(&second));
    assert_eq!(second.body, first.body);
    assert_eq!(
        runs,
        [format!("{} /", A.host)],
        "the second anonymous request did not run PHP"
    );

    // B, same codebase and path: its own page, never A's.
    for _ in 0..2 {
        let b = wp.get(&B, "/", None).await;
        assert_eq!(b.status, 200);
        assert!(b.text().contains(B.title), "{}", b.text());
        assert!(!b.text().contains(A.title), "B got A's page");
    }

    // The admin of A logs in: the dashboard, twice, each time from PHP.
    let cookies = wp.log_in(&A).await;
    let (runs, pages) = wp
        .php_runs(async {
            let mut pages = Vec::new();
            for _ in 0..2 {
                pages.push(wp.get(&A, "/wp-admin/", Some(&cookies)).await);
            }
            pages
        })
        .await;
    for page in &pages {
        assert_eq!(page.status, 200, "{}", page.text());
        assert!(page.text().contains("Dashboard"), "{}", page.text());
        assert!(page.text().contains("Log Out"));
        assert!(!is_hit(page));
        assert!(
            cache_status(page).contains("fwd=bypass"),
            "{}",
            cache_status(page)
        );
    }
    let dashboard = format!("{} /wp-admin/", A.host);
    assert_eq!(
        runs,
        [dashboard.as_str(), &dashboard],
        "both dashboard requests ran PHP"
    );

    // The admin's view of the home page (with the admin bar) bypasses the cache too ...
    let (runs, admin_home) = wp.php_runs(wp.get(&A, "/", Some(cookies.as_str()))).await;
    assert_eq!(runs, [format!("{} /", A.host)]);
    assert!(
        admin_home.text().contains("Log Out"),
        "{}",
        admin_home.text()
    );
    assert!(!is_hit(&admin_home));

    // ... and never reaches anonymous visitors, who still get the cached anonymous page.
    let anonymous = wp.get(&A, "/", None).await;
    assert!(is_hit(&anonymous), "{}", cache_status(&anonymous));
    assert_eq!(anonymous.body, first.body);
    assert!(!anonymous.text().contains("Log Out"));
    assert!(!anonymous.text().contains("wp-admin-bar"));

    // An anonymous visitor asking for the dashboard is sent to the login page.
    let denied = wp.get(&A, "/wp-admin/", None).await;
    assert_eq!(denied.status, 302, "{}", denied.text());
    let location = denied.header("location").unwrap_or("");
    assert!(location.contains("/wp-login.php"), "{location}");
    assert!(!denied.text().contains("Dashboard"));
    assert!(!is_hit(&denied));

    // B was never touched by A's login.
    let b = wp.get(&B, "/", None).await;
    assert!(is_hit(&b), "{}", cache_status(&b));
    assert!(b.text().contains(B.title) && !b.text().contains("Log Out"));
    eprintln!(
        "wordpress: MariaDB up and 2 sites installed in {installed:?}; home page ({} bytes) \
         from PHP in {miss:?}, from the cache in {hit:?} (debug build)",
        first.body.len()
    );
}
