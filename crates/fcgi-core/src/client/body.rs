//! The response body: STDOUT records streamed as `Bytes` slices of the read buffer, until
//! END_REQUEST hands the connection back to its pool.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::connection::{poll_read, Connection};
use super::stderr::StderrLines;
use crate::error::{Error, Kind};
use crate::keepalive::Lease;
use crate::proto::record::{EndRequestBody, ProtocolStatus};
use crate::proto::response::{Event, ResponseDecoder};
use crate::proto::ProtocolError;

/// The body of a [`Response`](super::Response): an [`http_body::Body`] of `Bytes`.
///
/// Ends with the request's END_REQUEST; at that moment a clean connection goes back to
/// its pool. Dropped before its end, it closes the connection instead, which stops the
/// PHP script at its next output (PHP-FPM ignores ABORT_REQUEST while a script runs).
///
/// It is `Unpin`, so `BodyExt::frame(&mut body).await` works without pinning it first.
pub struct ResponseBody {
    /// `None` once the request ended or failed.
    lease: Option<Lease<Connection>>,
    decoder: ResponseDecoder,
    stderr: StderrLines,
    /// Reset whenever bytes arrive: the read timeout is about silence, not total time.
    /// Boxed so the body stays `Unpin`; made at the first wait only.
    sleep: Option<Pin<Box<Sleep>>>,
    end: Option<EndRequestBody>,
    started: Instant,
    finished: Option<Instant>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("open", &self.lease.is_some())
            .field("end", &self.end)
            .finish()
    }
}

impl ResponseBody {
    pub(crate) fn new(
        lease: Lease<Connection>,
        decoder: ResponseDecoder,
        stderr: StderrLines,
        sent_at: Instant,
    ) -> Self {
        Self {
            lease: Some(lease),
            decoder,
            stderr,
            sleep: None,
            end: None,
            started: sent_at,
            finished: None,
        }
    }

    /// END_REQUEST's body (application status and protocol status), once the body ended.
    pub fn end_request(&self) -> Option<EndRequestBody> {
        self.end
    }

    /// When the request started going out (after any wait for a pooled connection).
    pub fn sent_at(&self) -> Instant {
        self.started
    }

    /// Time from sending the request to its END_REQUEST: the time spent in PHP-FPM.
    /// `None` until the body has ended.
    pub fn fpm_time(&self) -> Option<std::time::Duration> {
        self.finished.map(|end| end.duration_since(self.started))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(lease) = this.lease.as_mut() else {
                return Poll::Ready(None);
            };
            let conn = lease.get_mut();
            match this.decoder.decode(&mut conn.read_buf) {
                Ok(Some(Event::Body(chunk))) => return Poll::Ready(Some(Ok(Frame::data(chunk)))),
                Ok(Some(Event::Stderr(chunk))) => this.stderr.push(chunk),
                Ok(Some(Event::End(end))) => {
                    this.end = Some(end);
                    this.finished = Some(Instant::now());
                    this.stderr.flush();
                    let Some(mut lease) = this.lease.take() else {
                        return Poll::Ready(None);
                    };
                    if end.protocol_status != ProtocolStatus::RequestComplete {
                        return Poll::Ready(Some(Err(Error::new(Kind::Rejected(
                            end.protocol_status,
                        ))
                        .started(true))));
                    }
                    lease.finish();
                    return Poll::Ready(None);
                }
                Ok(Some(Event::Head(_))) => {
                    lease.fault();
                    this.lease.take();
                    let err =
                        ProtocolError::UnexpectedRecord(crate::proto::record::RecordType::Stdout);
                    return Poll::Ready(Some(Err(Error::protocol(err).started(true))));
                }
                Ok(None) => {
                    let timeout = conn.config.read_timeout;
                    match poll_read(conn, cx) {
                        Poll::Ready(Ok(0)) => {
                            this.lease.take();
                            return Poll::Ready(Some(Err(
                                Error::new(Kind::UnexpectedEof).started(true)
                            )));
                        }
                        Poll::Ready(Ok(_)) => {
                            if let Some(sleep) = this.sleep.as_mut() {
                                sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
                            }
                        }
                        Poll::Ready(Err(err)) => {
                            this.lease.take();
                            return Poll::Ready(Some(Err(Error::io(err).started(true))));
                        }
                        Poll::Pending => {
                            let sleep = this
                                .sleep
                                .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                            {
                                if sleep.as_mut().poll(cx).is_ready() {
                                    this.lease.take();
                                    return Poll::Ready(Some(Err(Error::new(Kind::ReadTimeout(
                                        timeout,
                                    ))
                                    .started(true))));
                                }
                            }
                            return Poll::Pending;
                        }
                    }
                }
                Err(err) => {
                    // The server broke the protocol: that counts against it.
                    if let Some(lease) = this.lease.as_mut() {
                        lease.fault();
                    }
                    this.lease.take();
                    return Poll::Ready(Some(Err(Error::protocol(err).started(true))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lease.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.lease.is_none() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::default()
        }
    }
}

use std::future::Future as _;
