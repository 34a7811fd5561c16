//! The access line written straight into the log batch: the same bytes
//! tracing-subscriber's default text formatter writes for the access event (a test
//! compares them), without the event machinery (dispatch, `Debug` of every field, the
//! formatter's buffer and its timestamp `write!`s), which cost about as much as the rest
//! of the gateway's own work on a request.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{pending, write_pending, ACCESS_TARGET, BATCH_BYTES, DIRECT_ACCESS};

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
    /// The PHP-FPM server that answered, for PHP requests.
    pub upstream: Option<&'a fcgi_core::Upstream>,
    /// Whether the body was sent to its end.
    pub completed: bool,
    /// What broke mid-response (the line is then a warning).
    pub error: Option<&'a str>,
}

/// Writes an access line straight into the batch when [`init`](super::init)'s text subscriber is the
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
        let _ = write_pending(&mut pending);
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
    if let Some(upstream) = line.upstream {
        write!(out, " upstream={upstream}")?;
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
    use std::io;
    use std::sync::{Arc, Mutex};

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
        let server: fcgi_core::Upstream = fcgi_core::Upstream::Tcp("127.0.0.1:9000".into());
        for (tenant, fpm_us, upstream, completed) in [
            ("bench", Some(1267u64), Some(&server), true),
            ("-", None, None, false),
        ] {
            tracing::info!(
                target: "access",
                tenant,
                method = %method,
                path = %path,
                status = 200u16,
                bytes_out = 13u64,
                duration_us = 1443u64,
                fpm_us,
                upstream = upstream.map(tracing::field::display),
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
            upstream = %fcgi_core::Upstream::Unix("/run/php/fpm.sock".into()),
            completed = false,
            error = %error,
            "request"
        );
    }

    /// The lines tracing-subscriber's default text formatter writes for
    /// [`access_events`], without their timestamps.
    fn formatter_lines() -> Vec<String> {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, access_events);
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
    fn direct_access_lines_are_the_formatters_lines() {
        let method = http::Method::GET;
        let tcp = fcgi_core::Upstream::Tcp("127.0.0.1:9000".into());
        let unix = fcgi_core::Upstream::Unix("/run/php/fpm.sock".into());
        let lines = [
            AccessLine {
                tenant: "bench",
                method: &method,
                path: "/hello.php",
                status: 200,
                bytes_out: 13,
                duration_us: 1443,
                fpm_us: Some(1267),
                upstream: Some(&tcp),
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
                upstream: None,
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
                upstream: Some(&unix),
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
        assert_eq!(direct, formatter_lines());
        assert_eq!(
            direct[0],
            " INFO access: request tenant=\"bench\" method=GET path=/hello.php status=200 \
             bytes_out=13 duration_us=1443 fpm_us=1267 upstream=127.0.0.1:9000 completed=true"
        );
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
