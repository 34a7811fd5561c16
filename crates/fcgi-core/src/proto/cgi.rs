//! The CGI response head that PHP writes at the start of STDOUT: header lines ended by an
//! empty line, with `Status:` giving the status code.
//!
//! Lines may end in LF or CRLF; repeated headers (two `Set-Cookie`) stay apart.

use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{HeaderMap, StatusCode};

/// Where the head ends in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadEnd {
    /// Length of the header lines (without the empty line).
    pub head_len: usize,
    /// Where the body starts.
    pub body_start: usize,
}

/// Finds the empty line that ends the head: `\n\n`, `\r\n\r\n`, or a mix of both.
pub fn find_head_end(buf: &[u8]) -> Option<HeadEnd> {
    find_head_end_from(buf, 0)
}

/// Like [`find_head_end`], but only looks at line ends at or after `from`: for a head that
/// arrives in pieces. When the first `n` bytes held no empty line, searching the grown
/// buffer from `n.saturating_sub(3)` finds the same end as searching it all.
pub fn find_head_end_from(buf: &[u8], from: usize) -> Option<HeadEnd> {
    if from == 0 {
        // An empty head (the body starts at once) is a valid, if odd, response. No line end
        // comes before it, so the scan below cannot see it: check it here, and not only in
        // `find_head_end`, because a `\r\n` head can arrive as `\r` then `\n`.
        if buf.starts_with(b"\r\n") {
            return Some(HeadEnd {
                head_len: 0,
                body_start: 2,
            });
        }
        if buf.starts_with(b"\n") {
            return Some(HeadEnd {
                head_len: 0,
                body_start: 1,
            });
        }
    }
    let mut from = from;
    while let Some(pos) = memchr_newline(buf.get(from..)?) {
        let nl = from + pos;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some(HeadEnd {
                head_len: nl + 1,
                body_start: nl + 2,
            });
        }
        if rest.starts_with(b"\r\n") {
            return Some(HeadEnd {
                head_len: nl + 1,
                body_start: nl + 3,
            });
        }
        from = nl + 1;
    }
    None
}

#[inline]
fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// A parsed CGI response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiHead {
    /// From `Status:`; 302 when only `Location:` is given; 200 otherwise.
    pub status: StatusCode,
    /// Every other header, in order, repeated ones kept apart.
    pub headers: HeaderMap,
}

/// Why a CGI head was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgiError {
    /// A line that is not `Name: value`.
    #[error("malformed CGI header line {line:?}")]
    MalformedLine {
        /// The line, cut to 64 bytes.
        line: String,
    },
    /// A header name or value with bytes HTTP does not allow.
    #[error("invalid CGI header {name:?}")]
    InvalidHeader {
        /// The name, cut to 64 bytes.
        name: String,
    },
    /// A `Status:` that is not a three-digit code.
    #[error("invalid CGI Status {value:?}")]
    InvalidStatus {
        /// The value, cut to 64 bytes.
        value: String,
    },
}

fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned()
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

/// Parses the header lines of a CGI head (the bytes before the empty line).
pub fn parse_head(head: &[u8]) -> Result<CgiHead, CgiError> {
    let mut status = None;
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| CgiError::MalformedLine { line: shown(line) })?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"status") {
            status = Some(parse_status(value)?);
            continue;
        }
        let header_name = HeaderName::from_bytes(name)
            .map_err(|_| CgiError::InvalidHeader { name: shown(name) })?;
        let header_value = HeaderValue::from_bytes(value)
            .map_err(|_| CgiError::InvalidHeader { name: shown(name) })?;
        headers.append(header_name, header_value);
    }
    let status = match status {
        Some(status) => status,
        None if headers.contains_key(LOCATION) => StatusCode::FOUND,
        None => StatusCode::OK,
    };
    Ok(CgiHead { status, headers })
}

fn parse_status(value: &[u8]) -> Result<StatusCode, CgiError> {
    let code = value
        .get(..3)
        .filter(|_| value.get(3).is_none_or(|&b| b == b' '));
    code.and_then(|code| StatusCode::from_bytes(code).ok())
        .ok_or_else(|| CgiError::InvalidStatus {
            value: shown(value),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_sets_the_code() {
        let head = parse_head(b"Status: 404 Not Found\r\nContent-Type: text/html\r\n").unwrap();
        assert_eq!(head.status, StatusCode::NOT_FOUND);
        assert_eq!(head.headers["content-type"], "text/html");
        assert!(!head.headers.contains_key("status"));
    }

    #[test]
    fn location_without_status_is_a_302() {
        let head = parse_head(b"Location: /elsewhere\n").unwrap();
        assert_eq!(head.status, StatusCode::FOUND);
        let head = parse_head(b"Status: 301\nLocation: /x\n").unwrap();
        assert_eq!(head.status, StatusCode::MOVED_PERMANENTLY);
    }

    #[test]
    fn repeated_headers_stay_apart() {
        let head = parse_head(b"Set-Cookie: a=1\nSet-Cookie: b=2\n").unwrap();
        let cookies: Vec<_> = head.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }

    #[test]
    fn the_head_ends_at_the_first_empty_line_whatever_the_line_ends() {
        assert_eq!(
            find_head_end(b"A: 1\r\n\r\nbody"),
            Some(HeadEnd {
                head_len: 6,
                body_start: 8
            })
        );
        assert_eq!(
            find_head_end(b"A: 1\n\nbody"),
            Some(HeadEnd {
                head_len: 5,
                body_start: 6
            })
        );
        assert_eq!(
            find_head_end(b"A: 1\n\r\nbody"),
            Some(HeadEnd {
                head_len: 5,
                body_start: 7
            })
        );
        assert_eq!(find_head_end(b"A: 1\r\nB: 2\r\n"), None);
        assert_eq!(
            find_head_end(b"\r\nbody"),
            Some(HeadEnd {
                head_len: 0,
                body_start: 2
            })
        );
    }

    #[test]
    fn a_search_from_zero_sees_an_empty_head() {
        // A response decoder that got `\r` first searches `\r\n...` again from 0.
        assert_eq!(
            find_head_end_from(b"\r\nbody", 0),
            Some(HeadEnd {
                head_len: 0,
                body_start: 2
            })
        );
        assert_eq!(find_head_end_from(b"\nbody", 0), find_head_end(b"\nbody"));
        // From anywhere else, only line ends count.
        assert_eq!(find_head_end_from(b"\r\nbody", 1), None);
    }

    #[test]
    fn malformed_lines_and_statuses_are_errors() {
        assert!(matches!(
            parse_head(b"no colon here\n"),
            Err(CgiError::MalformedLine { .. })
        ));
        assert!(matches!(
            parse_head(b"Status: abc\n"),
            Err(CgiError::InvalidStatus { .. })
        ));
        assert!(matches!(
            parse_head(b"Status: 20\n"),
            Err(CgiError::InvalidStatus { .. })
        ));
        assert!(matches!(
            parse_head(b"Status: 2000\n"),
            Err(CgiError::InvalidStatus { .. })
        ));
        assert!(matches!(
            parse_head(b"Bad Name: x\n"),
            Err(CgiError::InvalidHeader { .. })
        ));
    }

    #[test]
    fn values_are_trimmed() {
        let head = parse_head(b"X-A:   spaced \t\r\n").unwrap();
        assert_eq!(head.headers["x-a"], "spaced");
    }
}
