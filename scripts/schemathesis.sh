#!/usr/bin/env bash
# Fuzzes the gateway's admin API against its own OpenAPI document with schemathesis:
#   1. starts a private php-fpm (unix socket, 2 workers) on tests/fixtures/php
#   2. starts `gateway serve` with a scratch tenants.toml (commented, three tenants,
#      usage metering on) and the admin API on 127.0.0.1 with a bearer token
#   3. runs `schemathesis run http://ADMIN/openapi.json --checks all` (bounded)
#   4. checks the config file the API kept rewriting still loads (`gateway check`)
# Exits non-zero if any step fails. Everything lives in a temp dir, removed at exit.
#
# Environment:
#   GATEWAY_BIN        the gateway binary (default: `cargo build -p gateway`, then
#                      target/debug/gateway)
#   ST_MAX_EXAMPLES    test cases per operation and phase (default 50)
#   ST_SEED            hypothesis seed (default: a fixed one, so runs repeat)
#   ST_EXTRA_ARGS      more arguments for `schemathesis run`
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo_root=$(pwd)

if ! command -v schemathesis >/dev/null 2>&1; then
    echo "schemathesis.sh: schemathesis is not installed (pip install schemathesis)" >&2
    exit 2
fi

gateway=${GATEWAY_BIN:-}
if [[ -z "$gateway" ]]; then
    cargo build --quiet -p gateway --bin gateway
    gateway="$repo_root/target/debug/gateway"
fi
php_fpm=$(scripts/ensure-php-fpm.sh --print-path)

work=$(mktemp -d "${TMPDIR:-/tmp}/gateway-schemathesis.XXXXXX")
# Logs apart from the config: the gateway watches the config's directory.
mkdir "$work/log"
fpm_pid=
gateway_pid=
cleanup() {
    local status=$?
    if [[ -n "$gateway_pid" ]] && kill -0 "$gateway_pid" 2>/dev/null; then
        kill -TERM "$gateway_pid" 2>/dev/null || true
        # Graceful shutdown is bounded, but do not hang CI on a bug in it.
        for _ in $(seq 150); do
            kill -0 "$gateway_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
    fi
    if [[ -n "$fpm_pid" ]] && kill -0 "$fpm_pid" 2>/dev/null; then
        kill -QUIT "$fpm_pid" 2>/dev/null || true
        wait "$fpm_pid" 2>/dev/null || true
    fi
    if ((status != 0)); then
        echo "schemathesis.sh: failed; gateway log:" >&2
        tail -n 40 "$work/log/gateway.log" >&2 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- php-fpm ---------------------------------------------------------------------
socket="$work/php-fpm.sock"
cat >"$work/php-fpm.conf" <<CONF
[global]
pid = "$work/php-fpm.pid"
error_log = "$work/php-fpm.log"
daemonize = no

[schemathesis]
listen = "$socket"
pm = static
pm.max_children = 2
chdir = "$repo_root/tests/fixtures/php"
security.limit_extensions = .php
CONF
fpm_args=(--nodaemonize --fpm-config "$work/php-fpm.conf" --prefix "$work")
if ((EUID == 0)); then
    fpm_args+=(--allow-to-run-as-root)
fi
"$php_fpm" "${fpm_args[@]}" >"$work/php-fpm.stderr" 2>&1 &
fpm_pid=$!
for _ in $(seq 100); do
    [[ -S "$socket" ]] && break
    kill -0 "$fpm_pid" 2>/dev/null || { echo "schemathesis.sh: php-fpm exited; see below" >&2; cat "$work/php-fpm.stderr" >&2; exit 1; }
    sleep 0.1
done
[[ -S "$socket" ]] || { echo "schemathesis.sh: php-fpm did not start" >&2; exit 1; }

# --- gateway ---------------------------------------------------------------------
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$token" >"$work/admin.token"
chmod 600 "$work/admin.token"
cat >"$work/tenants.toml" <<TOML
# Scratch config for scripts/schemathesis.sh; the admin API rewrites it.
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
admin_token_file = "admin.token"   # the token, kept out of this file

[fastcgi]
upstream = "unix:$socket"
root = "$repo_root/tests/fixtures/php"

[usage]
database = "usage.db"
flush_interval = "1s"

# A tenant with secrets, which must never come back in a response.
[tenants.alpha]
hosts = ["alpha.test", "*.alpha.test"]
params = { DBHOST = "db1", DBPASS = "alpha-secret" }

[tenants.beta]
hosts = ["beta.test"]
enabled = false # suspended

[tenants.gamma]
hosts = ["gamma.test"]
max_concurrency = 2
TOML

: >"$work/log/gateway.log"
"$gateway" --log-format json serve --config "$work/tenants.toml" >"$work/log/gateway.log" 2>&1 &
gateway_pid=$!
admin=
for _ in $(seq 200); do
    admin=$(sed -n 's/.*"message":"admin API listening".*"addr":"\([0-9.:]*\)".*/\1/p; s/.*"addr":"\([0-9.:]*\)".*"message":"admin API listening".*/\1/p' "$work/log/gateway.log" | head -n 1 || true)
    [[ -n "$admin" ]] && break
    kill -0 "$gateway_pid" 2>/dev/null || { echo "schemathesis.sh: the gateway exited" >&2; exit 1; }
    sleep 0.05
done
[[ -n "$admin" ]] || { echo "schemathesis.sh: the admin API did not come up" >&2; exit 1; }
echo "schemathesis.sh: gateway admin API on $admin" >&2

# --- schemathesis ----------------------------------------------------------------
# Run from the scratch dir: schemathesis keeps its example database in the cwd.
read -r -a extra <<<"${ST_EXTRA_ARGS:-}"
st_status=0
(
    cd "$work"
    SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$repo_root/scripts${PYTHONPATH:+:$PYTHONPATH}" \
        schemathesis run "http://$admin/openapi.json" \
        --checks all \
        --header "Authorization: Bearer $token" \
        --max-examples "${ST_MAX_EXAMPLES:-50}" \
        --seed "${ST_SEED:-20240501}" \
        --workers 1 \
        --request-timeout 10 \
        --wait-for-schema 10 \
        --no-color \
        "${extra[@]}"
) || st_status=$?

# --- the file the API rewrote still loads ----------------------------------------
if ! "$gateway" check --config "$work/tenants.toml" >/dev/null; then
    echo "schemathesis.sh: the config file no longer loads after the run" >&2
    exit 1
fi
if grep -q "alpha-secret\|$token" "$work/log/gateway.log"; then
    echo "schemathesis.sh: a secret reached the gateway log" >&2
    exit 1
fi
exit "$st_status"
