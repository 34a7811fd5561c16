//! A capture of the gateway's `tracing` output, per test thread, in the text and JSON
//! formats an operator reads.

use std::io;
use std::sync::{Arc, Mutex};

/// Everything the gateway logs on one thread while installed, as the formatted lines the
/// operator would read. Cheap to clone; clones share the buffer.
///
/// One global subscriber (installed on first use) formats every event twice, as text and
/// as JSON, and hands each line to the capture installed on the emitting thread, if any.
/// Per-test scoped subscribers (`tracing::subscriber::set_default`) would be simpler, but
/// tracing caches per call site whether anyone listens: a call site first reached on a
/// thread without a subscriber, while another test installs one, can stay muted for good.
/// With a single subscriber that always listens, there is nothing to race.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

/// Which rendering a capture wants.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

thread_local! {
    static THREAD_CAPTURE: std::cell::RefCell<Option<(LogFormat, LogCapture)>> =
        const { std::cell::RefCell::new(None) };
}

/// Uninstalls a capture when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        THREAD_CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

impl LogCapture {
    /// Captures, as text, every event (down to TRACE) emitted on this thread until the
    /// guard drops. Tests that use it run on a current-thread runtime, so the gateway's
    /// tasks, which are spawned onto that runtime, log on this thread too.
    pub fn install_text(&self) -> CaptureGuard {
        self.install(LogFormat::Text)
    }

    /// As [`LogCapture::install_text`], in the JSON format of `gateway::logging::init(true)`.
    pub fn install_json(&self) -> CaptureGuard {
        self.install(LogFormat::Json)
    }

    fn install(&self, format: LogFormat) -> CaptureGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let subscriber = tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(ThreadWriter(LogFormat::Text)),
                )
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_writer(ThreadWriter(LogFormat::Json)),
                )
                .with(tracing_subscriber::filter::LevelFilter::TRACE);
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the test binary");
        });
        THREAD_CAPTURE.with(|capture| *capture.borrow_mut() = Some((format, self.clone())));
        CaptureGuard(())
    }

    /// Everything every thread of this test binary logs (down to TRACE), as text, from
    /// the first call on. For a binary whose tests need not tell their lines apart; it
    /// installs its own global subscriber, so a binary uses either this or the
    /// per-thread [`install_text`](Self::install_text) / [`install_json`](Self::install_json).
    pub fn global() -> &'static LogCapture {
        static CAPTURE: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();
        CAPTURE.get_or_init(|| {
            let capture = LogCapture::default();
            let writer = capture.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the test binary");
            capture
        })
    }

    /// The captured lines so far.
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hands a formatted line to the emitting thread's capture of its format, or drops it.
struct ThreadWriter(LogFormat);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadWriter {
    type Writer = Box<dyn io::Write>;

    fn make_writer(&'a self) -> Self::Writer {
        let capture = THREAD_CAPTURE.with(|capture| match &*capture.borrow() {
            Some((format, capture)) if *format == self.0 => Some(capture.clone()),
            _ => None,
        });
        match capture {
            Some(capture) => Box::new(capture),
            None => Box::new(io::sink()),
        }
    }
}
