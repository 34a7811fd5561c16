//! One WordPress codebase (Debian's package, `/usr/share/wordpress`) as a document root
//! for tests, with the repository's `wp-config.php` that takes every site setting from
//! the FastCGI params, so several tenants share it the way this project's tenants do.
//!
//! Debian's own `wp-config.php` reads `/etc/wordpress/config-<host>.php`, and PHP's
//! `__DIR__` resolves symlinks, so a tree of symlinks to the package would make
//! `wp-load.php` (and `wp-admin/*.php`, which load `dirname(__DIR__) . '/wp-load.php'`)
//! find Debian's config. [`WordPressRoot::build`] therefore copies the PHP files that
//! locate the config by their own path (the top-level scripts and `wp-admin/`), and links
//! only what is reached through `ABSPATH` (`wp-includes/`, the themes and plugins).

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::error::{HarnessError, Result};

/// Where Debian's `wordpress` package installs WordPress.
pub const DEBIAN_WORDPRESS_DIR: &str = "/usr/share/wordpress";

/// Environment variable naming another WordPress tree to use.
pub const WORDPRESS_DIR_ENV: &str = "WORDPRESS_DIR";

/// The WordPress tree: `$WORDPRESS_DIR`, else Debian's `/usr/share/wordpress`; it must
/// hold `wp-settings.php` and a theme.
pub fn wordpress_dir() -> Result<PathBuf> {
    let dir = std::env::var_os(WORDPRESS_DIR_ENV)
        .filter(|value| !value.is_empty())
        .map_or_else(|| PathBuf::from(DEBIAN_WORDPRESS_DIR), PathBuf::from);
    let has_theme = fs::read_dir(dir.join("wp-content/themes"))
        .map(|mut themes| themes.any(|theme| theme.is_ok_and(|t| t.path().is_dir())))
        .unwrap_or(false);
    if dir.join("wp-settings.php").is_file() && has_theme {
        return Ok(dir);
    }
    Err(HarnessError::WordPressNotFound {
        searched: format!(
            "{} (${WORDPRESS_DIR_ENV}, else {DEBIAN_WORDPRESS_DIR}) for wp-settings.php and \
             a theme in wp-content/themes",
            dir.display()
        ),
    })
}

/// The repository's multi-tenant `wp-config.php` (`tests/fixtures/wordpress/`).
pub fn wordpress_config_fixture() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/wordpress/wp-config.php"
    ))
    .to_path_buf()
}

/// A WordPress document root in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct WordPressRoot {
    /// The document root.
    dir: tempfile::TempDir,
}

impl WordPressRoot {
    /// Builds the document root from [`wordpress_dir`] with `wp_config` as its
    /// `wp-config.php`.
    pub fn build(wp_config: &Path) -> Result<WordPressRoot> {
        let source = wordpress_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("wordpress")
            .tempdir()
            .map_err(|source| HarnessError::TempDir {
                what: "a WordPress document root",
                source,
            })?;
        let root = dir.path();
        let entries = fs::read_dir(&source).map_err(|err| read_error(&source, err))?;
        for entry in entries {
            let entry = entry.map_err(|err| read_error(&source, err))?;
            let name = entry.file_name();
            let from = entry.path();
            let to = root.join(&name);
            match name.to_str() {
                // Debian's config (and its `.htaccess`, a link into /etc) stay out.
                Some("wp-config.php" | ".htaccess") => {}
                Some("wp-includes") => link(&from, &to)?,
                Some("wp-content") => {
                    create_dir(&to)?;
                    let children = fs::read_dir(&from).map_err(|err| read_error(&from, err))?;
                    for child in children {
                        let child = child.map_err(|err| read_error(&from, err))?;
                        link(&child.path(), &to.join(child.file_name()))?;
                    }
                }
                _ => copy_tree(&from, &to)?,
            }
        }
        fs::copy(wp_config, root.join("wp-config.php"))
            .map_err(|err| write_error(&root.join("wp-config.php"), err))?;
        Ok(WordPressRoot { dir })
    }

    /// The document root (a tenant's `root`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Copies `from` (a file, a symlink as a symlink, or a directory with all it holds) to `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(from).map_err(|err| read_error(from, err))?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(from).map_err(|err| read_error(from, err))?;
        return link(&target, to);
    }
    if !meta.is_dir() {
        return fs::copy(from, to)
            .map(drop)
            .map_err(|err| write_error(to, err));
    }
    create_dir(to)?;
    for entry in fs::read_dir(from).map_err(|err| read_error(from, err))? {
        let entry = entry.map_err(|err| read_error(from, err))?;
        copy_tree(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

fn link(target: &Path, at: &Path) -> Result<()> {
    symlink(target, at).map_err(|err| write_error(at, err))
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir(dir).map_err(|err| write_error(dir, err))
}

fn read_error(path: &Path, source: io::Error) -> HarnessError {
    HarnessError::ReadFile {
        path: path.to_path_buf(),
        source,
    }
}

fn write_error(path: &Path, source: io::Error) -> HarnessError {
    HarnessError::WriteFile {
        path: path.to_path_buf(),
        source,
    }
}
