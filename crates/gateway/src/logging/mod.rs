//! Log set-up: `tracing` to stderr, as text or JSON, filtered by `RUST_LOG`.
//!
//! The access log is one line per request, so its two costs are kept off the request
//! path: its lines are formatted by a direct writer instead of the generic field
//! formatter (the same text, byte for byte), and they are written to stderr in batches
//! rather than with one write(2) each. Every other line is written at once, after any
//! batched lines, so the order of lines is kept.

mod access_line;

use std::io::{self, IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

pub(crate) use access_line::{write_access_line, AccessLine};

/// The target of access-log events (see [`crate::access`]).
pub const ACCESS_TARGET: &str = "access";

/// Batched access lines are written once this many bytes are waiting.
const BATCH_BYTES: usize = 32 * 1024;

/// Batched access lines are written at least this often, so a quiet gateway's log is
/// never far behind.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Installs the global subscriber. `RUST_LOG` overrides the default level (info).
///
/// Text is coloured only on a terminal (and without `NO_COLOR`): a log file or journald
/// would keep the escape codes, and writing them is over a third of the cost of an
/// access-log line.
///
/// Access lines are batched (see the module doc): call [`flush`] before the process exits.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = std::io::stderr().is_terminal() && !no_color;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(StderrSink);
    // A second init (tests, embedders) keeps the first subscriber.
    let installed = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if installed.is_ok() {
        // The default text format without colours is what `write_access_line` writes.
        DIRECT_ACCESS.store(!json && !ansi, Ordering::Relaxed);
        // Without this thread a batch would wait for the next lines to fill it.
        let _ = std::thread::Builder::new()
            .name("log-flush".to_owned())
            .spawn(|| loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flush();
            });
    }
}

/// Writes out any batched access-log lines now.
pub fn flush() {
    let mut pending = pending();
    if !pending.is_empty() {
        // Nowhere to report a failing stderr; the lines are dropped either way.
        let _ = write_pending(&mut pending);
    }
}

/// Writes the waiting lines to stderr in one write and empties the batch.
fn write_pending(pending: &mut Vec<u8>) -> io::Result<()> {
    let result = io::stderr().lock().write_all(pending);
    pending.clear();
    // A burst of long lines must not keep a large buffer for good.
    if pending.capacity() > 4 * BATCH_BYTES {
        pending.shrink_to(BATCH_BYTES);
    }
    result
}

/// Whether [`write_access_line`] may bypass the subscriber: set by [`init`] when the
/// subscriber it installed writes uncoloured text. Embedders and tests with their own
/// subscriber get every access line as a `tracing` event.
static DIRECT_ACCESS: AtomicBool = AtomicBool::new(false);

/// Access lines not written yet. Shared by all threads: the lock is held for a copy of
/// one line, except when a batch is written.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn pending() -> MutexGuard<'static, Vec<u8>> {
    // A panic while holding it leaves at worst a partial line: keep logging.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// The log's writer: stderr, with access lines batched.
#[derive(Debug, Clone, Copy)]
struct StderrSink;

/// Writes one formatted line (the fmt layer writes each line with one `write_all`).
#[derive(Debug)]
struct SinkWriter {
    batch: bool,
}

impl io::Write for SinkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let mut pending = pending();
        pending.extend_from_slice(data);
        if self.batch && pending.len() < BATCH_BYTES {
            return Ok(());
        }
        // Waiting lines go first, in the same write(2) as this one.
        write_pending(&mut pending)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for StderrSink {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter { batch: false }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SinkWriter {
        SinkWriter {
            batch: meta.target() == ACCESS_TARGET,
        }
    }
}
