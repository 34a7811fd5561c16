//! Locating the external binaries (php-fpm, nginx) and the shared PHP fixtures.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Once;

use crate::error::{HarnessError, Result};

/// Environment variable that overrides php-fpm discovery.
pub const PHP_FPM_BIN_ENV: &str = "PHP_FPM_BIN";
/// Environment variable that overrides nginx discovery.
pub const NGINX_BIN_ENV: &str = "NGINX_BIN";

/// Content of the `.git/config` fixture. Git refuses to track any path with a
/// `.git` component, so this file cannot live in the repository and is
/// (re)created by [`fixtures_dir`] instead.
const GIT_CONFIG_FIXTURE: &str =
    "# Dummy git config fixture: must never be served.\n[core]\n\trepositoryformatversion = 0\n";

/// Finds the php-fpm binary to use.
///
/// Order: `$PHP_FPM_BIN` (must point to an executable file), then the newest
/// versioned `/usr/sbin/php-fpm*` (e.g. `php-fpm8.3` beats `php-fpm8.2`, an
/// unversioned `php-fpm` comes last), then `php-fpm` on `$PATH`.
pub fn php_fpm_binary() -> Result<PathBuf> {
    let mut searched = Vec::new();
    if let Some(path) = env_override(PHP_FPM_BIN_ENV) {
        if is_executable(&path) {
            return Ok(path);
        }
        return Err(HarnessError::PhpFpmNotFound {
            searched: format!(
                "${PHP_FPM_BIN_ENV}={} (not an executable file)",
                path.display()
            ),
        });
    }

    searched.push("/usr/sbin/php-fpm*".to_owned());
    if let Some(path) = newest_versioned(Path::new("/usr/sbin"), "php-fpm") {
        return Ok(path);
    }

    searched.push("php-fpm on $PATH".to_owned());
    if let Some(path) = find_on_path("php-fpm") {
        return Ok(path);
    }

    Err(HarnessError::PhpFpmNotFound {
        searched: searched.join(", "),
    })
}

/// Finds the nginx binary: `$NGINX_BIN`, then `/usr/sbin/nginx`, then `nginx`
/// on `$PATH`.
pub fn nginx_binary() -> Result<PathBuf> {
    if let Some(path) = env_override(NGINX_BIN_ENV) {
        if is_executable(&path) {
            return Ok(path);
        }
        return Err(HarnessError::NginxNotFound {
            searched: format!(
                "${NGINX_BIN_ENV}={} (not an executable file)",
                path.display()
            ),
        });
    }
    let default = Path::new("/usr/sbin/nginx");
    if is_executable(default) {
        return Ok(default.to_path_buf());
    }
    if let Some(path) = find_on_path("nginx") {
        return Ok(path);
    }
    Err(HarnessError::NginxNotFound {
        searched: "/usr/sbin/nginx, nginx on $PATH".to_owned(),
    })
}

/// Absolute path of the repository's `tests/fixtures/php` directory.
///
/// The path is canonicalized when possible. On first use this also creates
/// the `.git/config` fixture (git cannot track it) if it is missing; failing to
/// create it is not reported here, tests relying on it will notice.
pub fn fixtures_dir() -> PathBuf {
    static MATERIALIZE: Once = Once::new();
    let raw = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/php"
    ));
    let dir = raw.canonicalize().unwrap_or_else(|_| raw.to_path_buf());
    MATERIALIZE.call_once(|| {
        let git_dir = dir.join(".git");
        let config = git_dir.join("config");
        if !config.exists() && fs::create_dir_all(&git_dir).is_ok() {
            // Best effort, see the doc comment.
            let _ = fs::write(&config, GIT_CONFIG_FIXTURE);
        }
    });
    dir
}

fn env_override(name: &str) -> Option<PathBuf> {
    env::var_os(name)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Picks the executable in `dir` named `prefix` or `prefix<version>` with the
/// highest numeric version.
fn newest_versioned(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let entries = fs::read_dir(dir).ok()?;
    let mut candidates: Vec<(Option<Vec<u32>>, PathBuf)> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = parse_version_suffix(&name, prefix)?;
            Some((version, entry.path()))
        })
        .filter(|(_, path)| is_executable(path))
        .collect();
    // `None` (unversioned) sorts before any `Some`, so the newest is last.
    candidates.sort();
    candidates.pop().map(|(_, path)| path)
}

/// `php-fpm` -> `Some(None)`, `php-fpm8.2` -> `Some(Some([8, 2]))`,
/// anything else -> `None`.
fn parse_version_suffix(name: &OsStr, prefix: &str) -> Option<Option<Vec<u32>>> {
    let rest = name.to_str()?.strip_prefix(prefix)?;
    if rest.is_empty() {
        return Some(None);
    }
    let parts: Option<Vec<u32>> = rest.split('.').map(|part| part.parse().ok()).collect();
    parts.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_suffix_parsing_accepts_only_numeric_versions() {
        assert_eq!(
            parse_version_suffix(OsStr::new("php-fpm"), "php-fpm"),
            Some(None)
        );
        assert_eq!(
            parse_version_suffix(OsStr::new("php-fpm8.2"), "php-fpm"),
            Some(Some(vec![8, 2]))
        );
        assert_eq!(
            parse_version_suffix(OsStr::new("php-fpm8.2.bak"), "php-fpm"),
            None
        );
        assert_eq!(parse_version_suffix(OsStr::new("php8.2"), "php-fpm"), None);
    }

    #[test]
    fn newer_versions_sort_after_older_and_unversioned() {
        let mut versions = [Some(vec![8, 10]), None, Some(vec![8, 2]), Some(vec![7, 4])];
        versions.sort();
        assert_eq!(versions.last(), Some(&Some(vec![8, 10])));
        assert_eq!(versions.first(), Some(&None));
    }

    #[test]
    fn fixtures_dir_contains_hello_php() {
        assert!(fixtures_dir().join("hello.php").is_file());
    }
}
