//! Where a server's STDERR goes: whole lines to a caller's sink, with memory bounded.

use std::fmt;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

type LineFn = dyn Fn(&[u8]) + Send + Sync;

/// Receives the server's STDERR one line at a time (without the line end).
#[derive(Clone)]
pub struct StderrSink(Arc<LineFn>);

impl StderrSink {
    /// A sink calling `f` with each line.
    pub fn new(f: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The default sink: each line as a `tracing` warning with target `fcgi_core::stderr`.
    pub fn tracing() -> Self {
        Self::new(|line| {
            tracing::warn!(target: "fcgi_core::stderr", "{}", String::from_utf8_lossy(line));
        })
    }
}

impl fmt::Debug for StderrSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StderrSink")
    }
}

/// A line longer than this is passed on in pieces rather than buffered further.
const MAX_LINE: usize = 8 * 1024;

/// PHP-FPM (7.3 and later, PHP bug #77106) writes a request's log messages to STDERR with
/// no line end, each after the first preceded by `"; "`, and each starting with
/// `"PHP message: "`. That join ends a line as much as `\n` does: without it, every
/// message of a request would reach the sink as one line at the end of the request.
const PHP_SEPARATOR: &[u8] = b"; PHP message: ";
/// The part of [`PHP_SEPARATOR`] that is dropped; the rest starts the next line.
const PHP_SEPARATOR_JOIN: usize = 2;

/// Cuts STDERR chunks into lines for a sink.
#[derive(Debug)]
pub(crate) struct StderrLines {
    sink: StderrSink,
    /// The start of a line whose end has not arrived yet.
    partial: BytesMut,
    /// How much of `partial` was searched for a line end already; what follows may be a
    /// separator cut in two by a chunk boundary.
    scanned: usize,
}

impl StderrLines {
    pub(crate) fn new(sink: Option<StderrSink>) -> Self {
        Self {
            sink: sink.unwrap_or_else(StderrSink::tracing),
            partial: BytesMut::new(),
            scanned: 0,
        }
    }

    pub(crate) fn push(&mut self, chunk: Bytes) {
        self.partial.extend_from_slice(&chunk);
        let buf = &self.partial[..];
        let mut line_start = 0;
        let mut at = self.scanned;
        while at < buf.len() {
            let rest = &buf[at..];
            if rest[0] == b'\n' {
                emit(&self.sink, &buf[line_start..at]);
                at += 1;
                line_start = at;
            } else if rest[0] != b';' {
                at += 1;
            } else if rest.starts_with(PHP_SEPARATOR) {
                emit(&self.sink, &buf[line_start..at]);
                at += PHP_SEPARATOR_JOIN;
                line_start = at;
            } else if PHP_SEPARATOR.starts_with(rest) {
                // Maybe a separator whose end is in the next chunk.
                break;
            } else {
                at += 1;
            }
        }
        self.partial.advance(line_start);
        self.scanned = at - line_start;
        if self.partial.len() >= MAX_LINE {
            self.flush();
        }
    }

    pub(crate) fn flush(&mut self) {
        if !self.partial.is_empty() {
            emit(&self.sink, &self.partial);
            self.partial.clear();
        }
        self.scanned = 0;
    }
}

fn emit(sink: &StderrSink, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.is_empty() {
        (sink.0)(line);
    }
}

impl Drop for StderrLines {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn collecting() -> (StderrSink, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let sink = StderrSink::new(move |l| {
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(l).into_owned())
        });
        (sink, lines)
    }

    #[test]
    fn lines_are_joined_across_chunks() {
        let (sink, lines) = collecting();
        let mut cut = StderrLines::new(Some(sink));
        cut.push(Bytes::from_static(b"first li"));
        cut.push(Bytes::from_static(b"ne\r\nsecond\nthi"));
        cut.push(Bytes::from_static(b"rd"));
        drop(cut);
        assert_eq!(*lines.lock().unwrap(), ["first line", "second", "third"]);
    }

    #[test]
    fn php_fpm_message_joins_end_lines_even_across_chunks() {
        let (sink, lines) = collecting();
        let mut cut = StderrLines::new(Some(sink));
        cut.push(Bytes::from_static(b"PHP message: one; PHP message: two;"));
        cut.push(Bytes::from_static(b" PHP mes"));
        cut.push(Bytes::from_static(b"sage: three; not a join"));
        assert_eq!(
            *lines.lock().unwrap(),
            ["PHP message: one", "PHP message: two"]
        );
        drop(cut);
        assert_eq!(
            *lines.lock().unwrap(),
            [
                "PHP message: one",
                "PHP message: two",
                "PHP message: three; not a join"
            ]
        );
    }

    #[test]
    fn an_endless_line_is_cut_to_bound_memory() {
        let (sink, lines) = collecting();
        let mut cut = StderrLines::new(Some(sink));
        for _ in 0..100 {
            cut.push(Bytes::from(vec![b'x'; 1000]));
        }
        assert!(cut.partial.len() < MAX_LINE);
        assert!(lines.lock().unwrap().len() >= 10);
    }
}
