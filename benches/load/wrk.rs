//! Driving `wrk` and reading its report: requests/s, latency percentiles, socket errors
//! and non-2xx/3xx answers.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One `wrk` run: what to hit and how hard.
#[derive(Debug, Clone)]
pub struct WrkRun {
    /// `http://127.0.0.1:PORT/path`.
    pub url: String,
    /// The `Host` header to send (selects the tenant).
    pub host: String,
    /// Open connections (`-c`).
    pub connections: usize,
    /// Run time (`-d`).
    pub duration: Duration,
    /// A request slower than this counts as a timeout error (`--timeout`).
    pub timeout: Duration,
    /// More request headers (`Accept-Encoding: gzip`).
    pub headers: Vec<String>,
}

/// What `wrk --latency` reported.
#[derive(Debug, Clone, Default)]
pub struct WrkReport {
    /// Completed requests.
    pub requests: u64,
    /// `Requests/sec`.
    pub rps: f64,
    /// Latency percentiles, in milliseconds.
    pub p50_ms: f64,
    /// 75th percentile.
    pub p75_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// Socket errors: connect + read + write + timeout.
    pub socket_errors: u64,
    /// Of which timeouts.
    pub timeouts: u64,
    /// Answers with a status of 400 or more (wrk's "Non-2xx or 3xx responses").
    pub non_2xx: u64,
    /// Bytes received, headers included (wrk's "... read", to its 2-digit precision).
    pub bytes_read: f64,
}

impl WrkReport {
    /// Requests that did not succeed: socket errors plus error statuses.
    pub fn failures(&self) -> u64 {
        self.socket_errors + self.non_2xx
    }
}

impl WrkRun {
    /// Starts wrk (one thread, as in the targets) in the background.
    pub fn spawn(&self) -> Child {
        Command::new("wrk")
            .arg("-t1")
            .arg(format!("-c{}", self.connections))
            .arg(format!(
                "-d{}s",
                self.duration.as_secs_f64().ceil().max(1.0)
            ))
            .arg(format!("--timeout={}s", self.timeout.as_secs().max(1)))
            .arg("--latency")
            .arg("-H")
            .arg(format!("Host: {}", self.host))
            .args(self.headers.iter().flat_map(|h| ["-H", h.as_str()]))
            .arg(&self.url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start wrk (is it installed? apt-get install wrk)")
    }
    /// Runs the same load for `duration` and drops the report: a warm-up before the
    /// measured runs (connections opened, PHP-FPM workers and caches warm).
    pub fn warm_up(&self, duration: Duration) {
        WrkRun {
            duration,
            ..self.clone()
        }
        .run();
    }

    /// Runs wrk to its end and parses its report.
    pub fn run(&self) -> WrkReport {
        wait(self.spawn(), &self.url)
    }
}

/// Waits for a wrk started with [`WrkRun::spawn`] and parses its report.
pub fn wait(child: Child, url: &str) -> WrkReport {
    let output = child.wait_with_output().expect("waiting for wrk");
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        panic!(
            "wrk against {url} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&stdout).unwrap_or_else(|| panic!("cannot parse wrk's report:\n{stdout}"))
}

/// Parses `wrk --latency` output; `None` when a required line is missing. The lines read:
///
/// ```text
///     Latency     1.23ms  456.00us  12.34ms   78.90%
///      50%  812.00us
///      99%    2.80ms
///   261234 requests in 10.00s, 40.12MB read
///   Socket errors: connect 1, read 2, write 0, timeout 3
///   Non-2xx or 3xx responses: 12
/// Requests/sec:  26123.40
/// ```
pub fn parse(text: &str) -> Option<WrkReport> {
    let mut report = WrkReport::default();
    let mut saw_rps = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => report.p50_ms = millis(v)?,
            ["75%", v] => report.p75_ms = millis(v)?,
            ["90%", v] => report.p90_ms = millis(v)?,
            ["99%", v] => report.p99_ms = millis(v)?,
            ["Latency", _avg, _stdev, max, ..] => report.max_ms = millis(max)?,
            ["Requests/sec:", v] => {
                report.rps = v.parse().ok()?;
                saw_rps = true;
            }
            [n, "requests", "in", _, read, "read"] => {
                report.requests = n.parse().ok()?;
                report.bytes_read = bytes(read)?;
            }
            [n, "requests", "in", ..] => report.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => report.non_2xx = n.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                for pair in rest.chunks(2) {
                    if let [kind, n] = pair {
                        let n: u64 = n.trim_end_matches(',').parse().ok()?;
                        report.socket_errors += n;
                        if *kind == "timeout" {
                            report.timeouts = n;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    saw_rps.then_some(report)
}

/// wrk's sizes: `40.12MB`, `812.00KB`, `1.01GB`, `512.00B` (powers of 1024).
fn bytes(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().ok()?;
    let factor = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(value * factor)
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`, `1.50m`.
fn millis(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(value * factor)
}
