//! Fuzzes the admin API against its own OpenAPI document with schemathesis, through
//! `scripts/schemathesis.sh` (a real PHP-FPM, the `gateway` binary of this build, every
//! check schemathesis has). Skipped, with a note, where schemathesis is not installed;
//! `.ci/run` installs it.

use std::path::Path;
use std::process::Command;

/// Whether `program` is an executable file somewhere on `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::metadata(dir.join(program)).is_ok_and(|meta| meta.is_file()))
    })
}

#[test]
fn the_admin_api_matches_its_openapi_document() {
    if !on_path("schemathesis") {
        println!("skipped: schemathesis not installed (pip install schemathesis)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/schemathesis.sh");
    let output = Command::new("bash")
        .arg(&script)
        // The binary this test run built: the script must not run cargo (the build
        // directory is locked while tests run) nor test a stale build.
        .env("GATEWAY_BIN", env!("CARGO_BIN_EXE_gateway"))
        .output()
        .expect("run scripts/schemathesis.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "schemathesis found problems ({}); see the output above",
        output.status
    );
}
