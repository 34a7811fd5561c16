//! The path half of routing (route → **static file or CGI mapping**): which script, static
//! file or redirect a request path maps to, looked up on disk. It is nginx's
//! `try_files $uri $uri/ /index.php?$args` plus `fastcgi_split_path_info`, with the
//! path-safety checks done before anything touches the disk.
//!
//! Order of decisions for a path (after percent-decoding and normalising):
//! 1. a segment starting with `.` → [`Resolution::Forbidden`] (except a leading
//!    `/.well-known/`, for static files only);
//! 2. the first segment ending in `.php`, if that prefix is a file → PHP with the rest
//!    as `PATH_INFO`;
//! 3. a directory → redirect to add `/`, or its index script, or the front controller;
//! 4. a file → PHP if it is `*.php`, forbidden if it is other PHP source, else static;
//! 5. anything else → the front controller (`/index.php`), or not found.
//!
//! Metadata lookups are synchronous `std::fs` calls: on a local disk they take
//! microseconds (the page cache holds the code tree), far less than handing them to a
//! blocking thread would cost. A root on a network filesystem would want a
//! `spawn_blocking` around [`resolve`].

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::request_path::{
    ends_with_php, is_php_source, percent_encode_path, BadPath, Parsed, RequestPath,
};

/// Where a request path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// Serve this file as is.
    Static {
        /// The file, under the root.
        file: PathBuf,
    },
    /// Run a PHP script.
    Php {
        /// The script's URL path (`/x.php`), decoded and normalised: `SCRIPT_NAME`.
        script_name: String,
        /// The script on this machine, under the root.
        script_path: PathBuf,
        /// What followed the script in the URL (`/a/b` for `/x.php/a/b`): `PATH_INFO`.
        path_info: Option<String>,
    },
    /// A directory was named without its trailing slash: redirect (301) so relative links
    /// in its index resolve. `location` is the normalised path, percent-encoded, plus `/`;
    /// the caller appends `?query` if there was one.
    RedirectToDir {
        /// The redirect target path.
        location: String,
    },
    /// The path names something never served (dotfiles, PHP source, symlinks leaving the
    /// root, unreadable directories).
    Forbidden,
    /// Nothing matches and there is no front controller.
    NotFound,
}

/// A path that cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    /// The path is malformed or hostile (answer 400).
    #[error(transparent)]
    BadPath(#[from] BadPath),
    /// The filesystem failed in an unexpected way (answer 500).
    #[error("cannot resolve the request path: {0}")]
    Io(#[from] io::Error),
}

/// Maps `raw_path` (the URI path, still percent-encoded) to what should answer it.
///
/// `root` is the document root on this machine; `index` the directory index and front
/// controller (`index.php`). The root is looked up afresh on each call, never cached, so
/// a deploy that swaps a `current -> releases/N` symlink is followed immediately.
pub(crate) fn resolve(
    root: &Path,
    index: &str,
    raw_path: &str,
) -> Result<Resolution, ResolveError> {
    let path = match RequestPath::parse(raw_path)? {
        Parsed::Path(path) => path,
        Parsed::Forbidden => return Ok(Resolution::Forbidden),
    };
    let resolution = Resolver { root, index }.resolve(&path);
    // A root that cannot be resolved is a server fault (500), whatever the path. A script,
    // file or directory found under it proves it resolves; any other outcome checks it
    // here, with one stat(2), which fails exactly when realpath(3) of the root would (the
    // root is only canonicalized when a symlink below it has to be checked).
    if !matches!(
        resolution,
        Ok(Resolution::Php { .. } | Resolution::Static { .. } | Resolution::RedirectToDir { .. })
    ) {
        fs::metadata(root)?;
    }
    resolution
}

/// What is at a path, following symlinks.
enum Entry {
    File,
    Dir,
    Absent,
    Denied,
}

/// What [`Resolver::entry`] learnt about the last name of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    /// lstat(2) saw it, and it is not a symlink.
    Plain,
    /// A symlink, or not looked at on its own.
    Unknown,
}

struct Resolver<'a> {
    root: &'a Path,
    index: &'a str,
}

impl Resolver<'_> {
    fn resolve(&self, path: &RequestPath) -> Result<Resolution, ResolveError> {
        let whole = path.path.len(); // where the last segment ends

        // Only the first `.php` segment is a split point, and only a regular file there
        // runs: `/uploads/evil.jpg/x.php` never executes `evil.jpg`.
        if let Some(php_end) = path.php_end {
            let script_path = path.fs_path(self.root, php_end);
            let (entry, leaf) = self.entry(&script_path)?;
            match entry {
                Entry::File => {
                    return self.php(
                        path.well_known,
                        path.url_prefix(php_end),
                        (script_path, leaf),
                        || path.rest_after(php_end),
                    )
                }
                Entry::Denied => return Ok(Resolution::Forbidden),
                Entry::Dir | Entry::Absent => {}
            }
        }

        let target = path.fs_path(self.root, whole);
        let (entry, leaf) = self.entry(&target)?;
        match entry {
            Entry::Dir if !path.trailing_slash => {
                if !self.inside_root(&target, leaf)? {
                    return Ok(Resolution::Forbidden);
                }
                let mut location = percent_encode_path(&path.url_prefix(whole));
                location.push('/');
                Ok(Resolution::RedirectToDir { location })
            }
            Entry::Dir => {
                let script_path = target.join(self.index);
                let (entry, leaf) = self.entry(&script_path)?;
                match entry {
                    Entry::File => {
                        let mut script_name = path.url_prefix(whole);
                        if !script_name.ends_with('/') {
                            script_name.push('/');
                        }
                        script_name.push_str(self.index);
                        self.php(path.well_known, script_name, (script_path, leaf), || None)
                    }
                    Entry::Denied => Ok(Resolution::Forbidden),
                    Entry::Dir | Entry::Absent => self.front_controller(),
                }
            }
            Entry::File => {
                let name = path.last_segment();
                if ends_with_php(name) {
                    return self.php(
                        path.well_known,
                        path.url_prefix(whole),
                        (target, leaf),
                        || None,
                    );
                }
                if is_php_source(name) || !self.inside_root(&target, leaf)? {
                    return Ok(Resolution::Forbidden);
                }
                Ok(Resolution::Static { file: target })
            }
            Entry::Denied => Ok(Resolution::Forbidden),
            Entry::Absent => self.front_controller(),
        }
    }

    /// A script to run, once it is known to be a file (with what [`Self::entry`] learnt
    /// of its last name); refused inside `/.well-known/` and outside the root.
    fn php(
        &self,
        in_well_known: bool,
        script_name: String,
        (script_path, leaf): (PathBuf, Leaf),
        path_info: impl FnOnce() -> Option<String>,
    ) -> Result<Resolution, ResolveError> {
        if in_well_known || !self.inside_root(&script_path, leaf)? {
            return Ok(Resolution::Forbidden);
        }
        Ok(Resolution::Php {
            script_name,
            script_path,
            path_info: path_info(),
        })
    }

    fn front_controller(&self) -> Result<Resolution, ResolveError> {
        let script_path = self.root.join(self.index);
        let (entry, leaf) = self.entry(&script_path)?;
        match entry {
            Entry::File => self.php(
                false,
                format!("/{}", self.index),
                (script_path, leaf),
                || None,
            ),
            Entry::Denied => Ok(Resolution::Forbidden),
            Entry::Dir | Entry::Absent => Ok(Resolution::NotFound),
        }
    }

    /// What `path` is, with symlinks followed, and whether its last name is a symlink.
    ///
    /// lstat(2) first: for the usual plain file it answers both questions, so the
    /// symlink check of [`Self::inside_root`] needs no second call for the last name.
    /// Only a symlink costs a stat(2) as well. An lstat(2) error is the stat(2) error:
    /// the two differ only in following the last name, which a failed lookup never
    /// reaches.
    fn entry(&self, path: &Path) -> Result<(Entry, Leaf), ResolveError> {
        let (meta, leaf) = match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_symlink() => (Ok(meta), Leaf::Plain),
            Ok(_) => (fs::metadata(path), Leaf::Unknown),
            Err(err) => (Err(err), Leaf::Unknown),
        };
        let entry = match meta {
            Ok(meta) if meta.is_file() => Entry::File,
            Ok(meta) if meta.is_dir() => Entry::Dir,
            // Sockets, FIFOs, devices: never served, never run.
            Ok(_) => Entry::Denied,
            Err(err) => classify(err)?,
        };
        Ok((entry, leaf))
    }

    /// Whether `path`, with every symlink followed, is still under the root. `leaf` says
    /// whether its last name is already known not to be a symlink.
    fn inside_root(&self, path: &Path, leaf: Leaf) -> Result<bool, ResolveError> {
        if self.no_symlink_below_root(path, leaf) {
            return Ok(true);
        }
        let real = match fs::canonicalize(path) {
            Ok(real) => real,
            Err(err) => {
                // Vanished since the metadata call, or unreadable: refuse either way,
                // unless the filesystem itself is failing.
                classify(err)?;
                return Ok(false);
            }
        };
        Ok(real.starts_with(fs::canonicalize(self.root)?))
    }

    /// Whether `path` is the root followed by plain names none of which is a symlink.
    /// Then realpath(path) is realpath(root) followed by the same names, so `path` is
    /// inside the root: one lstat(2) per name below the root settles it, where
    /// realpath(3) costs a readlink(2) for every component from `/` down, for the path
    /// and again for the root. Any doubt (a symlink, an error, `..`) answers `false` and
    /// leaves the decision to realpath.
    fn no_symlink_below_root(&self, path: &Path, leaf: Leaf) -> bool {
        let Some(names) = self
            .names_below_root(path)
            .or_else(|| self.normal_components_below_root(path))
        else {
            return false;
        };
        // `path` itself (unless `entry` already lstat'ed it), then each parent up to (not
        // including) the root.
        let skip = usize::from(leaf == Leaf::Plain);
        path.ancestors().take(names).skip(skip).all(|prefix| {
            fs::symlink_metadata(prefix).is_ok_and(|meta| !meta.file_type().is_symlink())
        })
    }

    /// How many names `path` has below the root, when its bytes are the root's followed
    /// by `/name/name...` with no empty, `.` or `..` name: how [`RequestPath::fs_path`]
    /// builds every path. `None` leaves it to the component-wise
    /// [`Self::normal_components_below_root`], which gives the same count where both
    /// answer but costs several times as much (`Path::strip_prefix` and `components`
    /// parse both paths).
    fn names_below_root(&self, path: &Path) -> Option<usize> {
        use std::os::unix::ffi::OsStrExt;
        let root = self.root.as_os_str().as_bytes();
        let root = root.strip_suffix(b"/").unwrap_or(root);
        let rest = path.as_os_str().as_bytes().strip_prefix(root)?;
        if rest.is_empty() {
            return Some(0);
        }
        let mut names = 0;
        for name in rest.strip_prefix(b"/")?.split(|&b| b == b'/') {
            if name.is_empty() || name == b"." || name == b".." {
                return None;
            }
            names += 1;
        }
        Some(names)
    }

    /// How many components `path` has below the root, if all are plain names.
    fn normal_components_below_root(&self, path: &Path) -> Option<usize> {
        let below = path.strip_prefix(self.root).ok()?;
        let mut names = 0;
        for component in below.components() {
            if !matches!(component, Component::Normal(_)) {
                return None;
            }
            names += 1;
        }
        Some(names)
    }
}

/// Sorts filesystem errors into "not there" (fall through), "not allowed" (403) and
/// genuine failures.
fn classify(err: io::Error) -> Result<Entry, ResolveError> {
    match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Ok(Entry::Absent),
        io::ErrorKind::PermissionDenied => Ok(Entry::Denied),
        // A name too long for the filesystem cannot exist; let the front controller
        // answer, as for any unknown path.
        _ if err.raw_os_error() == Some(libc::ENAMETOOLONG) => Ok(Entry::Absent),
        // A symlink loop is a broken link someone made on purpose or by mistake.
        _ if err.raw_os_error() == Some(libc::ELOOP) => Ok(Entry::Denied),
        _ => Err(ResolveError::Io(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document root with the files the rules talk about, and a directory outside it
    /// for symlinks to escape to.
    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    #[test]
    fn the_byte_wise_name_count_agrees_with_the_component_wise_one() {
        let cases = [
            ("/srv/app", "/srv/app/x.php", Some(1)),
            ("/srv/app/", "/srv/app/a/b/x.php", Some(3)),
            ("/srv/app", "/srv/app", Some(0)),
            ("/", "/x.php", Some(1)),
            ("/srv/./app", "/srv/./app/x.php", Some(1)),
            // A sibling sharing the root's bytes, and names the fast path leaves alone.
            ("/srv/app", "/srv/application/x.php", None),
            ("/srv/app", "/srv/app/../x.php", None),
            ("/srv/app", "/srv/app//x.php", None),
        ];
        for (root, path, fast) in cases {
            let resolver = Resolver {
                root: Path::new(root),
                index: "index.php",
            };
            let path = Path::new(path);
            assert_eq!(resolver.names_below_root(path), fast, "{root} {path:?}");
            if let Some(names) = fast {
                assert_eq!(
                    resolver.normal_components_below_root(path),
                    Some(names),
                    "{root} {path:?}"
                );
            }
        }
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        for d in [
            "sub",
            "emptydir",
            "uploads/evil.jpg.d",
            ".git",
            ".well-known/acme-challenge",
            "a.php",
            "with space",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::create_dir_all(&outside).unwrap();
        for f in [
            "index.php",
            "sub/index.php",
            "file.php",
            "UPPER.PHP",
            "style.css",
            ".env",
            ".git/config",
            ".well-known/acme-challenge/token",
            ".well-known/x.php",
            "uploads/evil.jpg",
            "a.php/b.php",
            "legacy.phtml",
            "config.php5",
            "with space/index.php",
        ] {
            fs::write(root.join(f), "x").unwrap();
        }
        fs::write(outside.join("secret.txt"), "s").unwrap();
        fs::write(outside.join("shell.php"), "s").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("escape.txt")).unwrap();
        std::os::unix::fs::symlink(outside.join("shell.php"), root.join("escape.php")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("outdir")).unwrap();
        std::os::unix::fs::symlink(root.join("style.css"), root.join("alias.css")).unwrap();
        Fixture { _dir: dir, root }
    }

    impl Fixture {
        fn resolve(&self, raw: &str) -> Result<Resolution, ResolveError> {
            resolve(&self.root, "index.php", raw)
        }

        fn php(&self, script: &str, path_info: Option<&str>) -> Resolution {
            Resolution::Php {
                script_name: script.to_owned(),
                script_path: self.root.join(&script[1..]),
                path_info: path_info.map(str::to_owned),
            }
        }

        fn front(&self) -> Resolution {
            self.php("/index.php", None)
        }
    }

    fn is_bad_request(result: Result<Resolution, ResolveError>) -> bool {
        matches!(result, Err(ResolveError::BadPath(_)))
    }

    #[test]
    fn an_existing_script_runs() {
        let f = fixture();
        assert_eq!(f.resolve("/file.php").unwrap(), f.php("/file.php", None));
        assert_eq!(f.resolve("/index.php").unwrap(), f.front());
    }

    #[test]
    fn text_after_the_script_becomes_path_info() {
        let f = fixture();
        assert_eq!(
            f.resolve("/file.php/a/b").unwrap(),
            f.php("/file.php", Some("/a/b"))
        );
        assert_eq!(
            f.resolve("/file.php/").unwrap(),
            f.php("/file.php", Some("/"))
        );
        assert_eq!(
            f.resolve("/file.php//a%20b/").unwrap(),
            f.php("/file.php", Some("/a b/"))
        );
    }

    #[test]
    fn php_extension_matches_case_insensitively_and_never_serves_source() {
        let f = fixture();
        assert_eq!(f.resolve("/UPPER.PHP").unwrap(), f.php("/UPPER.PHP", None));
        assert_eq!(f.resolve("/legacy.phtml").unwrap(), Resolution::Forbidden);
        assert_eq!(f.resolve("/config.php5").unwrap(), Resolution::Forbidden);
        assert!(is_php_source("db.INC") && is_php_source("x.Php7") && is_php_source("a.phar"));
        assert!(!is_php_source("a.php10") && !is_php_source("style.css") && !is_php_source("inc"));
    }

    #[test]
    fn only_php_is_a_split_point_so_uploads_never_run() {
        let f = fixture();
        // evil.jpg is a file, x.php under it cannot exist: front controller, not evil.jpg.
        assert_eq!(f.resolve("/uploads/evil.jpg/x.php").unwrap(), f.front());
        assert_eq!(f.resolve("/uploads/evil.jpg/x.php/y").unwrap(), f.front());
        assert_eq!(
            f.resolve("/uploads/evil.jpg").unwrap(),
            Resolution::Static {
                file: f.root.join("uploads/evil.jpg")
            }
        );
        // `.php` must end a segment to split there.
        assert_eq!(f.resolve("/file.php.jpg").unwrap(), f.front());
    }

    #[test]
    fn a_directory_named_like_a_script_is_not_run() {
        let f = fixture();
        assert_eq!(
            f.resolve("/a.php/b.php").unwrap(),
            f.php("/a.php/b.php", None)
        );
        assert_eq!(
            f.resolve("/a.php").unwrap(),
            Resolution::RedirectToDir {
                location: "/a.php/".into()
            }
        );
    }

    #[test]
    fn directories_redirect_then_use_their_index_or_the_front_controller() {
        let f = fixture();
        assert_eq!(
            f.resolve("/sub").unwrap(),
            Resolution::RedirectToDir {
                location: "/sub/".into()
            }
        );
        assert_eq!(f.resolve("/sub/").unwrap(), f.php("/sub/index.php", None));
        assert_eq!(f.resolve("/emptydir/").unwrap(), f.front());
        assert_eq!(f.resolve("/").unwrap(), f.front());
        assert_eq!(
            f.resolve("//sub/./").unwrap(),
            f.php("/sub/index.php", None)
        );
    }

    #[test]
    fn redirects_reencode_the_normalised_path() {
        let f = fixture();
        assert_eq!(
            f.resolve("/with%20space").unwrap(),
            Resolution::RedirectToDir {
                location: "/with%20space/".into()
            }
        );
        // `//sub` must not become the protocol-relative `//sub/`.
        assert_eq!(
            f.resolve("//sub").unwrap(),
            Resolution::RedirectToDir {
                location: "/sub/".into()
            }
        );
    }

    #[test]
    fn static_files_are_served_and_unknown_paths_go_to_the_front_controller() {
        let f = fixture();
        assert_eq!(
            f.resolve("/style.css").unwrap(),
            Resolution::Static {
                file: f.root.join("style.css")
            }
        );
        assert_eq!(f.resolve("/course/view").unwrap(), f.front());
        assert_eq!(f.resolve("/style.css/x").unwrap(), f.front());
    }

    #[test]
    fn without_a_front_controller_unknown_paths_are_not_found() {
        let f = fixture();
        fs::remove_file(f.root.join("index.php")).unwrap();
        assert_eq!(f.resolve("/nothing").unwrap(), Resolution::NotFound);
        assert_eq!(f.resolve("/emptydir/").unwrap(), Resolution::NotFound);
    }

    #[test]
    fn dotfiles_are_forbidden_even_when_missing() {
        let f = fixture();
        for path in [
            "/.env",
            "/.git/config",
            "/.git/",
            "/sub/.hidden",
            "/.missing",
            "/%2egit/config",
            "/index.php/.git",
            "/.well-known/.secret",
        ] {
            assert_eq!(f.resolve(path).unwrap(), Resolution::Forbidden, "{path}");
        }
    }

    #[test]
    fn well_known_serves_static_files_only() {
        let f = fixture();
        assert_eq!(
            f.resolve("/.well-known/acme-challenge/token").unwrap(),
            Resolution::Static {
                file: f.root.join(".well-known/acme-challenge/token")
            }
        );
        assert_eq!(
            f.resolve("/.well-known/x.php").unwrap(),
            Resolution::Forbidden
        );
        // Routes the application itself answers still reach the front controller.
        assert_eq!(
            f.resolve("/.well-known/openid-configuration").unwrap(),
            f.front()
        );
    }

    #[test]
    fn dot_dot_inside_the_root_is_resolved() {
        let f = fixture();
        assert_eq!(
            f.resolve("/sub/../file.php").unwrap(),
            f.php("/file.php", None)
        );
        assert_eq!(
            f.resolve("/sub/%2e%2e/file.php").unwrap(),
            f.php("/file.php", None)
        );
    }

    #[test]
    fn climbing_above_the_root_is_a_bad_request() {
        let f = fixture();
        for path in [
            "/..",
            "/../etc/passwd",
            "/sub/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/..%2fetc%2fpasswd",
            "/sub%2f..%2f..%2fetc",
        ] {
            assert!(is_bad_request(f.resolve(path)), "{path}");
        }
    }

    #[test]
    fn encoded_slashes_are_separators() {
        let f = fixture();
        assert_eq!(
            f.resolve("/sub%2findex.php").unwrap(),
            f.php("/sub/index.php", None)
        );
    }

    #[test]
    fn control_bytes_backslashes_and_bad_encodings_are_rejected() {
        let f = fixture();
        for path in [
            "/index.php%0a",
            "/file.php/%0a.php",
            "/index.php%00.jpg",
            "/a%09b",
            "/a%7fb",
            "/a%5c..%5cetc",
            "/a\\b",
            "/%ff",
            "/%c3",
            "/%zz",
            "/%2",
            "relative",
            "*",
        ] {
            assert!(is_bad_request(f.resolve(path)), "{path:?}");
        }
        // Valid UTF-8 is fine.
        assert_eq!(f.resolve("/caf%C3%A9").unwrap(), f.front());
    }

    #[test]
    fn symlinks_leaving_the_root_are_forbidden() {
        let f = fixture();
        assert_eq!(f.resolve("/escape.txt").unwrap(), Resolution::Forbidden);
        assert_eq!(f.resolve("/escape.php").unwrap(), Resolution::Forbidden);
        assert_eq!(
            f.resolve("/escape.php/info").unwrap(),
            Resolution::Forbidden
        );
        assert_eq!(
            f.resolve("/outdir/secret.txt").unwrap(),
            Resolution::Forbidden
        );
        assert_eq!(f.resolve("/outdir").unwrap(), Resolution::Forbidden);
        // A link that stays inside is fine.
        assert_eq!(
            f.resolve("/alias.css").unwrap(),
            Resolution::Static {
                file: f.root.join("alias.css")
            }
        );
    }

    #[test]
    fn a_symlinked_root_is_followed() {
        let f = fixture();
        let link = f.root.parent().unwrap().join("current");
        std::os::unix::fs::symlink(&f.root, &link).unwrap();
        assert_eq!(
            resolve(&link, "index.php", "/file.php").unwrap(),
            Resolution::Php {
                script_name: "/file.php".into(),
                script_path: link.join("file.php"),
                path_info: None,
            }
        );
    }
}
