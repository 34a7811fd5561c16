//! The body of every response the gateway sends: PHP-FPM's stream, a static file, or a
//! small page, behind one type, carrying the request's log record so the access log and
//! usage counters are written when the body is really finished (or abandoned).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::access::RequestRecord;
use crate::compression::Encoder;
use crate::file_body::FileBody;

/// Errors a response body can end with (the connection is then closed mid-response).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    #[project = InnerProj]
    enum Inner {
        Full { data: Option<Bytes> },
        // `None` once handed to `finish_in_background`.
        FastCgi { body: Option<fcgi_core::ResponseBody> },
        File { body: FileBody },
        Boxed { #[pin] body: http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError> },
        // Another body run through an encoder; what comes out is what the client gets.
        Compressed { source: Pin<Box<Inner>>, encoder: Encoder },
        // What was read ahead of the client (to see whether it fits the response
        // cache), then the rest of the same body.
        Prefixed { head: Option<Bytes>, rest: Pin<Box<Inner>> },
    }
}

pin_project_lite::pin_project! {
    /// A response body of any kind the gateway produces.
    pub struct GatewayBody {
        #[pin]
        inner: Inner,
        // Bytes still due by the response's `Content-Length`. hyper stops polling a body
        // of known length at its last byte and drops it, so that is where it ends.
        remaining: Option<u64>,
        // Written to the access log and usage counters when dropped.
        record: Option<Box<RequestRecord>>,
    }
}

impl Inner {
    fn is_end_stream(&self) -> bool {
        match self {
            Inner::Full { data } => data.is_none(),
            Inner::FastCgi { body } => body.as_ref().is_none_or(|b| b.is_end_stream()),
            Inner::File { body } => body.is_end_stream(),
            Inner::Boxed { body } => body.is_end_stream(),
            Inner::Compressed { encoder, .. } => encoder.is_finished(),
            Inner::Prefixed { head, rest } => head.is_none() && rest.is_end_stream(),
        }
    }

    /// Polls the body for its next frame; `record` learns PHP-FPM's time and errors.
    fn poll_frame(
        self: Pin<&mut Self>,
        record: Option<&mut RequestRecord>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            InnerProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            InnerProj::FastCgi { body } => {
                let Some(body) = body.as_mut() else {
                    return Poll::Ready(None);
                };
                let polled = Pin::new(&mut *body).poll_frame(cx);
                if let Some(record) = record {
                    match &polled {
                        Poll::Ready(None) => record.fpm_time = body.fpm_time(),
                        Poll::Ready(Some(Err(err))) => record.upstream_error(err),
                        _ => {}
                    }
                }
                polled.map_err(Into::into)
            }
            InnerProj::File { body } => Pin::new(body).poll_frame(cx).map_err(Into::into),
            InnerProj::Boxed { body } => body.poll_frame(cx),
            InnerProj::Compressed { source, encoder } => {
                poll_compressed(source.as_mut(), encoder, record, cx)
            }
            InnerProj::Prefixed { head, rest } => match head.take() {
                Some(head) => Poll::Ready(Some(Ok(Frame::data(head)))),
                None => rest.as_mut().poll_frame(record, cx),
            },
        }
    }
}

/// The next frame of a compressed body: every frame the source has ready goes into the
/// encoder; when the source has to wait (PHP has not printed more yet) what was written
/// is flushed out, so progressive output still arrives as it is produced. Trailers are
/// dropped (they would describe the unencoded body).
fn poll_compressed(
    mut source: Pin<&mut Inner>,
    encoder: &mut Encoder,
    mut record: Option<&mut RequestRecord>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    if encoder.is_finished() {
        return Poll::Ready(None);
    }
    loop {
        match source.as_mut().poll_frame(record.as_deref_mut(), cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(err) = encoder.write(data) {
                        return Poll::Ready(Some(Err(err.into())));
                    }
                    if encoder.output_due() {
                        return Poll::Ready(Some(Ok(Frame::data(encoder.take()))));
                    }
                }
            }
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
            Poll::Ready(None) => {
                return Poll::Ready(Some(encoder.finish().map(Frame::data).map_err(Into::into)))
            }
            Poll::Pending => {
                if encoder.has_unflushed() {
                    match encoder.flush() {
                        Ok(out) if !out.is_empty() => {
                            return Poll::Ready(Some(Ok(Frame::data(out))))
                        }
                        Ok(_) => {}
                        Err(err) => return Poll::Ready(Some(Err(err.into()))),
                    }
                }
                return Poll::Pending;
            }
        }
    }
}

impl std::fmt::Debug for GatewayBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            Inner::Full { .. } => "full",
            Inner::FastCgi { .. } => "fastcgi",
            Inner::File { .. } => "file",
            Inner::Boxed { .. } => "boxed",
            Inner::Compressed { .. } => "compressed",
            Inner::Prefixed { .. } => "prefixed",
        };
        f.debug_struct("GatewayBody").field("kind", &kind).finish()
    }
}

impl GatewayBody {
    fn from_inner(inner: Inner) -> Self {
        Self {
            inner,
            remaining: None,
            record: None,
        }
    }

    /// A body held in memory.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Self::from_inner(Inner::Full {
            data: (!data.is_empty()).then_some(data),
        })
    }

    /// No body.
    pub fn empty() -> Self {
        Self::from_inner(Inner::Full { data: None })
    }

    /// PHP-FPM's response stream.
    pub fn fastcgi(body: fcgi_core::ResponseBody) -> Self {
        Self::from_inner(Inner::FastCgi { body: Some(body) })
    }

    /// A static or private file's bytes.
    pub(crate) fn file(body: FileBody) -> Self {
        Self::from_inner(Inner::File { body })
    }

    /// Any other body (the admin API, embedders).
    pub fn boxed<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Self::from_inner(Inner::Boxed {
            body: body.map_err(Into::into).boxed_unsync(),
        })
    }

    /// This body run through `encoder`: the client gets what comes out of it.
    pub(crate) fn compressed(mut self, encoder: Encoder) -> Self {
        if let Inner::File { body } = &mut self.inner {
            // The encoder reads the bytes: no mapping for it.
            body.read_in_process();
        }
        Self::from_inner(Inner::Compressed {
            source: Box::pin(self.inner),
            encoder,
        })
    }

    /// Attaches the request's record, written out when this body is dropped, and the
    /// response's `Content-Length`, which tells when the body is complete. `bodiless`
    /// says the client gets no body whatever PHP prints (HEAD, 1xx, 204, 304).
    pub(crate) fn with_record(
        mut self,
        mut record: Box<RequestRecord>,
        content_length: Option<u64>,
        bodiless: bool,
    ) -> Self {
        self.remaining = content_length;
        if let Inner::FastCgi { body: Some(fpm) } = &self.inner {
            // PHP-FPM may be done before the client is answered (its END_REQUEST came
            // with the headers): hyper may then never poll the body, so its time is
            // taken now.
            if fpm.is_end_stream() {
                record.fpm_time = fpm.fpm_time();
            }
        }
        if bodiless || content_length == Some(0) {
            // hyper never polls such a body, so PHP-FPM's END_REQUEST would go unread and
            // its connection be closed instead of pooled: read it in the background.
            if let Inner::FastCgi { body } = &mut self.inner {
                if let Some(fpm) = body.take_if(|b| !b.is_end_stream()) {
                    record.completed = true;
                    let discard = if bodiless { BODILESS_DISCARD_LIMIT } else { 0 };
                    finish_in_background(fpm, Some(record), discard);
                    return self;
                }
            }
        }
        // hyper never polls a body that is over before it starts (HEAD, empty pages).
        record.completed = self.is_end_stream();
        self.record = Some(record);
        self
    }
}

impl GatewayBody {
    /// Lets go of PHP-FPM's answer whose body the client will not get (PHP handed the
    /// download to the gateway with `X-Accel-Redirect`): PHP-FPM's time goes to `record`
    /// if its END_REQUEST is already in, else the rest is read in the background, like a
    /// bodiless answer's, so the connection goes back to the pool as soon as PHP is done
    /// rather than after the client's download.
    pub(crate) fn release_upstream(self, record: &mut RequestRecord) {
        if let Inner::FastCgi { body: Some(fpm) } = self.inner {
            if fpm.is_end_stream() {
                record.fpm_time = fpm.fpm_time();
            } else {
                finish_in_background(fpm, None, BODILESS_DISCARD_LIMIT);
            }
        }
    }
}

/// A body read ahead by [`GatewayBody::read_up_to`].
#[derive(Debug)]
pub enum ReadAhead {
    /// All of it, within the limit.
    Whole(Bytes),
    /// More than the limit: the same body, what was read included, to stream on.
    TooLarge(Box<GatewayBody>),
}

impl GatewayBody {
    /// Reads the body to its end if it is at most `limit` bytes (the response cache
    /// stores only such answers); PHP-FPM's time and errors go to `record`. A longer
    /// body is handed back whole, to stream to the client as it comes.
    pub async fn read_up_to(
        self,
        limit: u64,
        record: &mut RequestRecord,
    ) -> Result<ReadAhead, BoxError> {
        if let Inner::Full { data } = &self.inner {
            let data = data.clone().unwrap_or_default();
            if data.len() as u64 <= limit {
                return Ok(ReadAhead::Whole(data));
            }
            return Ok(ReadAhead::TooLarge(Box::new(self)));
        }
        let mut inner = Box::pin(self.inner);
        let mut read = bytes::BytesMut::new();
        loop {
            let frame =
                std::future::poll_fn(|cx| inner.as_mut().poll_frame(Some(&mut *record), cx)).await;
            match frame {
                None => return Ok(ReadAhead::Whole(read.freeze())),
                Some(Err(err)) => return Err(err),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    read.extend_from_slice(&data);
                    if read.len() as u64 > limit {
                        return Ok(ReadAhead::TooLarge(Box::new(Self::from_inner(
                            Inner::Prefixed {
                                head: Some(read.freeze()),
                                rest: inner,
                            },
                        ))));
                    }
                }
            }
        }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this
            .inner
            .as_mut()
            .poll_frame(this.record.as_deref_mut(), cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            if let Some(left) = this.remaining.as_mut() {
                *left = left.saturating_sub(len);
            }
            if let Some(record) = this.record.as_mut() {
                record.bytes_out += len;
            }
        }
        let all_sent = *this.remaining == Some(0);
        if let Some(record) = this.record.as_mut() {
            let ended = matches!(polled, Poll::Ready(None))
                || (matches!(polled, Poll::Ready(Some(Ok(_))))
                    && (all_sent || this.inner.is_end_stream()));
            if ended {
                record.completed = true;
            }
        }
        if all_sent {
            if let InnerProj::FastCgi { body } = this.inner.project() {
                if let Some(body) = body.take_if(|b| !b.is_end_stream()) {
                    finish_in_background(body, this.record.take(), 0);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Inner::FastCgi { body } => body
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint),
            Inner::File { body } => body.size_hint(),
            Inner::Boxed { body } => body.size_hint(),
            Inner::Compressed { .. } | Inner::Prefixed { .. } => SizeHint::default(),
        }
    }
}

/// How much output PHP may still write after an answer that has no body (a 204, a 304, a
/// HEAD) before its connection is dropped rather than drained for reuse.
const BODILESS_DISCARD_LIMIT: u64 = 1 << 20;

/// Reads PHP-FPM's response on to its END_REQUEST once the client has its whole answer,
/// then writes the request's record. `discard` is how many more bytes of output may be
/// read and thrown away on the way.
///
/// hyper stops polling a body of known length at its last byte and never polls one the
/// client does not get (HEAD, 204, 304); the END_REQUEST that follows would go unread, so
/// the connection could not go back to the pool, and the record would have no FPM time and
/// say the response was cut. Bounded by the body's read timeout. After every byte of a
/// declared `Content-Length` nothing more may come (`discard` 0: nginx drops the upstream
/// connection then too); after a bodiless answer PHP may still have printed a body, which
/// is discarded (as nginx does) up to [`BODILESS_DISCARD_LIMIT`]. Stopping early closes
/// the connection instead.
fn finish_in_background(
    mut body: fcgi_core::ResponseBody,
    mut record: Option<Box<RequestRecord>>,
    mut discard: u64,
) {
    // Without a runtime (never so in the gateway) dropping the body closes the connection.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        use http_body_util::BodyExt;
        loop {
            match body.frame().await {
                None => {
                    if let Some(record) = record.as_mut() {
                        record.fpm_time = body.fpm_time();
                    }
                    return;
                }
                Some(Ok(frame)) => {
                    let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                    match discard.checked_sub(len) {
                        Some(left) => discard = left,
                        // Too much to throw away: dropping the body closes the connection.
                        None => return,
                    }
                }
                Some(Err(err)) => {
                    if let Some(record) = record.as_mut() {
                        record.upstream_error(&err);
                    }
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_full_body_yields_its_bytes_once() {
        let body = GatewayBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
        assert!(GatewayBody::empty().is_end_stream());
    }
}
