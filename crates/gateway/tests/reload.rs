//! Hot reload against a real PHP-FPM, with the gateway in-process serving a config file
//! in a temp directory: the file watcher (appends, editor renames, Kubernetes symlink
//! swaps), rejected configs, `Reloader::reload` and SIGHUP, suspension, and reloads
//! under load.
//!
//! Every wait is bounded; latency promises (a new tenant within 1 s) are asserted apart
//! from the generous bounds that only catch hangs.

mod support;

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fpm_harness::{fixtures_dir, Fpm, FpmConfig};
use gateway::config::Config;
use gateway::reload::ReloadOutcome;
use http::StatusCode;
use support::live::{get, toml_string, write_atomically, Conn, LiveGateway, Scratch};
use support::{eventually, start_fpm, within, SOON};

const HELLO: &str = "Hello, World!";

/// Two tenants every test keeps serving; each says who it is in `TENANT_ID`.
const STAYING_TENANTS: &str = r#"
[tenants.stay1]
hosts = ["stay1.test"]
params = { TENANT_ID = "stay1" }

[tenants.stay2]
hosts = ["stay2.test", "*.stay2.test"]
params = { TENANT_ID = "stay2" }
"#;

/// A config on `fpm` with the app at `root`; `server` lines go under `[server]`, and
/// `tenants` follows the fixed tables.
fn config_text(fpm: &Fpm, root: &Path, server: &str, tenants: &str) -> String {
    format!(
        "# Written by the reload tests.\n\
         [server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n\
         [fastcgi]\nupstream = {}\nroot = {}\nmax_connections = 4\n{tenants}",
        toml_string(fpm.address().to_upstream_string()),
        toml_string(root.display()),
    )
}

/// The line `needle` starts on in `text`, counting from 1.
fn line_of(text: &str, needle: &str) -> usize {
    let offset = text.find(needle).expect("needle in text");
    text[..offset].matches('\n').count() + 1
}

/// GETs until the answer is `status`, or panics after [`SOON`].
async fn wait_for_status(conn: &mut Conn, host: &str, path: &str, status: StatusCode) {
    let deadline = Instant::now() + SOON;
    loop {
        let reply = conn.get(host, path).await.expect("the gateway answers");
        if reply.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host}{path} still answers {} after {SOON:?}, not {status}",
            reply.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_appended_to_the_file_is_served_within_a_second() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let scratch = Scratch::new();
    let text = config_text(&fpm, &fixtures_dir(), "", STAYING_TENANTS);
    let gw = scratch.serve_watched(&text).await;
    let mut conn = Conn::new(gw.addr);
    let before = conn.get("new.test", "/hello.php").await.unwrap();
    assert_eq!(before.status, StatusCode::NOT_FOUND);

    // Appended in place, as `cat >>` or an operator's script would.
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(&scratch.config)
        .unwrap();
    file.write_all(b"\n[tenants.new]\nhosts = [\"new.test\"]\nparams = { TENANT_ID = \"new\" }\n")
        .unwrap();
    drop(file);
    let appended = Instant::now();
    wait_for_status(&mut conn, "new.test", "/hello.php", StatusCode::OK).await;
    let took = appended.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the new tenant took {took:?} to be served"
    );
    let reply = conn
        .get("new.test", "/params.php?only=TENANT_ID")
        .await
        .unwrap();
    assert_eq!(reply.text(), "new");
    eprintln!("new tenant served {took:?} after the append");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_keeps_the_old_one_serving_and_says_where() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let scratch = Scratch::new();
    let good = config_text(&fpm, &fixtures_dir(), "", STAYING_TENANTS);
    let gw = scratch.serve_watched(&good).await;
    let mut conn = Conn::new(gw.addr);
    let stats = gw.reloader.stats.clone();
    let path = scratch.config.display().to_string();

    // A TOML syntax error: an unclosed table header.
    let failures = stats.failures();
    let syntax = format!("{good}\n[tenants.broken\nhosts = [\"broken.test\"]\n");
    write_atomically(&scratch.config, &syntax);
    let place = format!("{path}:{}:", line_of(&syntax, "[tenants.broken"));
    assert!(
        eventually(SOON, || gw
            .reloader
            .last_error()
            .is_some_and(|e| e.contains(&place)))
        .await,
        "expected an error at {place}, got {:?}",
        gw.reloader.last_error()
    );
    assert!(stats.failures() > failures, "the failure is counted");
    assert!(!stats.last_succeeded());
    let reply = conn.get("stay1.test", "/hello.php").await.unwrap();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, HELLO)
    );

    // Valid TOML, invalid config: a host another tenant already serves.
    let failures = stats.failures();
    let duplicate = format!("{good}\n[tenants.thief]\nhosts = [\"stay1.test\"]\n");
    write_atomically(&scratch.config, &duplicate);
    // The thief's `hosts`, the last line.
    let place = format!("{path}:{}:", duplicate.lines().count());
    assert!(
        eventually(SOON, || gw
            .reloader
            .last_error()
            .is_some_and(|e| e.contains("duplicate host")))
        .await,
        "expected a duplicate host error, got {:?}",
        gw.reloader.last_error()
    );
    let error = gw.reloader.last_error().unwrap();
    assert!(error.contains(&place), "expected {place} in {error}");
    assert!(
        error.contains("\"stay1\" and \"thief\""),
        "names both tenants: {error}"
    );
    assert!(stats.failures() > failures, "the failure is counted");
    assert!(!gw.has_tenant("thief"));
    let reply = conn
        .get("stay1.test", "/params.php?only=TENANT_ID")
        .await
        .unwrap();
    assert_eq!(reply.text(), "stay1", "the old owner keeps its host");

    // Fixing the file clears the error.
    let fixed = format!("{good}\n[tenants.fixed]\nhosts = [\"fixed.test\"]\n");
    write_atomically(&scratch.config, &fixed);
    wait_for_status(&mut conn, "fixed.test", "/hello.php", StatusCode::OK).await;
    assert_eq!(gw.reloader.last_error(), None);
    assert!(stats.last_succeeded());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_style_rename_over_the_file_is_picked_up() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let scratch = Scratch::new();
    let text = config_text(&fpm, &fixtures_dir(), "", STAYING_TENANTS);
    let gw = scratch.serve_watched(&text).await;

    // Like vim or VS Code: a hidden sibling, fsynced, renamed over the original.
    let swap = scratch.path(".tenants.toml.swp");
    fs::write(
        &swap,
        format!("{text}\n[tenants.edited]\nhosts = [\"edited.test\"]\n"),
    )
    .unwrap();
    fs::File::open(&swap).unwrap().sync_all().unwrap();
    fs::rename(&swap, &scratch.config).unwrap();

    let mut conn = Conn::new(gw.addr);
    wait_for_status(&mut conn, "edited.test", "/hello.php", StatusCode::OK).await;
    gw.shutdown().await;
}

/// A Kubernetes ConfigMap volume: `tenants.toml -> ..data/tenants.toml`,
/// `..data -> ..vN`; an update writes `..vN+1`, points `..data_tmp` at it, and renames
/// `..data_tmp` over `..data`.
struct ConfigMapVolume<'a> {
    dir: &'a Path,
    version: AtomicU64,
}

impl<'a> ConfigMapVolume<'a> {
    fn create(dir: &'a Path, text: &str) -> ConfigMapVolume<'a> {
        let volume = ConfigMapVolume {
            dir,
            version: AtomicU64::new(0),
        };
        volume.update(text);
        std::os::unix::fs::symlink("..data/tenants.toml", dir.join("tenants.toml")).unwrap();
        volume
    }

    /// Publishes `text` as the next version, as the kubelet does, and removes the old one.
    fn update(&self, text: &str) {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let name = format!("..v{version}");
        fs::create_dir(self.dir.join(&name)).unwrap();
        fs::write(self.dir.join(&name).join("tenants.toml"), text).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if version > 1 {
            fs::remove_dir_all(self.dir.join(format!("..v{}", version - 1))).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_symlink_swap_is_picked_up() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let scratch = Scratch::new();
    let text = config_text(&fpm, &fixtures_dir(), "", STAYING_TENANTS);
    let volume = ConfigMapVolume::create(scratch.dir.path(), &text);
    assert!(fs::symlink_metadata(&scratch.config)
        .unwrap()
        .file_type()
        .is_symlink());
    let gw = LiveGateway::start_watched(&scratch.config, |t| volume.update(t)).await;

    volume.update(&format!(
        "{text}\n[tenants.mapped]\nhosts = [\"mapped.test\"]\n"
    ));
    let mut conn = Conn::new(gw.addr);
    wait_for_status(&mut conn, "mapped.test", "/hello.php", StatusCode::OK).await;
    // And again: the watch follows the swapped link, not the first version's directory.
    volume.update(&text);
    wait_for_status(
        &mut conn,
        "mapped.test",
        "/hello.php",
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(
        fs::symlink_metadata(&scratch.config)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the gateway never writes the mount"
    );
    gw.shutdown().await;
}

/// The suspended page shown by [`suspension_config`], and `Retry-After`.
const RETRY_AFTER: &str = "7";

/// An app root with `hello.php` and `count.php`, which appends a byte to the file named by the tenant's
/// `COUNT_FILE` param, so a test can tell whether PHP-FPM ran at all.
fn counting_app(scratch: &Scratch) -> std::path::PathBuf {
    let root = scratch.path("app");
    fs::create_dir(&root).unwrap();
    fs::copy(fixtures_dir().join("hello.php"), root.join("hello.php")).unwrap();
    fs::write(
        root.join("count.php"),
        "<?php\nfile_put_contents($_SERVER['COUNT_FILE'], 'x', FILE_APPEND | LOCK_EX);\necho 'counted';\n",
    )
    .unwrap();
    root
}

fn suspension_config(fpm: &Fpm, scratch: &Scratch, root: &Path, enabled: bool) -> String {
    let tenants = format!(
        "{STAYING_TENANTS}\n[tenants.metered]\nhosts = [\"metered.test\"]\n\
         params = {{ COUNT_FILE = {} }}\nenabled = {enabled}\n",
        toml_string(scratch.path("count.log").display())
    );
    config_text(
        fpm,
        root,
        &format!("suspended_page = \"suspended.html\"\nretry_after = \"{RETRY_AFTER}s\""),
        &tenants,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_suspended_in_the_file_gets_503_without_reaching_php_fpm() {
    let fpm = start_fpm(FpmConfig::new().workers(2));
    let scratch = Scratch::new();
    let root = counting_app(&scratch);
    let page = "<h1>Closed for maintenance</h1>\n";
    fs::write(scratch.path("suspended.html"), page).unwrap();
    let gw = scratch
        .serve_watched(&suspension_config(&fpm, &scratch, &root, true))
        .await;
    let count_file = scratch.path("count.log");
    let count = || fs::metadata(&count_file).map_or(0, |m| m.len());
    let mut conn = Conn::new(gw.addr);
    let reply = conn.get("metered.test", "/count.php").await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(count(), 1);

    write_atomically(
        &scratch.config,
        &suspension_config(&fpm, &scratch, &root, false),
    );
    wait_for_status(
        &mut conn,
        "metered.test",
        "/count.php",
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let counted = count();
    for _ in 0..5 {
        let reply = conn.get("metered.test", "/count.php").await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.header("retry-after"), Some(RETRY_AFTER));
        assert_eq!(reply.text(), page, "the configured page");
    }
    assert_eq!(count(), counted, "PHP-FPM ran for a suspended tenant");
    let other = conn.get("stay1.test", "/hello.php").await.unwrap();
    assert_eq!(other.status, StatusCode::OK, "others are not suspended");

    write_atomically(
        &scratch.config,
        &suspension_config(&fpm, &scratch, &root, true),
    );
    wait_for_status(&mut conn, "metered.test", "/count.php", StatusCode::OK).await;
    assert!(count() > counted, "resumed requests reach PHP-FPM again");
    gw.shutdown().await;
}

/// `SIGHUP` and `Reloader::reload` re-read everything a config names, not only the file
/// itself: an edited suspended page (which the watcher does not watch) is served after
/// either. The page edit also keeps the two paths apart from the file watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_api_and_sighup_pick_up_an_edited_suspended_page() {
    let fpm = start_fpm(FpmConfig::new().workers(1));
    let scratch = Scratch::new();
    let root = counting_app(&scratch);
    let page = scratch.path("suspended.html");
    fs::write(&page, "page v1").unwrap();
    let gw = scratch
        .serve_watched(&suspension_config(&fpm, &scratch, &root, false))
        .await;
    let mut conn = Conn::new(gw.addr);
    assert_eq!(
        conn.get("metered.test", "/").await.unwrap().text(),
        "page v1"
    );

    fs::write(&page, "page v2").unwrap();
    let outcome = within(SOON, "reload", gw.reloader.reload()).await;
    assert_eq!(outcome.expect("reload succeeds"), ReloadOutcome::Applied);
    assert_eq!(
        conn.get("metered.test", "/").await.unwrap().text(),
        "page v2"
    );
    let outcome = within(SOON, "reload", gw.reloader.reload()).await;
    assert_eq!(outcome.expect("reload succeeds"), ReloadOutcome::Unchanged);

    // The signal goes to this whole test process. That is safe once the gateway's
    // watcher has run (`start_watched` proved it has): tokio installed a SIGHUP handler
    // there and never uninstalls it, so the default action (terminate) is gone for good.
    // Other gateways in this binary just reload an unchanged file.
    fs::write(&page, "page v3").unwrap();
    // SAFETY: kill(2) on our own pid with a signal that has a handler installed.
    let sent = unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    assert_eq!(sent, 0, "kill(getpid(), SIGHUP)");
    let mut served = String::new();
    let deadline = Instant::now() + SOON;
    while Instant::now() < deadline {
        served = conn.get("metered.test", "/").await.unwrap().text();
        if served == "page v3" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(served, "page v3", "SIGHUP reloaded the page");

    // A page that cannot be read is a rejected reload, naming the page; the old one stays.
    fs::remove_file(&page).unwrap();
    let err = within(SOON, "reload", gw.reloader.reload())
        .await
        .expect_err("a missing suspended page is rejected");
    assert!(err.to_string().contains("suspended.html"), "{err}");
    assert_eq!(
        conn.get("metered.test", "/").await.unwrap().text(),
        "page v3"
    );
    gw.shutdown().await;
}

/// The whole file, generation `generation` of the churn: the staying tenants, a
/// `marker` tenant saying which generation it is, and on even generations a short-lived
/// tenant that the next generation removes.
fn churn_config(fpm: &Fpm, generation: usize) -> String {
    let mut tenants = format!(
        "{STAYING_TENANTS}\n[tenants.marker]\nhosts = [\"marker.test\"]\n\
         params = {{ GENERATION = \"{generation}\" }}\n"
    );
    if generation % 2 == 0 {
        tenants.push_str(&format!(
            "\n[tenants.churn-{generation}]\nhosts = [\"churn-{generation}.test\", \"*.churn-{generation}.test\"]\n\
             params = {{ TENANT_ID = \"churn-{generation}\" }}\n"
        ));
    }
    config_text(fpm, &fixtures_dir(), "", &tenants)
}

/// What the clients of the load test saw.
#[derive(Default)]
struct Tally {
    successes: AtomicU64,
    failures: AtomicU64,
    /// The first few failures, for the assertion message.
    examples: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.examples.lock().unwrap();
        if examples.len() < 5 {
            examples.push(what);
        }
    }
}

const CLIENTS: usize = 32;
const REWRITES: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_rewrites_under_load_fail_no_request_of_the_tenants_that_stay() {
    let fpm = start_fpm(FpmConfig::new().workers(4));
    let scratch = Scratch::new();
    let gw = scratch.serve_watched(&churn_config(&fpm, 0)).await;
    let successes_before = gw.reloader.stats.successes();

    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (tally, done, addr) = (tally.clone(), done.clone(), gw.addr);
            tokio::spawn(async move {
                // One keep-alive connection per client, kept across every reload.
                let mut conn = Conn::new(addr);
                let mut sent = 0usize;
                while !done.load(Ordering::Relaxed) {
                    let host = if (client + sent) % 2 == 0 {
                        "stay1.test"
                    } else {
                        "www.stay2.test"
                    };
                    sent += 1;
                    match conn.get(host, "/hello.php").await {
                        Ok(reply) if reply.status == StatusCode::OK && reply.body == HELLO => {
                            tally.successes.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(reply) => {
                            tally.fail(format!("{host}: {} {:?}", reply.status, reply.text()))
                        }
                        Err(err) => tally.fail(format!("{host}: {err}")),
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    for generation in 1..=REWRITES {
        write_atomically(&scratch.config, &churn_config(&fpm, generation));
        // 20-50 ms apart, varied so writes land at every phase of the 50 ms debounce.
        let pause = 20 + (generation * 13) % 31;
        tokio::time::sleep(Duration::from_millis(pause as u64)).await;
    }
    let rewriting = started.elapsed();
    // Let the last reload land while the clients still run.
    let last = Config::load(&scratch.config).unwrap();
    let caught_up = eventually(SOON, || *gw.state.load().config == last).await;
    done.store(true, Ordering::Relaxed);
    for client in clients {
        within(SOON, "a client to finish", client)
            .await
            .expect("client task");
    }

    let successes = tally.successes.load(Ordering::Relaxed);
    let failures = tally.failures.load(Ordering::Relaxed);
    let reloads = gw.reloader.stats.successes() - successes_before;
    eprintln!(
        "{REWRITES} rewrites in {rewriting:?}: {reloads} reloads applied, \
         {successes} requests ok, {failures} failed"
    );
    assert_eq!(
        failures,
        0,
        "requests of staying tenants failed, e.g. {:?}",
        tally.examples.lock().unwrap()
    );
    assert!(
        successes >= 300,
        "only {successes} requests in {rewriting:?}"
    );
    assert!(caught_up, "the last written config is not the one served");
    assert!(reloads >= 10, "only {reloads} reloads applied");
    assert_eq!(gw.reloader.last_error(), None);

    // Served, not just stored: the last generation's marker, the previous one's churn
    // tenant gone.
    let marker = get(gw.addr, "marker.test", "/params.php?only=GENERATION").await;
    assert_eq!(marker.text(), REWRITES.to_string());
    let removed = get(gw.addr, "churn-98.test", "/hello.php").await;
    assert_eq!(removed.status, StatusCode::NOT_FOUND);
    let added = get(gw.addr, "churn-100.test", "/params.php?only=TENANT_ID").await;
    assert_eq!(added.text(), "churn-100");
    gw.shutdown().await;
}
