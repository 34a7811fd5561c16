#!/usr/bin/env bash
# Makes sure the external programs the tests need are installed (Debian/Ubuntu).
#
# Usage: scripts/ensure-php-fpm.sh [--with-nginx] [--with-pebble] [--with-bench] [--with-chromium] [--with-deploy] [--with-postgres] [--with-wordpress] [--print-path]
#
#   (always)      php-fpm and php-cli (packages php-fpm, php-cli)
#   --with-nginx  nginx, the reference server some tests compare against
#                 (package nginx-light, or nginx where nginx-light is gone)
#   --with-pebble pebble and pebble-challtestsrv (package pebble), Let's Encrypt's
#                 test CA and its DNS server, for the ACME tests
#   --with-bench  wrk, the HTTP load generator used by the benchmarks,
#                 caddy, a second reference server in the load benchmark, and
#                 h2load (package nghttp2-client) for its HTTP/2 rows
#   --with-chromium  chromium (Debian's package), the headless browser of the
#                 dashboard tests (crates/gateway/tests/dashboard.rs)
#   --with-deploy systemd-socket-activate and systemd-analyze (package systemd), dpkg,
#                 wrk, and cargo-deb (`cargo install cargo-deb --locked`), for the
#                 package, socket activation and restart tests (crates/gateway/tests/deploy.rs)
#   --with-postgres PostgreSQL (package postgresql: initdb and postgres under
#                 /usr/lib/postgresql/*/bin), the fleet tests' registry and ledger
#   --with-wordpress WordPress (Debian's package wordpress, in /usr/share/wordpress, with
#                 its default theme wordpress-theme-twentytwentythree), MariaDB (package
#                 mariadb-server: mariadb-install-db and mariadbd) and php-mysql, for the
#                 WordPress cache test (crates/gateway/tests/wordpress.rs)
#   --print-path  print the php-fpm binary path on stdout when done
#
# Idempotent: does nothing when everything is present, otherwise runs
# apt-get update once and installs only what is missing (through sudo when
# not root). Progress goes to stderr. Binary discovery matches the
# fpm-harness crate: $PHP_FPM_BIN, newest /usr/sbin/php-fpm*, php-fpm on PATH;
# $NGINX_BIN, /usr/sbin/nginx, nginx on PATH.
set -euo pipefail

with_nginx=0
with_bench=0
with_pebble=0
with_chromium=0
with_deploy=0
with_postgres=0
with_wordpress=0
print_path=0
for arg in "$@"; do
    case "$arg" in
        --with-nginx) with_nginx=1 ;;
        --with-bench) with_bench=1 ;;
        --with-pebble) with_pebble=1 ;;
        --with-chromium) with_chromium=1 ;;
        --with-deploy) with_deploy=1 ;;
        --with-postgres) with_postgres=1 ;;
        --with-wordpress) with_wordpress=1 ;;
        --print-path) print_path=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "ensure-php-fpm: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

log() { echo "ensure-php-fpm: $*" >&2; }

find_php_fpm() {
    if [[ -n "${PHP_FPM_BIN:-}" ]]; then
        [[ -x "$PHP_FPM_BIN" ]] && echo "$PHP_FPM_BIN"
        return 0
    fi
    local newest
    newest=$(find /usr/sbin -maxdepth 1 -name 'php-fpm*' -type f -perm -u+x 2>/dev/null |
        grep -E '/php-fpm[0-9.]*$' | sort -V | tail -n 1 || true)
    if [[ -n "$newest" ]]; then
        echo "$newest"
        return 0
    fi
    command -v php-fpm || true
}

find_postgres() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/postgres" ]]; then
        echo "$dir"
        return 0
    fi
    command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)" || true
}

find_mariadbd() {
    local bin
    for bin in /usr/sbin/mariadbd /usr/sbin/mysqld; do
        [[ -x "$bin" ]] && echo "$bin" && return 0
    done
    command -v mariadbd || command -v mysqld || true
}

php_has_mysqli() {
    php -r 'exit(extension_loaded("mysqli") ? 0 : 1);' >/dev/null 2>&1
}

find_nginx() {
    if [[ -n "${NGINX_BIN:-}" ]]; then
        [[ -x "$NGINX_BIN" ]] && echo "$NGINX_BIN"
        return 0
    fi
    if [[ -x /usr/sbin/nginx ]]; then
        echo /usr/sbin/nginx
        return 0
    fi
    command -v nginx || true
}

# An explicit override that points nowhere is a mistake installing cannot fix.
if [[ -n "${PHP_FPM_BIN:-}" && ! -x "$PHP_FPM_BIN" ]]; then
    log "PHP_FPM_BIN=$PHP_FPM_BIN is not an executable file; fix or unset it"
    exit 1
fi
if ((with_nginx)) && [[ -n "${NGINX_BIN:-}" && ! -x "$NGINX_BIN" ]]; then
    log "NGINX_BIN=$NGINX_BIN is not an executable file; fix or unset it"
    exit 1
fi

packages=()
php_fpm=$(find_php_fpm)
if [[ -z "$php_fpm" ]]; then
    packages+=(php-fpm php-cli)
elif ! command -v php >/dev/null 2>&1; then
    packages+=(php-cli)
fi
if ((with_nginx)) && [[ -z "$(find_nginx)" ]]; then
    packages+=(nginx)
fi
if ((with_bench)) && ! command -v wrk >/dev/null 2>&1; then
    packages+=(wrk)
fi
if ((with_pebble)) && ! command -v pebble >/dev/null 2>&1; then
    packages+=(pebble)
fi
if ((with_chromium)) && ! command -v chromium >/dev/null 2>&1; then
    packages+=(chromium)
fi
if ((with_deploy)) && ! command -v systemd-socket-activate >/dev/null 2>&1; then
    packages+=(systemd)
fi
if ((with_deploy)) && ! command -v wrk >/dev/null 2>&1 && [[ " ${packages[*]} " != *" wrk "* ]]; then
    packages+=(wrk)
fi
if ((with_postgres)) && [[ -z "$(find_postgres)" ]]; then
    packages+=(postgresql)
fi
if ((with_wordpress)) && [[ ! -f /usr/share/wordpress/wp-settings.php ]]; then
    packages+=(wordpress)
fi
if ((with_wordpress)) && [[ ! -d /usr/share/wordpress/wp-content/themes/twentytwentythree ]]; then
    packages+=(wordpress-theme-twentytwentythree)
fi
if ((with_wordpress)) && [[ -z "$(find_mariadbd)" ]]; then
    packages+=(mariadb-server)
fi
if ((with_wordpress)) && ! php_has_mysqli; then
    packages+=(php-mysql)
fi
if ((with_bench)) && ! command -v caddy >/dev/null 2>&1; then
    packages+=(caddy)
fi
if ((with_bench)) && ! command -v h2load >/dev/null 2>&1; then
    packages+=(nghttp2-client)
fi

if ((${#packages[@]} == 0)); then
    found="php-fpm at $php_fpm"
    if ((with_nginx)); then found+=", nginx at $(find_nginx)"; fi
    if ((with_pebble)); then found+=", pebble at $(command -v pebble)"; fi
    if ((with_chromium)); then found+=", chromium at $(command -v chromium)"; fi
    if ((with_postgres)); then found+=", PostgreSQL in $(find_postgres)"; fi
    if ((with_wordpress)); then found+=", WordPress, MariaDB at $(find_mariadbd)"; fi
    if ((with_bench)); then found+=", wrk at $(command -v wrk), caddy at $(command -v caddy), h2load at $(command -v h2load)"; fi
    log "nothing to do: $found"
else
    if ! command -v apt-get >/dev/null 2>&1; then
        log "missing: ${packages[*]}, and there is no apt-get to install them; install them manually"
        exit 1
    fi
    sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            log "missing: ${packages[*]}; need root or sudo to install them"
            exit 1
        fi
    fi
    log "installing: ${packages[*]}"
    "${sudo[@]}" apt-get update
    # Prefer the smaller nginx-light where the distribution still has it.
    for i in "${!packages[@]}"; do
        if [[ "${packages[$i]}" == nginx ]] &&
            apt-cache policy nginx-light 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            packages[i]=nginx-light
        fi
    done
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${packages[@]}"
    php_fpm=$(find_php_fpm)
    if [[ -z "$php_fpm" ]]; then
        log "php-fpm still not found after installing ${packages[*]}"
        exit 1
    fi
    if ((with_nginx)) && [[ -z "$(find_nginx)" ]]; then
        log "nginx still not found after installing ${packages[*]}"
        exit 1
    fi
    if ((with_postgres)) && [[ -z "$(find_postgres)" ]]; then
        log "PostgreSQL still not found after installing ${packages[*]}"
        exit 1
    fi
    if ((with_wordpress)) && [[ -z "$(find_mariadbd)" ]]; then
        log "mariadbd still not found after installing ${packages[*]}"
        exit 1
    fi
    for tool in wrk caddy h2load; do
        if ((with_bench)) && ! command -v "$tool" >/dev/null 2>&1; then
            log "$tool still not found after installing ${packages[*]}"
            exit 1
        fi
    done
    log "installed ${packages[*]}; php-fpm at $php_fpm"
fi

# cargo-deb is a cargo subcommand from crates.io, not a Debian package. The version is
# pinned to one known to build with the toolchain here and to accept `--profile dev`.
if ((with_deploy)) && ! command -v cargo-deb >/dev/null 2>&1 &&
    [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-deb" ]]; then
    log "installing cargo-deb (cargo install cargo-deb --locked)"
    cargo install cargo-deb --locked --version 3.8.0 >&2 ||
        log "could not install cargo-deb; the .deb test will be skipped"
fi

if ((print_path)); then
    echo "$php_fpm"
fi
