//! Log set-up: `tracing` to stderr, as text or JSON, filtered by `RUST_LOG`.
//!
//! The access log is one line per request, so its two costs are kept off the request
//! path: its lines are formatted by a direct writer instead of the generic field
//! formatter (the same text, byte for byte), and they are written to stderr in batches
//! rather than with one write(2) each. Every other line is written at once, after any
//! batched lines, so the order of lines is kept.

use std::fmt;
use std::io::{self, IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

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
        builder.event_format(TextFormat::new(ansi)).try_init()
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
        let _ = io::stderr().lock().write_all(&pending);
        pending.clear();
    }
}

/// Whether [`write_access_line`] may bypass the subscriber: set by [`init`] when the
/// subscriber it installed writes uncoloured text. Embedders and tests with their own
/// subscriber get every access line as a `tracing` event.
static DIRECT_ACCESS: AtomicBool = AtomicBool::new(false);

/// One request's access-log fields, in the order of the access event.
#[derive(Debug)]
pub(crate) struct AccessLine<'a> {
    /// The tenant's name, `-` for none.
    pub tenant: &'a str,
    /// The request method.
    pub method: &'a http::Method,
    /// The request path, without the query.
    pub path: &'a str,
    /// The status sent.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Whole request time.
    pub duration_us: u64,
    /// Time in PHP-FPM, for PHP requests.
    pub fpm_us: Option<u64>,
    /// Whether the body was sent to its end.
    pub completed: bool,
    /// What broke mid-response (the line is then a warning).
    pub error: Option<&'a str>,
}

/// Writes an access line straight into the batch when [`init`]'s text subscriber is the
/// one in use, the same bytes its formatter would write, without the event machinery
/// (dispatch, field visiting, the formatter's own buffer): about 3,000 instructions a
/// request. Returns `false` when the caller must emit the `tracing` event instead.
pub(crate) fn write_access_line(line: &AccessLine<'_>) -> bool {
    if !DIRECT_ACCESS.load(Ordering::Relaxed) {
        return false;
    }
    // `RUST_LOG` decides as it does for the event (the bench's "access log off" is
    // `RUST_LOG=warn`).
    let enabled = if line.error.is_some() {
        tracing::enabled!(target: ACCESS_TARGET, tracing::Level::WARN)
    } else {
        tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO)
    };
    if !enabled {
        return true;
    }
    // The formatter would print the span scope; the gateway opens no spans.
    if !tracing::Span::current().is_none() {
        return false;
    }
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return false;
    };
    if now.as_secs() >= MAX_FAST_SECS {
        return false;
    }
    let mut pending = pending();
    let start = pending.len();
    let mut out = ByteWriter(&mut pending);
    if format_access_line(&mut out, line, now).is_err() {
        pending.truncate(start);
        return false;
    }
    if pending.len() >= BATCH_BYTES {
        // Nowhere to report a failing stderr; the lines are dropped either way.
        let _ = io::stderr().lock().write_all(&pending);
        pending.clear();
    }
    true
}

/// The access line as the default text formatter writes the access event, with `now`
/// as its timestamp.
fn format_access_line(
    out: &mut impl fmt::Write,
    line: &AccessLine<'_>,
    now: Duration,
) -> fmt::Result {
    write_timestamp(out, now)?;
    out.write_str(if line.error.is_some() {
        "  WARN access: request tenant="
    } else {
        "  INFO access: request tenant="
    })?;
    write!(out, "{:?}", line.tenant)?;
    out.write_str(" method=")?;
    out.write_str(line.method.as_str())?;
    out.write_str(" path=")?;
    out.write_str(line.path)?;
    out.write_str(" status=")?;
    write_u64(out, line.status.into())?;
    out.write_str(" bytes_out=")?;
    write_u64(out, line.bytes_out)?;
    out.write_str(" duration_us=")?;
    write_u64(out, line.duration_us)?;
    if let Some(fpm_us) = line.fpm_us {
        out.write_str(" fpm_us=")?;
        write_u64(out, fpm_us)?;
    }
    out.write_str(if line.completed {
        " completed=true"
    } else {
        " completed=false"
    })?;
    if let Some(error) = line.error {
        out.write_str(" error=")?;
        out.write_str(error)?;
    }
    out.write_char('\n')
}

/// Decimal digits of `value`.
fn write_u64(out: &mut impl fmt::Write, value: u64) -> fmt::Result {
    let mut digits = [0u8; 20];
    let len = decimal_len(value);
    put_digits(&mut digits[..len], value);
    out.write_str(std::str::from_utf8(&digits[..len]).map_err(|_| fmt::Error)?)
}

/// `fmt::Write` into a byte buffer.
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

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
        let result = io::stderr().lock().write_all(&pending);
        pending.clear();
        if pending.capacity() > 4 * BATCH_BYTES {
            pending.shrink_to(BATCH_BYTES);
        }
        result
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

/// tracing-subscriber's default text format, with a direct path for access lines.
///
/// The generic formatter costs about as much as the rest of the gateway's own work on a
/// request: every field goes through `fmt::Debug` and an (empty, with colours off) ANSI
/// style, and the timestamp through several `write!`s. The access event's fields are
/// plain strings, numbers and booleans, so they are written directly, giving the very
/// same line (a test compares the two). Coloured output and every other event use the
/// default formatter.
#[derive(Debug)]
struct TextFormat {
    inner: format::Format<format::Full, tracing_subscriber::fmt::time::SystemTime>,
    ansi: bool,
}

impl TextFormat {
    fn new(ansi: bool) -> Self {
        Self {
            inner: format::Format::default().with_ansi(ansi),
            ansi,
        }
    }
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // Spans would be printed before the target; the gateway opens none, but an
        // embedder might.
        if self.ansi || meta.target() != ACCESS_TARGET || ctx.lookup_current().is_some() {
            return self.inner.format_event(ctx, writer, event);
        }
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(now) if now.as_secs() < MAX_FAST_SECS => write_timestamp(&mut writer, now)?,
            _ => {
                tracing_subscriber::fmt::time::SystemTime.format_time(&mut writer)?;
            }
        }
        writer.write_str(match *meta.level() {
            tracing::Level::TRACE => " TRACE ",
            tracing::Level::DEBUG => " DEBUG ",
            tracing::Level::INFO => "  INFO ",
            tracing::Level::WARN => "  WARN ",
            tracing::Level::ERROR => " ERROR ",
        })?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = FieldWriter {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// Seconds since the epoch up to the start of year 10000: four-digit years.
const MAX_FAST_SECS: u64 = 253_402_300_800;

/// `2026-11-24T23:35:09.313710Z`, as tracing-subscriber's `SystemTime` timer writes it.
fn write_timestamp(writer: &mut impl fmt::Write, since_epoch: Duration) -> fmt::Result {
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut out[0..4], u64::from(year));
    put_digits(&mut out[5..7], u64::from(month));
    put_digits(&mut out[8..10], u64::from(day));
    put_digits(&mut out[11..13], of_day / 3600);
    put_digits(&mut out[14..16], of_day % 3600 / 60);
    put_digits(&mut out[17..19], of_day % 60);
    put_digits(&mut out[20..26], u64::from(since_epoch.subsec_micros()));
    // Only ASCII digits were written into an ASCII template.
    writer.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
}

/// Writes `value` as decimal into all of `out`, zero-padded (higher digits are cut).
fn put_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// (year, month, day) of a day count since 1970-01-01, in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year as u32, month as u32, day as u32)
}

/// Writes an event's fields as tracing-subscriber's default field formatter does:
/// `message` bare, every other field `name=value` with the value's `Debug` form
/// (a `%` field's `Debug` is its `Display`), separated by spaces.
struct FieldWriter<'w, 'a> {
    writer: &'w mut Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl FieldWriter<'_, '_> {
    /// Starts a field; `None` when it is not printed at all.
    fn start(&mut self, field: &Field) -> Option<&'static str> {
        let name = field.name();
        // Metadata of events from the `log` crate, printed elsewhere.
        if self.result.is_err() || name.starts_with("log.") {
            return None;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        if name == "message" {
            return Some("");
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(name))
            .and_then(|()| self.writer.write_char('='));
        Some(name)
    }
}

impl Visit for FieldWriter<'_, '_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field).is_some() && self.result.is_ok() {
            self.result = write_u64(self.writer, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field).is_some() && self.result.is_ok() {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match self.start(field) {
            Some("") if self.result.is_ok() => self.result = self.writer.write_str(value),
            Some(_) if self.result.is_ok() => self.result = write!(self.writer, "{value:?}"),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field).is_some() && self.result.is_ok() {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

/// Number of decimal digits of `value` (1 for zero).
fn decimal_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 10 {
        value /= 10;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn access_events() {
        let method = http::Method::GET;
        let path = "/hello.php".to_owned();
        let error = "upstream \"closed\"";
        for (tenant, fpm_us, completed) in [("bench", Some(1267u64), true), ("-", None, false)] {
            tracing::info!(
                target: "access",
                tenant,
                method = %method,
                path = %path,
                status = 200u16,
                bytes_out = 13u64,
                duration_us = 1443u64,
                fpm_us,
                completed,
                "request"
            );
        }
        tracing::warn!(
            target: "access",
            tenant = "we\"ird\n",
            method = %method,
            path = %path,
            status = 502u16,
            bytes_out = 0u64,
            duration_us = 0u64,
            fpm_us = u64::MAX,
            completed = false,
            error = %error,
            "request"
        );
    }

    /// The lines, without their timestamps (the two formatters read the clock apart).
    fn lines_with(fast: bool) -> Vec<String> {
        let capture = Capture::default();
        let writer = capture.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone());
        if fast {
            tracing::subscriber::with_default(
                builder.event_format(TextFormat::new(false)).finish(),
                access_events,
            );
        } else {
            tracing::subscriber::with_default(builder.finish(), access_events);
        }
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let (stamp, rest) = line.split_once(' ').unwrap();
                assert_eq!(stamp.len(), "2026-11-24T23:35:09.313710Z".len(), "{line}");
                rest.to_owned()
            })
            .collect()
    }

    #[test]
    fn access_lines_are_written_exactly_as_the_default_formatter_writes_them() {
        let fast = lines_with(true);
        assert_eq!(fast.len(), 3);
        assert_eq!(fast, lines_with(false));
        assert_eq!(
            fast[0],
            " INFO access: request tenant=\"bench\" method=GET path=/hello.php status=200 \
             bytes_out=13 duration_us=1443 fpm_us=1267 completed=true"
        );
    }

    #[test]
    fn direct_access_lines_are_the_formatters_lines() {
        let method = http::Method::GET;
        let lines = [
            AccessLine {
                tenant: "bench",
                method: &method,
                path: "/hello.php",
                status: 200,
                bytes_out: 13,
                duration_us: 1443,
                fpm_us: Some(1267),
                completed: true,
                error: None,
            },
            AccessLine {
                tenant: "-",
                method: &method,
                path: "/hello.php",
                status: 200,
                bytes_out: 13,
                duration_us: 1443,
                fpm_us: None,
                completed: false,
                error: None,
            },
            AccessLine {
                tenant: "we\"ird\n",
                method: &method,
                path: "/hello.php",
                status: 502,
                bytes_out: 0,
                duration_us: 0,
                fpm_us: Some(u64::MAX),
                completed: false,
                error: Some("upstream \"closed\""),
            },
        ];
        let direct: Vec<String> = lines
            .iter()
            .map(|line| {
                let mut out = String::new();
                format_access_line(&mut out, line, Duration::ZERO).unwrap();
                let line = out.strip_suffix('\n').unwrap();
                line.split_once(' ').unwrap().1.to_owned()
            })
            .collect();
        // `access_events` emits these three lines as events.
        assert_eq!(direct, lines_with(false));
    }

    #[test]
    fn timestamps_match_the_default_timer() {
        let mut out = String::new();
        write_timestamp(&mut out, Duration::new(1_795_563_309, 313_710_999)).unwrap();
        assert_eq!(out, "2026-11-24T23:35:09.313710Z");
        out.clear();
        write_timestamp(&mut out, Duration::ZERO).unwrap();
        assert_eq!(out, "1970-01-01T00:00:00.000000Z");
        out.clear();
        // A leap day, and the last second of a leap year.
        write_timestamp(&mut out, Duration::from_secs(951_782_400)).unwrap();
        assert_eq!(out, "2000-02-29T00:00:00.000000Z");
        out.clear();
        write_timestamp(&mut out, Duration::from_secs(1_735_689_599)).unwrap();
        assert_eq!(out, "2024-12-31T23:59:59.000000Z");
    }

    #[test]
    fn numbers_are_written_in_full() {
        for value in [0, 9, 10, 99, 100, 12_345, u64::MAX] {
            let mut digits = [0u8; 20];
            let len = decimal_len(value);
            put_digits(&mut digits[..len], value);
            assert_eq!(
                std::str::from_utf8(&digits[..len]).unwrap(),
                value.to_string()
            );
        }
    }
}
