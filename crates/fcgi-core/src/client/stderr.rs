//! Where a server's STDERR goes: whole lines to a caller's sink, with memory bounded.

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

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

/// Cuts STDERR chunks into lines for a sink.
#[derive(Debug)]
pub(crate) struct StderrLines {
    sink: StderrSink,
    /// The start of a line whose end has not arrived yet.
    partial: BytesMut,
}

impl StderrLines {
    pub(crate) fn new(sink: Option<StderrSink>) -> Self {
        Self {
            sink: sink.unwrap_or_else(StderrSink::tracing),
            partial: BytesMut::new(),
        }
    }

    pub(crate) fn push(&mut self, chunk: Bytes) {
        let mut rest = &chunk[..];
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let line = &rest[..nl];
            if self.partial.is_empty() {
                self.emit(line);
            } else {
                self.partial.extend_from_slice(line);
                let whole = std::mem::take(&mut self.partial);
                self.emit(&whole);
            }
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() >= MAX_LINE {
            let whole = std::mem::take(&mut self.partial);
            self.emit(&whole);
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            (self.sink.0)(line);
        }
    }

    pub(crate) fn flush(&mut self) {
        if !self.partial.is_empty() {
            let whole = std::mem::take(&mut self.partial);
            self.emit(&whole);
        }
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
