//! The `gateway` binary's commands other than `serve`, run as an operator would: the real
//! executable on a config file in a temp directory, judged by exit status, stdout and
//! stderr, and by what it leaves in the file.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use gateway::usage::TenantUsage;
use gateway::usage_store::UsageStore;

/// A config with comments the edits must keep, a secret param, a suspended tenant and a
/// usage database. `root = "app"` is created next to it; the upstream is never contacted.
const CONFIG: &str = r#"# Tenants of the school platform. Edited by hand and by `gateway tenants`.
[server]
listen = "127.0.0.1:8080"

[fastcgi]
upstream = "127.0.0.1:9000"   # the shared pool
root = "app"

[usage]
database = "usage.db"

# Primary school, two hostnames.
[tenants.centro1]
hosts = ["centro1.example.org", "*.centro1.example.org"]
params = { DBHOST = "10.0.0.1", DBPASS = "hunter2-centro1" }

[tenants.centro2]
hosts = ["centro2.example.org"]
params = { DBHOST = "10.0.0.2" }
enabled = false
"#;

/// Appended to `CONFIG`: line 23, the second host of `centro3`, repeats centro1's.
const DUPLICATE_HOST: &str =
    "\n[tenants.centro3]\nhosts = [\"centro3.example.org\", \"centro1.example.org\"]\n";

/// A scratch directory holding `tenants.toml` (with `text`) and the `app/` root.
struct Scratch {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Scratch {
    fn new(text: &str) -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("app")).expect("app dir");
        let config = dir.path().join("tenants.toml");
        fs::write(&config, text).expect("write config");
        Scratch { dir, config }
    }

    fn text(&self) -> String {
        fs::read_to_string(&self.config).expect("read config")
    }

    /// Runs `gateway ARGS... --config tenants.toml`.
    fn run(&self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
        command.args(args).arg("--config").arg(&self.config);
        Run::of(&mut command)
    }

    fn config_value(&self) -> toml::Table {
        self.text().parse().expect("config stays TOML")
    }
}

/// What a run of the binary did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(command: &mut Command) -> Run {
        // Logs are not part of any command's output; keep stderr to the error line.
        let Output {
            status,
            stdout,
            stderr,
        } = command
            .env("RUST_LOG", "off")
            .output()
            .expect("run the gateway binary");
        Run {
            code: status.code(),
            stdout: String::from_utf8(stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
        }
    }

    #[track_caller]
    fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        assert_eq!(self.stderr, "");
        self.stdout
    }

    /// Asserts a failure reported as one `error: ...` line on stderr; returns that line.
    #[track_caller]
    fn failed(self) -> String {
        assert_ne!(self.code, Some(0), "stdout: {}", self.stdout);
        assert!(self.code.is_some(), "killed by a signal");
        assert_eq!(self.stdout, "", "a failure prints nothing on stdout");
        assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
        self.stderr
    }
}

fn tenant<'a>(config: &'a toml::Table, name: &str) -> Option<&'a toml::Table> {
    config["tenants"].as_table()?.get(name)?.as_table()
}

#[test]
fn check_accepts_a_valid_config_and_describes_it() {
    let scratch = Scratch::new(CONFIG);
    let out = scratch.run(&["check"]).ok();
    assert!(out.contains("is valid"), "{out}");
    assert!(out.contains("tenants:  2"), "{out}");
    assert!(
        out.contains("centro2 (suspended): centro2.example.org"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
}

#[test]
fn check_prints_each_tenants_tls_mode_and_that_wildcards_need_a_file_certificate() {
    let tls = r#"
[tls]
acme_directory = "https://127.0.0.1:14000/dir"
state_dir = "tls-state"

[tenants.centro3]
hosts = ["centro3.example.org", "*.centro3.example.org"]
tls = { cert = "centro3.pem", key = "centro3.key" }

[tenants.centro4]
hosts = ["centro4.example.org", "*.centro4.example.org"]
tls = "off"
"#;
    // `centro1` (a wildcard host) would be refused with ACME: it takes no certificate.
    let config = format!("{CONFIG}{tls}")
        .replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\ntls_listen = \"127.0.0.1:8443\"",
        )
        .replace(
            "params = { DBHOST = \"10.0.0.1\", DBPASS = \"hunter2-centro1\" }",
            "params = { DBHOST = \"10.0.0.1\", DBPASS = \"hunter2-centro1\" }\ntls = \"off\"",
        )
        .replace(
            "params = { DBHOST = \"10.0.0.2\" }",
            "params = { DBHOST = \"10.0.0.2\" }\ntls = \"acme\"",
        );
    let scratch = Scratch::new(&config);
    let made = rcgen::generate_simple_self_signed(vec![
        "centro3.example.org".to_owned(),
        "*.centro3.example.org".to_owned(),
    ])
    .expect("a test certificate");
    fs::write(scratch.dir.path().join("centro3.pem"), made.cert.pem()).expect("write cert");
    fs::write(
        scratch.dir.path().join("centro3.key"),
        made.signing_key.serialize_pem(),
    )
    .expect("write key");

    let out = scratch.run(&["check"]).ok();
    assert!(out.contains("https:    127.0.0.1:8443\n"), "{out}");
    assert!(
        out.contains("acme:     https://127.0.0.1:14000/dir (tls-alpn-01; state in "),
        "{out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    let tls_of = |tenant: &str| -> &str {
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("  {tenant}")))
            .unwrap_or_else(|| panic!("{tenant} not listed in {out}"));
        lines[at + 1]
    };
    assert_eq!(
        tls_of("centro1"),
        "    tls: off; wildcard hosts (*.centro1.example.org) need a file certificate \
         (tls = { cert, key }): ACME here covers exact hosts only"
    );
    assert_eq!(tls_of("centro2"), "    tls: acme for centro2.example.org");
    assert_eq!(
        tls_of("centro3"),
        "    tls: file centro3.pem + centro3.key for centro3.example.org, *.centro3.example.org"
    );
    assert!(
        tls_of("centro4").starts_with("    tls: off; wildcard hosts (*.centro4.example.org)"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");

    // Without HTTPS listeners, check says so; the modes are still shown.
    let scratch = Scratch::new(CONFIG);
    let out = scratch.run(&["check"]).ok();
    assert!(
        out.contains("https:    none (no [server] tls_listen)"),
        "{out}"
    );
    assert!(
        out.contains("    tls: off; wildcard hosts (*.centro1.example.org)"),
        "{out}"
    );
    assert!(
        out.contains("  centro2 (suspended): centro2.example.org\n    tls: off\n"),
        "{out}"
    );
}

#[test]
fn check_lists_upstreams_and_rejects_a_tenant_naming_an_unknown_one() {
    let upstreams = "\n[upstreams.big]\nservers = [{ address = \"10.0.0.21:9000\", max_connections = 32 }, { address = \"unix:/run/php/fpm.sock\", max_connections = 4, weight = 2, backup = true }]\n";
    let scratch = Scratch::new(&format!("{CONFIG}{upstreams}"));
    let out = scratch.run(&["check"]).ok();
    assert!(
        out.contains(
            "upstream big: 10.0.0.21:9000 (32), unix:/run/php/fpm.sock (4, weight 2, backup)"
        ),
        "{out}"
    );
    let scratch = Scratch::new(&format!(
        "{CONFIG}{upstreams}\n[tenants.centro9]\nhosts = [\"centro9.example.org\"]\nupstream = \"huge\"\n"
    ));
    let err = scratch.run(&["check"]).failed();
    assert!(
        err.contains("tenant \"centro9\"")
            && err.contains("no [upstreams.huge] table (upstreams defined: big)"),
        "{err}"
    );
}

#[test]
fn check_rejects_a_duplicate_host_naming_file_line_and_tenants() {
    let scratch = Scratch::new(&format!("{CONFIG}{DUPLICATE_HOST}"));
    let err = scratch.run(&["check"]).failed();
    let place = format!("{}:23:", scratch.config.display());
    assert!(err.contains(&place), "expected {place} in {err}");
    assert!(
        err.contains(
            "duplicate host \"centro1.example.org\" in tenants \"centro1\" and \"centro3\""
        ),
        "{err}"
    );
}

#[test]
fn check_rejects_a_syntax_error_naming_file_and_line() {
    let scratch = Scratch::new(&CONFIG.replace("enabled = false", "enabled = flase"));
    let err = scratch.run(&["check"]).failed();
    let place = format!("{}:20:", scratch.config.display());
    assert!(err.contains(&place), "expected {place} in {err}");
    // The reason is the TOML parser's, worded by it; there must be one after the place.
    let reason = err.split_once(&place).unwrap().1;
    let reason = reason
        .split_once(": ")
        .map_or("", |(_column, reason)| reason);
    assert!(!reason.trim().is_empty(), "no reason in {err}");
}

#[test]
fn check_of_a_missing_file_fails_and_names_it() {
    let scratch = Scratch::new(CONFIG);
    fs::remove_file(&scratch.config).unwrap();
    let err = scratch.run(&["check"]).failed();
    assert!(err.contains("tenants.toml"), "{err}");
}

#[test]
fn tenants_list_prints_a_table_and_json() {
    let scratch = Scratch::new(CONFIG);
    let table = scratch.run(&["tenants", "list"]).ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(lines[1].starts_with("centro1  enabled"), "{table}");
    assert!(lines[2].starts_with("centro2  suspended"), "{table}");

    let json = scratch.run(&["tenants", "list", "--format", "json"]).ok();
    let json: serde_json::Value = serde_json::from_str(&json).expect("list --format json");
    let names: Vec<&str> = json
        .as_array()
        .expect("an array")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["centro1", "centro2"]);
    assert_eq!(json[0]["hosts"][1], "*.centro1.example.org");
    assert_eq!(json[1]["enabled"], false);
}

#[test]
fn tenants_show_masks_the_database_password() {
    let scratch = Scratch::new(CONFIG);
    let text = scratch.run(&["tenants", "show", "centro1"]).ok();
    assert!(text.contains("DBPASS = ***"), "{text}");
    assert!(text.contains("DBHOST = \"10.0.0.1\""), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    let json = scratch
        .run(&["tenants", "show", "centro1", "--format", "json"])
        .ok();
    assert!(!json.contains("hunter2"), "{json}");
    let json: serde_json::Value = serde_json::from_str(&json).expect("show --format json");
    assert_eq!(json["params"]["DBPASS"], "***");

    let err = scratch.run(&["tenants", "show", "nobody"]).failed();
    assert!(err.contains("no tenant \"nobody\""), "{err}");
}

#[test]
fn tenants_add_appends_a_tenant_and_keeps_the_comments() {
    let scratch = Scratch::new(CONFIG);
    let out = scratch
        .run(&[
            "tenants",
            "add",
            "centro3",
            "--host",
            "centro3.example.org",
            "--host",
            "*.centro3.example.org",
            "--param",
            "DBHOST=10.0.0.3",
            "--param",
            "DBPASS=s3cret=with=equals",
            "--max-concurrency",
            "4",
        ])
        .ok();
    assert!(out.starts_with("added tenant \"centro3\""), "{out}");
    assert!(!out.contains("s3cret"), "{out}");

    let text = scratch.text();
    assert!(
        text.starts_with(CONFIG),
        "the old text, comments included, is kept:\n{text}"
    );
    let config = scratch.config_value();
    let added = tenant(&config, "centro3").expect("centro3 written");
    assert_eq!(
        added["params"]["DBPASS"].as_str(),
        Some("s3cret=with=equals")
    );
    assert_eq!(added["max_concurrency"].as_integer(), Some(4));

    let list = scratch.run(&["tenants", "list"]).ok();
    assert!(list.contains("centro3  enabled"), "{list}");
    scratch.run(&["check"]).ok();
}

#[test]
fn tenants_add_disabled_writes_a_suspended_tenant() {
    let scratch = Scratch::new(CONFIG);
    scratch
        .run(&[
            "tenants",
            "add",
            "later",
            "--host",
            "later.example.org",
            "--disabled",
        ])
        .ok();
    let config = scratch.config_value();
    assert_eq!(
        tenant(&config, "later").unwrap()["enabled"].as_bool(),
        Some(false)
    );
}

#[test]
fn tenants_add_refuses_a_host_another_tenant_serves_and_leaves_the_file() {
    let scratch = Scratch::new(CONFIG);
    let err = scratch
        .run(&["tenants", "add", "thief", "--host", "centro1.example.org"])
        .failed();
    assert!(
        err.contains("duplicate host \"centro1.example.org\""),
        "{err}"
    );
    assert_eq!(scratch.text(), CONFIG, "a refused edit writes nothing");

    let err = scratch
        .run(&["tenants", "add", "centro1", "--host", "new.example.org"])
        .failed();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(scratch.text(), CONFIG);
}

#[test]
fn tenants_add_sets_the_upstream_and_private_root_and_refuses_an_unknown_upstream() {
    let text = format!(
        "{CONFIG}\n[upstreams.big]\nservers = [{{ address = \"127.0.0.1:9001\", max_connections = 8 }}]\n"
    );
    let scratch = Scratch::new(&text);
    scratch
        .run(&[
            "tenants",
            "add",
            "heavy",
            "--host",
            "heavy.example.org",
            "--upstream",
            "big",
            "--private-root",
            "/srv/moodledata/{tenant}",
        ])
        .ok();
    let config = scratch.config_value();
    let added = tenant(&config, "heavy").expect("heavy written");
    assert_eq!(added["upstream"].as_str(), Some("big"));
    assert_eq!(
        added["private_root"].as_str(),
        Some("/srv/moodledata/{tenant}")
    );
    let show = scratch.run(&["tenants", "show", "heavy"]).ok();
    assert!(show.contains("upstream:        big"), "{show}");
    assert!(
        show.contains("private_root:    /srv/moodledata/heavy"),
        "{show}"
    );

    let before = scratch.text();
    let err = scratch
        .run(&[
            "tenants",
            "add",
            "lost",
            "--host",
            "lost.example.org",
            "--upstream",
            "nowhere",
        ])
        .failed();
    assert!(
        err.contains("nowhere"),
        "the error names the upstream: {err}"
    );
    assert_eq!(scratch.text(), before, "a refused edit writes nothing");
}

#[test]
fn tenants_add_rejects_a_param_without_a_name_without_echoing_it() {
    let scratch = Scratch::new(CONFIG);
    let err = scratch
        .run(&[
            "tenants",
            "add",
            "x",
            "--host",
            "x.example.org",
            "--param",
            "hunter2",
        ])
        .failed();
    assert!(err.contains("--param #1: expected NAME=VALUE"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert_eq!(scratch.text(), CONFIG);
}

#[test]
fn tenants_remove_deletes_the_tenant() {
    let scratch = Scratch::new(CONFIG);
    let out = scratch.run(&["tenants", "remove", "centro2"]).ok();
    assert!(out.starts_with("removed tenant \"centro2\""), "{out}");
    let config = scratch.config_value();
    assert!(tenant(&config, "centro2").is_none());
    assert!(tenant(&config, "centro1").is_some());
    assert!(scratch.text().contains("# Primary school, two hostnames."));

    let err = scratch.run(&["tenants", "remove", "centro2"]).failed();
    assert!(err.contains("no tenant \"centro2\""), "{err}");
}

#[test]
fn tenants_suspend_and_resume_flip_enabled() {
    let scratch = Scratch::new(CONFIG);
    let enabled = |name: &str| {
        tenant(&scratch.config_value(), name)
            .unwrap()
            .get("enabled")
            .is_none_or(|v| v.as_bool().unwrap())
    };
    scratch.run(&["tenants", "suspend", "centro1"]).ok();
    assert!(!enabled("centro1"));
    scratch.run(&["tenants", "resume", "centro2"]).ok();
    assert!(enabled("centro2"));
    scratch.run(&["tenants", "resume", "centro1"]).ok();
    assert!(enabled("centro1"));
    let again = scratch.run(&["tenants", "resume", "centro1"]).ok();
    assert!(again.contains("already enabled"), "{again}");
    assert!(scratch
        .text()
        .starts_with("# Tenants of the school platform."));

    let err = scratch.run(&["tenants", "suspend", "nobody"]).failed();
    assert!(err.contains("no tenant \"nobody\""), "{err}");
}

#[test]
fn if_match_is_refused_for_a_tenant_in_the_file_and_leaves_it() {
    let scratch = Scratch::new(CONFIG);
    for action in ["suspend", "remove"] {
        let err = scratch
            .run(&["tenants", action, "centro1", "--if-match", "3"])
            .failed();
        assert!(
            err.contains("--if-match names a fleet registry version"),
            "{err}"
        );
    }
    assert_eq!(scratch.text(), CONFIG);
}

/// 2024-05-01T00:00:00Z.
const MAY_1: i64 = 1_714_521_600;
const DAY: i64 = 86_400;

fn usage(requests: u64, status_4xx: u64) -> TenantUsage {
    TenantUsage {
        requests,
        fpm_time_us: requests * 20_000,
        bytes_in: requests * 10,
        bytes_out: requests * 100,
        status_2xx: requests - status_4xx,
        status_4xx,
        ..TenantUsage::default()
    }
}

/// Writes a usage database as the gateway's flusher would: centro1 on May 1 and 2,
/// centro2 on May 1 only.
fn prepare_usage_db(dir: &Path) {
    let store = UsageStore::open(dir.join("usage.db")).expect("create usage.db");
    let counts = |entries: &[(&str, TenantUsage)]| -> HashMap<Arc<str>, TenantUsage> {
        entries.iter().map(|(t, u)| (Arc::from(*t), *u)).collect()
    };
    store
        .flush(
            MAY_1 + 10 * 3600,
            &counts(&[("centro1", usage(5, 1)), ("centro2", usage(2, 0))]),
        )
        .unwrap();
    store
        .flush(MAY_1 + DAY + 3600, &counts(&[("centro1", usage(3, 0))]))
        .unwrap();
}

#[test]
fn usage_reports_the_database_as_table_json_and_csv() {
    let scratch = Scratch::new(CONFIG);
    prepare_usage_db(scratch.dir.path());

    let table = scratch.run(&["usage"]).ok();
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0][..3],
        ["TENANT", "REQUESTS", "FPM_SECONDS"],
        "{table}"
    );
    assert_eq!(rows[1][..3], ["centro1", "8", "0.160"], "{table}");
    assert_eq!(rows[2][..2], ["centro2", "2"], "{table}");
    assert_eq!(rows[3][..2], ["TOTAL", "10"], "{table}");

    let json = scratch.run(&["usage", "--format", "json"]).ok();
    let json: serde_json::Value = serde_json::from_str(&json).expect("usage --format json");
    assert_eq!(json[0]["tenant"], "centro1");
    assert_eq!(json[0]["requests"], 8);
    assert_eq!(json[0]["status_4xx"], 1);
    assert_eq!(json[0]["bytes_out"], 800);
    assert_eq!(json[1]["requests"], 2);

    let csv = scratch
        .run(&["usage", "--format", "csv", "--tenant", "centro2"])
        .ok();
    assert_eq!(
        csv,
        "tenant,requests,fpm_time_us,bytes_in,bytes_out,status_1xx,status_2xx,status_3xx,status_4xx,status_5xx,cache_hits,cache_stale,cache_misses,cache_bytes_out\n\
         centro2,2,40000,20,200,0,2,0,0,0,0,0,0,0\n"
    );
}

#[test]
fn usage_since_leaves_out_earlier_hours() {
    let scratch = Scratch::new(CONFIG);
    prepare_usage_db(scratch.dir.path());
    let csv = |since: &str| {
        scratch
            .run(&["usage", "--format", "csv", "--since", since])
            .ok()
    };
    let may_2 = csv("2024-05-02");
    assert_eq!(may_2.lines().count(), 2, "{may_2}");
    assert!(may_2.contains("\ncentro1,3,"), "{may_2}");
    // The hour containing `since` counts: 10:30 includes the 10:00 bucket.
    let from_10_30 = csv("2024-05-01T10:30:00Z");
    assert!(from_10_30.contains("\ncentro1,8,"), "{from_10_30}");
    assert!(from_10_30.contains("\ncentro2,2,"), "{from_10_30}");
    let later = csv("2024-05-03");
    assert_eq!(later.lines().count(), 1, "only the header: {later}");

    let err = scratch.run(&["usage", "--since", "last week"]).failed();
    assert!(err.contains("--since \"last week\""), "{err}");
}

#[test]
fn usage_without_a_database_says_so() {
    let scratch = Scratch::new(CONFIG);
    let err = scratch.run(&["usage"]).failed();
    assert!(err.contains("no usage database"), "{err}");
    assert!(
        !scratch.dir.path().join("usage.db").exists(),
        "a report creates no database"
    );
}
