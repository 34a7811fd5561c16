//! Which script (or static file) a request path maps to: nginx's
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

/// Where a request path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
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
pub enum ScriptError {
    /// The path is malformed or hostile (answer 400).
    #[error("bad request path: {0}")]
    BadRequest(&'static str),
    /// The filesystem failed in an unexpected way (answer 500).
    #[error("cannot resolve the request path: {0}")]
    Io(#[from] io::Error),
}

/// Maps `raw_path` (the URI path, still percent-encoded) to what should answer it.
///
/// `root` is the document root on this machine; `index` the directory index and front
/// controller (`index.php`). The root is looked up afresh on each call, never cached, so
/// a deploy that swaps a `current -> releases/N` symlink is followed immediately.
pub fn resolve(root: &Path, index: &str, raw_path: &str) -> Result<Resolution, ScriptError> {
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

/// A decoded, normalised request path: no empty, `.` or `..` segments.
struct RequestPath {
    /// `/name/name...`, each name a segment; empty for the root. The prefixes the
    /// resolver needs (script name, file system path) are slices of it, so parsing
    /// allocates this one buffer.
    path: String,
    /// Where the first segment ending in `.php` ends in `path`: the one split point
    /// between a script and its `PATH_INFO`.
    php_end: Option<usize>,
    /// Whether the path named a directory (`/dir/`, or ended in `/.` or `/..`).
    trailing_slash: bool,
    /// Starts with `/.well-known/`, the one dot directory served (static files only).
    well_known: bool,
}

enum Parsed {
    Path(RequestPath),
    Forbidden,
}

impl RequestPath {
    fn parse(raw: &str) -> Result<Parsed, ScriptError> {
        if !raw.starts_with('/') {
            return Err(ScriptError::BadRequest("the path does not start with '/'"));
        }
        let mut decoded = percent_decode(raw.as_bytes())?;
        // A decoded control byte is how CVE-2019-11043 (%0a) broke PHP-FPM's path
        // splitting; a backslash is a separator on some filesystems and to some PHP code.
        if decoded.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\') {
            return Err(ScriptError::BadRequest(
                "the path contains a control character or a backslash",
            ));
        }
        // The whole path, before `..` may drop a part of it.
        if std::str::from_utf8(&decoded).is_err() {
            return Err(ScriptError::BadRequest("the path is not valid UTF-8"));
        }
        // `%2f` was decoded above, so it separates segments like `/` does: it cannot
        // hide a `..` from this walk.
        let trailing_slash = normalize(&mut decoded)?;
        // Cut at `/` only, so still UTF-8.
        let path = String::from_utf8(decoded)
            .map_err(|_| ScriptError::BadRequest("the path is not valid UTF-8"))?;
        let mut well_known = false;
        let mut php_end = None;
        let mut end = 0;
        for (position, segment) in segments(&path).enumerate() {
            end += 1 + segment.len();
            if segment.starts_with('.') {
                if position == 0 && segment == ".well-known" {
                    well_known = true;
                } else {
                    return Ok(Parsed::Forbidden);
                }
            }
            if php_end.is_none() && ends_with_php(segment) {
                php_end = Some(end);
            }
        }
        Ok(Parsed::Path(RequestPath {
            path,
            php_end,
            trailing_slash,
            well_known,
        }))
    }

    /// The last segment (empty for the root).
    fn last_segment(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    /// `/` + the segments that end at byte `end` of the path.
    fn url_prefix(&self, end: usize) -> String {
        match &self.path[..end] {
            "" => "/".to_owned(),
            prefix => prefix.to_owned(),
        }
    }

    /// The path from byte `end` on, with the trailing slash kept; `None` when nothing
    /// follows.
    fn rest_after(&self, end: usize) -> Option<String> {
        let rest = &self.path[end..];
        let slash = if self.trailing_slash { "/" } else { "" };
        (!rest.is_empty() || self.trailing_slash).then(|| [rest, slash].concat())
    }

    /// The segments that end at byte `end` of the path, as a path below the root.
    fn fs_path(&self, root: &Path, end: usize) -> PathBuf {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let prefix = &self.path[..end];
        if prefix.is_empty() {
            return root.to_path_buf();
        }
        let root = root.as_os_str().as_bytes();
        let root = root.strip_suffix(b"/").unwrap_or(root);
        let mut bytes = Vec::with_capacity(root.len() + prefix.len());
        bytes.extend_from_slice(root);
        bytes.extend_from_slice(prefix.as_bytes());
        PathBuf::from(std::ffi::OsString::from_vec(bytes))
    }
}

/// The segments of a normalised path (`/a/b`: `a`, `b`; empty: none).
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').skip(1)
}

/// Normalises a decoded path that starts with `/`, in place, to `/name/name...` without
/// empty, `.` or `..` names (empty for the root). Returns whether the path named a
/// directory (ended in `/`, `/.` or `/..`).
fn normalize(path: &mut Vec<u8>) -> Result<bool, ScriptError> {
    let len = path.len();
    // `path[..kept]` is the normalised path so far; it never overtakes the reading.
    let mut kept = 0;
    let mut trailing_slash = false;
    let mut at = 0; // at a `/`
    while at < len {
        let start = at + 1;
        let end = path[start..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(len, |p| start + p);
        match &path[start..end] {
            b"" | b"." => trailing_slash = true,
            b".." => {
                trailing_slash = true;
                if kept == 0 {
                    return Err(ScriptError::BadRequest("the path climbs above the root"));
                }
                kept = path[..kept].iter().rposition(|&b| b == b'/').unwrap_or(0);
            }
            _ => {
                trailing_slash = false;
                path.copy_within(at..end, kept);
                kept += end - at;
            }
        }
        at = end;
    }
    path.truncate(kept);
    Ok(trailing_slash)
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
    fn resolve(&self, path: &RequestPath) -> Result<Resolution, ScriptError> {
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
    ) -> Result<Resolution, ScriptError> {
        if in_well_known || !self.inside_root(&script_path, leaf)? {
            return Ok(Resolution::Forbidden);
        }
        Ok(Resolution::Php {
            script_name,
            script_path,
            path_info: path_info(),
        })
    }

    fn front_controller(&self) -> Result<Resolution, ScriptError> {
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
    fn entry(&self, path: &Path) -> Result<(Entry, Leaf), ScriptError> {
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
    fn inside_root(&self, path: &Path, leaf: Leaf) -> Result<bool, ScriptError> {
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
fn classify(err: io::Error) -> Result<Entry, ScriptError> {
    match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Ok(Entry::Absent),
        io::ErrorKind::PermissionDenied => Ok(Entry::Denied),
        // A name too long for the filesystem cannot exist; let the front controller
        // answer, as for any unknown path.
        _ if err.raw_os_error() == Some(libc::ENAMETOOLONG) => Ok(Entry::Absent),
        // A symlink loop is a broken link someone made on purpose or by mistake.
        _ if err.raw_os_error() == Some(libc::ELOOP) => Ok(Entry::Denied),
        _ => Err(ScriptError::Io(err)),
    }
}

/// `.php` at the end of a segment, ASCII case-insensitively (`X.PHP` runs as PHP rather
/// than being served as source). A bare `.php` never gets here: dot segments are
/// refused first.
fn ends_with_php(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    bytes.len() > 4 && bytes[bytes.len() - 4..].eq_ignore_ascii_case(b".php")
}

/// Other extensions PHP may be configured to run (and `.inc`, the classic name for
/// included PHP): their source is never served, since it usually holds credentials or
/// logic the site did not mean to publish.
fn is_php_source(name: &str) -> bool {
    let Some((_, ext)) = name.rsplit_once('.') else {
        return false;
    };
    let ext = ext.as_bytes();
    ["phtml", "pht", "phar", "phps", "inc"]
        .iter()
        .any(|source| ext.eq_ignore_ascii_case(source.as_bytes()))
        || (ext.len() == 4 && ext[..3].eq_ignore_ascii_case(b"php") && ext[3].is_ascii_digit())
}

fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, ScriptError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = |b: Option<&u8>| match b {
            Some(b) => (*b as char).to_digit(16),
            None => None,
        };
        match (hex(bytes.next()), hex(bytes.next())) {
            (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
            _ => return Err(ScriptError::BadRequest("malformed percent-encoding")),
        }
    }
    Ok(out)
}

/// Percent-encodes a decoded path for a `Location` header: keeps `/` and the characters
/// RFC 3986 allows unescaped in a path segment, encodes everything else.
fn percent_encode_path(path: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        if keep {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
    out
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
        fn resolve(&self, raw: &str) -> Result<Resolution, ScriptError> {
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

    fn is_bad_request(result: Result<Resolution, ScriptError>) -> bool {
        matches!(result, Err(ScriptError::BadRequest(_)))
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

    /// The segment-stack walk `normalize` replaces: segments as owned strings.
    fn normalize_by_stack(path: &str) -> Option<(Vec<String>, bool)> {
        let mut segments: Vec<String> = Vec::new();
        let mut trailing_slash = false;
        for segment in path.split('/') {
            trailing_slash = matches!(segment, "" | "." | "..");
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop()?;
                }
                _ => segments.push(segment.to_owned()),
            }
        }
        Some((segments, trailing_slash))
    }

    #[test]
    fn normalising_in_place_agrees_with_a_segment_stack() {
        let names = ["", ".", "..", "a", "b.php", "..c", "é"];
        let mut paths = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| names.iter().map(move |n| format!("{p}/{n}")))
                .collect();
            paths.extend(longer);
        }
        paths.retain(|p| !p.is_empty());
        assert!(paths.len() > 2000);
        for raw in &paths {
            let mut bytes = raw.clone().into_bytes();
            let ours = normalize(&mut bytes).ok().map(|trailing| {
                let path = String::from_utf8(bytes).unwrap();
                (
                    segments(&path).map(str::to_owned).collect::<Vec<_>>(),
                    trailing,
                )
            });
            assert_eq!(ours, normalize_by_stack(raw), "{raw:?}");
        }
    }

    #[test]
    fn percent_encoding_round_trips_reserved_bytes() {
        assert_eq!(
            percent_encode_path("/a b/c?d#e%f/é"),
            "/a%20b/c%3Fd%23e%25f/%C3%A9"
        );
        assert_eq!(percent_decode(b"/a%20b%2F").unwrap(), b"/a b/");
    }
}
