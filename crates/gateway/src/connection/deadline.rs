//! Per-connection deadlines, as nginx's `client_header_timeout` and `keepalive_timeout`:
//! a connection must deliver a complete request head within the header timeout of being
//! accepted (or of its first byte after a keep-alive pause), and may sit idle between
//! requests for the keep-alive timeout. hyper's own header timeout starts only once
//! hyper-util has seen the first bytes (to tell HTTP/1 from HTTP/2), so a connection
//! that never sends anything would otherwise be held forever.
//!
//! The phases of one connection, shared by its IO, its requests and its watchdog:
//!
//! ```text
//!            accept
//!              │
//!              ▼
//!   ┌──▶ AwaitingHead ──── header_timeout after `since` ────▶ close
//!   │          │ a request starts
//!   │          ▼
//!   │       Active (n requests; their own limits apply: body_timeout, read_timeout)
//!   │          │ the last response is done            ▲
//!   │          ▼                                      │ a request starts (pipelined)
//!   └─bytes─ Idle ──────────────────────────────────────┘
//!              └──── keepalive_timeout after the last write ────▶ close
//! ```
//!
//! Updates are one atomic word, so the hot path never wakes the watchdog: it sleeps until
//! the earliest moment any deadline could fall, and re-reads the state then.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The two timeouts a connection is held to between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From accept (or from the first byte after a keep-alive pause) to a complete head.
    pub header: Duration,
    /// Idle time between requests.
    pub keepalive: Duration,
}

/// Which timeout closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No complete request head within the header timeout.
    Header,
    /// Idle between requests for the keep-alive timeout.
    KeepAlive,
}

// The packed state: bit 0 says Idle (rather than AwaitingHead) when no request is in
// flight; bits 1..24 count requests in flight; bits 24.. hold `since` in milliseconds
// from the connection's start (2^40 ms is 34 years).
const IDLE_BIT: u64 = 1;
const IN_FLIGHT_ONE: u64 = 1 << 1;
const IN_FLIGHT_MASK: u64 = ((1 << 23) - 1) << 1;
const SINCE_SHIFT: u32 = 24;

/// The phase of a connection, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingHead { since: u64 },
    Active,
    Idle { since: u64 },
}

fn decode(word: u64) -> Phase {
    let since = word >> SINCE_SHIFT;
    if word & IN_FLIGHT_MASK != 0 {
        Phase::Active
    } else if word & IDLE_BIT != 0 {
        Phase::Idle { since }
    } else {
        Phase::AwaitingHead { since }
    }
}

fn with_since(word: u64, since: u64) -> u64 {
    (word & ((1 << SINCE_SHIFT) - 1)) | (since << SINCE_SHIFT)
}

/// What the watchdog does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Close(Expired),
    /// Look again at this many milliseconds from the connection's start.
    CheckAt(u64),
}

/// The watchdog's decision at `now` (ms from the start). `CheckAt` is never later than
/// any deadline the connection could come under before then, whatever happens meanwhile:
/// from Active or Idle, the soonest is a head timeout starting now or an idle timeout
/// starting now.
fn verdict(phase: Phase, now: u64, timeouts: Timeouts) -> Verdict {
    let header = millis(timeouts.header);
    let keepalive = millis(timeouts.keepalive);
    match phase {
        Phase::AwaitingHead { since } => {
            let deadline = since.saturating_add(header);
            if now >= deadline {
                Verdict::Close(Expired::Header)
            } else {
                Verdict::CheckAt(deadline)
            }
        }
        Phase::Active => Verdict::CheckAt(now.saturating_add(header.min(keepalive))),
        Phase::Idle { since } => {
            let deadline = since.saturating_add(keepalive);
            if now >= deadline {
                Verdict::Close(Expired::KeepAlive)
            } else {
                Verdict::CheckAt(deadline.min(now.saturating_add(header)))
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What a connection has been doing, updated by its IO and its requests and read by its
/// watchdog. Shared behind an `Arc`.
#[derive(Debug)]
pub struct Activity {
    word: AtomicU64,
    start: Instant,
}

impl Activity {
    /// A connection just accepted: awaiting its first head.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            word: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    fn now(&self) -> u64 {
        millis(self.start.elapsed())
    }

    fn update(&self, mut change: impl FnMut(u64) -> Option<u64>) {
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, &mut change);
    }

    /// A request head is complete and its handling starts. The guard ends it.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.update(|word| Some(word + IN_FLIGHT_ONE));
        RequestGuard(self.clone())
    }

    fn request_finished(&self) {
        let now = self.now();
        self.update(|word| {
            if word & IN_FLIGHT_MASK == 0 {
                return None;
            }
            let word = word - IN_FLIGHT_ONE;
            Some(if word & IN_FLIGHT_MASK == 0 {
                with_since(word | IDLE_BIT, now)
            } else {
                word
            })
        });
    }

    /// Applies `change(word, since, now)` while the connection is idle. Most reads and
    /// writes happen mid-request: one load tells them apart before the clock is read.
    fn update_if_idle(&self, mut change: impl FnMut(u64, u64, u64) -> Option<u64>) {
        if !matches!(
            decode(self.word.load(Ordering::Acquire)),
            Phase::Idle { .. }
        ) {
            return;
        }
        let now = self.now();
        self.update(|word| match decode(word) {
            Phase::Idle { since } => change(word, since, now),
            _ => None,
        });
    }

    /// Bytes came in: after a keep-alive pause, a new head has begun.
    fn bytes_read(&self) {
        self.update_if_idle(|word, _, now| Some(with_since(word & !IDLE_BIT, now)));
    }

    /// Bytes went out: the tail of the last response is still being sent, so the idle
    /// time counts from now.
    fn bytes_written(&self) {
        self.update_if_idle(|word, since, now| (since < now).then(|| with_since(word, now)));
    }

    fn verdict(&self, timeouts: Timeouts) -> Verdict {
        verdict(
            decode(self.word.load(Ordering::Acquire)),
            self.now(),
            timeouts,
        )
    }

    /// Runs `conn` until it ends, or until a timeout expires (then `conn` is dropped,
    /// which closes the connection).
    pub async fn watch<F: Future>(
        &self,
        conn: F,
        timeouts: Timeouts,
    ) -> Result<F::Output, Expired> {
        let mut conn = std::pin::pin!(conn);
        let first = self.start + timeouts.header;
        let sleep = tokio::time::sleep_until(first);
        let mut sleep = std::pin::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                output = &mut conn => return Ok(output),
                () = &mut sleep => match self.verdict(timeouts) {
                    Verdict::Close(expired) => return Err(expired),
                    Verdict::CheckAt(at) => {
                        sleep.as_mut().reset(self.start + Duration::from_millis(at));
                    }
                },
            }
        }
    }
}

/// Ends a request when dropped (with the response body it travels in).
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

pin_project_lite::pin_project! {
    /// A client connection's socket, reporting reads and writes to its [`Activity`].
    #[derive(Debug)]
    pub struct TrackedIo<S> {
        #[pin]
        inner: S,
        activity: Arc<Activity>,
    }
}

impl<S> TrackedIo<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead> AsyncRead for TrackedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_written();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_written();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its request (see [`RequestGuard`]) when dropped.
    #[derive(Debug)]
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        guard: RequestGuard,
    }
}

impl<B> GuardedBody<B> {
    /// Wraps `inner`; `guard` is released with it.
    pub fn new(inner: B, guard: RequestGuard) -> Self {
        Self { inner, guard }
    }
}

impl<B: http_body::Body> http_body::Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        keepalive: Duration::from_secs(75),
    };

    #[test]
    fn a_head_not_complete_in_time_closes_and_otherwise_is_checked_at_its_deadline() {
        let phase = Phase::AwaitingHead { since: 0 };
        assert_eq!(verdict(phase, 9_999, T), Verdict::CheckAt(10_000));
        assert_eq!(verdict(phase, 10_000, T), Verdict::Close(Expired::Header));
    }

    #[test]
    fn an_idle_connection_is_checked_no_later_than_a_head_starting_now_could_expire() {
        let phase = Phase::Idle { since: 1_000 };
        // A byte arriving right after this check would start a 10 s head deadline.
        assert_eq!(verdict(phase, 2_000, T), Verdict::CheckAt(12_000));
        assert_eq!(verdict(phase, 70_000, T), Verdict::CheckAt(76_000));
        assert_eq!(
            verdict(phase, 76_000, T),
            Verdict::Close(Expired::KeepAlive)
        );
    }

    #[test]
    fn an_active_connection_is_never_closed() {
        assert_eq!(
            verdict(Phase::Active, 500_000, T),
            Verdict::CheckAt(510_000)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn phases_follow_requests_reads_and_writes() {
        let activity = Activity::new();
        assert_eq!(
            decode(activity.word.load(Ordering::Acquire)),
            Phase::AwaitingHead { since: 0 }
        );
        let first = activity.request_started();
        let second = activity.request_started();
        assert_eq!(decode(activity.word.load(Ordering::Acquire)), Phase::Active);
        // Reads and writes during a request change nothing.
        activity.bytes_read();
        activity.bytes_written();
        drop(first);
        assert_eq!(decode(activity.word.load(Ordering::Acquire)), Phase::Active);
        tokio::time::advance(Duration::from_millis(300)).await;
        drop(second);
        assert_eq!(
            decode(activity.word.load(Ordering::Acquire)),
            Phase::Idle { since: 300 }
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        activity.bytes_written();
        assert_eq!(
            decode(activity.word.load(Ordering::Acquire)),
            Phase::Idle { since: 500 }
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        activity.bytes_read();
        assert_eq!(
            decode(activity.word.load(Ordering::Acquire)),
            Phase::AwaitingHead { since: 600 }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_closes_a_silent_connection_at_the_header_timeout() {
        let activity = Activity::new();
        let started = Instant::now();
        let outcome = activity.watch(std::future::pending::<()>(), T).await;
        assert_eq!(outcome, Err(Expired::Header));
        assert_eq!(started.elapsed(), T.header);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_leaves_a_long_request_alone_then_applies_keepalive() {
        let activity = Activity::new();
        let guard = activity.request_started();
        let started = Instant::now();
        let watcher = activity.clone();
        let finish = async move {
            tokio::time::sleep(Duration::from_secs(300)).await;
            drop(guard);
        };
        tokio::spawn(finish);
        let outcome = watcher.watch(std::future::pending::<()>(), T).await;
        assert_eq!(outcome, Err(Expired::KeepAlive));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(375) && elapsed <= Duration::from_secs(376),
            "{elapsed:?}"
        );
    }
}
