//! The request path, parsed: percent-decoded, checked and normalised, with the split
//! points the resolver needs. Pure, no filesystem access, so every hostile path is
//! refused here and the parser can be fuzzed on its own; [`crate::resolve`] then looks
//! the result up on disk.

use std::path::{Path, PathBuf};

/// A path that is malformed or hostile: the answer is 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad request path: {0}")]
pub(crate) struct BadPath(pub &'static str);

/// A decoded, normalised request path: no empty, `.` or `..` segments.
pub(crate) struct RequestPath {
    /// `/name/name...`, each name a segment; empty for the root. The prefixes the
    /// resolver needs (script name, file system path) are slices of it, so parsing
    /// allocates this one buffer.
    pub(crate) path: String,
    /// Where the first segment ending in `.php` ends in `path`: the one split point
    /// between a script and its `PATH_INFO`.
    pub(crate) php_end: Option<usize>,
    /// Whether the path named a directory (`/dir/`, or ended in `/.` or `/..`).
    pub(crate) trailing_slash: bool,
    /// Starts with `/.well-known/`, the one dot directory served (static files only).
    pub(crate) well_known: bool,
}

pub(crate) enum Parsed {
    Path(RequestPath),
    Forbidden,
}

impl RequestPath {
    pub(crate) fn parse(raw: &str) -> Result<Parsed, BadPath> {
        if !raw.starts_with('/') {
            return Err(BadPath("the path does not start with '/'"));
        }
        let mut decoded = percent_decode(raw.as_bytes())?;
        // A decoded control byte is how CVE-2019-11043 (%0a) broke PHP-FPM's path
        // splitting; a backslash is a separator on some filesystems and to some PHP code.
        if decoded.iter().any(|&b| b < 0x20 || b == 0x7f || b == b'\\') {
            return Err(BadPath(
                "the path contains a control character or a backslash",
            ));
        }
        // The whole path, before `..` may drop a part of it.
        if std::str::from_utf8(&decoded).is_err() {
            return Err(BadPath("the path is not valid UTF-8"));
        }
        // `%2f` was decoded above, so it separates segments like `/` does: it cannot
        // hide a `..` from this walk.
        let trailing_slash = normalize(&mut decoded)?;
        // Cut at `/` only, so still UTF-8.
        let path =
            String::from_utf8(decoded).map_err(|_| BadPath("the path is not valid UTF-8"))?;
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
    pub(crate) fn last_segment(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    /// `/` + the segments that end at byte `end` of the path.
    pub(crate) fn url_prefix(&self, end: usize) -> String {
        match &self.path[..end] {
            "" => "/".to_owned(),
            prefix => prefix.to_owned(),
        }
    }

    /// The path from byte `end` on, with the trailing slash kept; `None` when nothing
    /// follows.
    pub(crate) fn rest_after(&self, end: usize) -> Option<String> {
        let rest = &self.path[end..];
        let slash = if self.trailing_slash { "/" } else { "" };
        (!rest.is_empty() || self.trailing_slash).then(|| [rest, slash].concat())
    }

    /// The segments that end at byte `end` of the path, as a path below the root.
    pub(crate) fn fs_path(&self, root: &Path, end: usize) -> PathBuf {
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
pub(crate) fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').skip(1)
}

/// Normalises a decoded path that starts with `/`, in place, to `/name/name...` without
/// empty, `.` or `..` names (empty for the root). Returns whether the path named a
/// directory (ended in `/`, `/.` or `/..`).
fn normalize(path: &mut Vec<u8>) -> Result<bool, BadPath> {
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
                    return Err(BadPath("the path climbs above the root"));
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

/// `.php` at the end of a segment, ASCII case-insensitively (`X.PHP` runs as PHP rather
/// than being served as source). A bare `.php` never gets here: dot segments are
/// refused first.
pub(crate) fn ends_with_php(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    bytes.len() > 4 && bytes[bytes.len() - 4..].eq_ignore_ascii_case(b".php")
}

/// Other extensions PHP may be configured to run (and `.inc`, the classic name for
/// included PHP): their source is never served, since it usually holds credentials or
/// logic the site did not mean to publish.
pub(crate) fn is_php_source(name: &str) -> bool {
    let Some((_, ext)) = name.rsplit_once('.') else {
        return false;
    };
    let ext = ext.as_bytes();
    ["phtml", "pht", "phar", "phps", "inc"]
        .iter()
        .any(|source| ext.eq_ignore_ascii_case(source.as_bytes()))
        || (ext.len() == 4 && ext[..3].eq_ignore_ascii_case(b"php") && ext[3].is_ascii_digit())
}

pub(crate) fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, BadPath> {
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
            _ => return Err(BadPath("malformed percent-encoding")),
        }
    }
    Ok(out)
}

/// Percent-encodes a decoded path for a `Location` header: keeps `/` and the characters
/// RFC 3986 allows unescaped in a path segment, encodes everything else.
pub(crate) fn percent_encode_path(path: &str) -> String {
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
