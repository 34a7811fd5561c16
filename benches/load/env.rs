//! The bench's surroundings: which tools are installed (it installs nothing), the gateway
//! binary (built if missing), and a description of the machine for the report.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::procstat;

/// The workspace root (this package's directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What is available to run.
#[derive(Debug, Clone)]
pub struct Tools {
    /// nginx found (through the harness's lookup).
    pub nginx: bool,
    /// `caddy` on PATH.
    pub caddy: bool,
}

const INSTALL_HINT: &str = "install with: apt-get install wrk nginx-light caddy \
     (or scripts/ensure-php-fpm.sh --with-nginx --with-bench)";

/// Checks for wrk (required), php-fpm (required), nginx and Caddy (rows skipped when
/// missing).
pub fn check_tools() -> Tools {
    if !runs("wrk", &["-v"]) {
        panic!("wrk not found; {INSTALL_HINT}");
    }
    if let Err(err) = fpm_harness::php_fpm_binary() {
        panic!("php-fpm not found ({err}); {INSTALL_HINT}");
    }
    let nginx = fpm_harness::nginx_binary().is_ok();
    let caddy = runs("caddy", &["version"]);
    if !nginx {
        eprintln!("load: nginx not found, its rows are skipped; {INSTALL_HINT}");
    }
    if !caddy {
        eprintln!("load: caddy not found, its row is skipped; {INSTALL_HINT}");
    }
    Tools { nginx, caddy }
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success() || !out.stdout.is_empty() || !out.stderr.is_empty())
}

/// The gateway binary: `$GATEWAY_BIN`, else `target/release/gateway`, which is brought up
/// to date with `cargo build --release -p gateway` first (a no-op when it is).
pub fn gateway_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("GATEWAY_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "GATEWAY_BIN={} is not a file", bin.display());
        return bin;
    }
    let root = workspace_root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("release").join("gateway");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("load: cargo build --release -p gateway");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "gateway"])
        .current_dir(&root)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) if bin.is_file() => {
            eprintln!(
                "load: cargo build failed ({status}); using the existing {}",
                bin.display()
            )
        }
        other => panic!(
            "cannot build the gateway ({other:?}); run `cargo build --release -p gateway` \
             or set GATEWAY_BIN"
        ),
    }
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    bin
}

/// One line about the machine and one about the software, for the report.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Online CPUs.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
    /// UTC, ISO 8601.
    pub date: String,
    /// 1-minute load average when the bench started.
    pub load_at_start: f64,
    /// Versions of the programs compared.
    pub versions: Vec<(String, String)>,
}

impl Machine {
    /// Describes this machine.
    pub fn describe(gateway: &Path, tools: &Tools) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let date = first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
        let mut versions = vec![
            (
                "gateway".to_owned(),
                format!(
                    "{} (tree {})",
                    first_line(&gateway.display().to_string(), &["--version"]),
                    source_revision()
                ),
            ),
            ("wrk".to_owned(), first_line("wrk", &["-v"])),
        ];
        if let Ok(php_fpm) = fpm_harness::php_fpm_binary() {
            versions.push((
                "php-fpm".to_owned(),
                first_line(&php_fpm.display().to_string(), &["-v"]),
            ));
        }
        if tools.nginx {
            if let Ok(nginx) = fpm_harness::nginx_binary() {
                versions.push((
                    "nginx".to_owned(),
                    first_line(&nginx.display().to_string(), &["-v"]),
                ));
            }
        }
        if tools.caddy {
            versions.push(("caddy".to_owned(), first_line("caddy", &["version"])));
        }
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
            date,
            load_at_start: procstat::load_average(),
            versions,
        }
    }

    /// `2 × Intel(R) Xeon(R) ..., Linux 6.1.0, 2025-01-01T00:00:00Z, load 0.42`.
    pub fn line(&self) -> String {
        format!(
            "{} × {}, Linux {}, {}, 1-min load average at start {:.2}",
            self.nproc, self.cpu_model, self.kernel, self.date, self.load_at_start
        )
    }
}

/// The first non-empty line a program prints (stdout or stderr: nginx and wrk use the
/// latter), or `?`.
fn first_line(program: &str, args: &[&str]) -> String {
    let Ok(out) = Command::new(program).args(args).output() else {
        return "?".to_owned();
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("?")
        .to_owned()
}

/// The commit the gateway was built from, `+dirty` when the working tree has changes
/// (the usual case while tuning), or `?` outside a git checkout.
fn source_revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(workspace_root())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}+dirty")
            } else {
                rev
            }
        }
        None => "?".to_owned(),
    }
}
