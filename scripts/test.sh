#!/usr/bin/env bash
# The one command that runs every check, locally and in CI:
#   1. ensures php-fpm, php-cli, nginx, pebble, chromium, PostgreSQL, WordPress with MariaDB and the deploy tools are installed (scripts/ensure-php-fpm.sh)
#   2. cargo fmt --check
#   3. cargo clippy on every crate and target, warnings are errors
#   4. cargo test on the whole workspace
#   5. the fuzz crate (its own workspace, on stable) builds against its committed Cargo.lock
# Stops at the first failure. Extra arguments are passed to `cargo test` instead of the
# default `-- --include-ignored` (e.g. scripts/test.sh -- --include-ignored --nocapture).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

# Cargo.lock is committed: fail instead of silently updating it.
locked=()
if [[ -f Cargo.lock ]]; then
    locked=(--locked)
fi

step "ensure php-fpm, nginx and pebble"
scripts/ensure-php-fpm.sh --with-nginx --with-pebble --with-chromium --with-deploy --with-postgres --with-wordpress

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets "${locked[@]}" -- -D warnings

# The slowest end-to-end tests are #[ignore]d so that a plain `cargo test --workspace` is
# the quick subset; this script runs them too. (The one other ignored test is a timing
# probe run by hand in release.)
if (($# == 0)); then
    set -- -- --include-ignored --skip build_params_speed
fi
step "cargo test"
cargo test --workspace "${locked[@]}" "$@"

# The fuzz crate is its own workspace with its own Cargo.lock; --locked fails when a
# dependency change in fcgi-core left that lockfile stale (running a fuzzer would rewrite
# it). `check` builds libFuzzer (C++) but needs no nightly; the shared target dir reuses
# the workspace's artifacts.
step "fuzz crate (cargo check --locked)"
cargo check --locked --manifest-path crates/fcgi-core/fuzz/Cargo.toml --bins --target-dir target

step "all checks passed"
