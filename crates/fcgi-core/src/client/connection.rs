//! One connection to a FastCGI server and the exchange of one request on it: write the
//! request (streaming the body while reading ahead), then read up to the CGI head.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http_body::Body;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use super::stderr::StderrLines;
use super::{ClientConfig, Request, Response, ResponseBody};
use crate::error::{Error, Kind};
use crate::keepalive::{Lease, Poolable};
use crate::proto::encoder::{
    encode_begin_request, encode_get_values, encode_params, encode_stream_chunk, encode_stream_end,
    params_encoded_len_bound,
};
use crate::proto::params::NameValueIter;
use crate::proto::record::{RecordType, Role};
use crate::proto::response::{Event, ResponseDecoder};
use crate::proto::{cgi::CgiHead, decoder::RecordDecoder, ProtocolError};
use crate::upstream::{LivenessCheck, Stream, Upstream};

/// PHP-FPM serves one request per connection, so every request uses id 1.
pub(crate) const REQUEST_ID: u16 = 1;
/// How much of a response may be read while the request body is still being sent. Reading
/// ahead keeps a server that answers before reading its input from deadlocking against us.
const READ_AHEAD_LIMIT: usize = 1024 * 1024;
/// Read buffer growth step: one full FastCGI record plus its header.
const READ_CHUNK: usize = 64 * 1024 + 16;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to a FastCGI server, carrying one request at a time.
#[derive(Debug)]
pub struct Connection {
    pub(crate) stream: Stream,
    /// The server it is connected to, named on each response it carries.
    upstream: Arc<Upstream>,
    /// Bytes read and not yet decoded; body chunks are split off it without copying.
    pub(crate) read_buf: BytesMut,
    /// Reused across requests so encoding a request does not allocate.
    write_buf: BytesMut,
    pub(crate) config: ClientConfig,
    /// The server closed its side; the connection can never be reused.
    pub(crate) eof: bool,
    /// When the current request started going out: the start of "time in PHP-FPM".
    pub(crate) sent_at: Instant,
}

impl Connection {
    /// Connects to `upstream`.
    pub async fn connect(upstream: &Upstream, config: ClientConfig) -> Result<Self, Error> {
        Self::open(Arc::new(upstream.clone()), config).await
    }

    /// Connects to `upstream`, sharing its name with the pool that knows it.
    pub(crate) async fn open(upstream: Arc<Upstream>, config: ClientConfig) -> Result<Self, Error> {
        let stream = upstream.connect(config.connect_timeout).await?;
        Ok(Self {
            stream,
            upstream,
            read_buf: BytesMut::with_capacity(8 * 1024),
            write_buf: BytesMut::with_capacity(4 * 1024),
            config,
            eof: false,
            sent_at: Instant::now(),
        })
    }

    /// Sends a request on this connection alone (no pool). The connection is closed when
    /// the response body ends or is dropped.
    pub async fn send<B>(self, request: Request<B>) -> Result<Response, Error>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut lease = Lease::unpooled(self);
        let Request {
            params,
            body,
            stderr,
            ..
        } = request;
        let mut stderr = StderrLines::new(stderr);
        let (head, decoder) = exchange(&mut lease, &params, body, &mut stderr).await?;
        Ok(into_response(lease, head, decoder, stderr))
    }

    /// Asks the server for management variables (`FCGI_MAX_CONNS`, `FCGI_MAX_REQS`,
    /// `FCGI_MPXS_CONNS`). PHP-FPM answers only `FCGI_MPXS_CONNS`, and only as the first
    /// record of a connection.
    pub async fn get_values(&mut self, names: &[&str]) -> Result<Vec<(String, String)>, Error> {
        self.write_buf.clear();
        encode_get_values(&mut self.write_buf, names)?;
        write_all(&mut self.stream, &self.write_buf, self.config.read_timeout).await?;
        let mut decoder = RecordDecoder::new();
        loop {
            if let Some(record) = decoder.decode(&mut self.read_buf)? {
                if record.header.record_type != RecordType::GetValuesResult {
                    return Err(ProtocolError::UnexpectedRecord(record.header.record_type).into());
                }
                let mut out = Vec::new();
                for pair in NameValueIter::new(&record.content) {
                    let (name, value) = pair.map_err(ProtocolError::from)?;
                    out.push((
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    ));
                }
                return Ok(out);
            }
            if self.read_some().await? == 0 {
                return Err(Error::new(Kind::UnexpectedEof));
            }
        }
    }

    /// Whether this connection can carry another request: kept open by both sides, and
    /// the socket is neither closed nor holding stray bytes.
    pub(crate) fn is_reusable(&self, check: LivenessCheck) -> bool {
        self.config.keep_conn
            && !self.eof
            && self.read_buf.is_empty()
            && self.stream.is_reusable(check)
    }

    /// Reads what is available (waiting up to the read timeout). Returns 0 at EOF.
    pub(crate) async fn read_some(&mut self) -> Result<usize, Error> {
        if self.read_buf.capacity() - self.read_buf.len() < 4096 {
            self.read_buf.reserve(READ_CHUNK);
        }
        let timeout = self.config.read_timeout;
        match tokio::time::timeout(timeout, self.stream.read_buf(&mut self.read_buf)).await {
            Ok(Ok(0)) => {
                self.eof = true;
                Ok(0)
            }
            Ok(Ok(n)) => Ok(n),
            Ok(Err(err)) => Err(Error::io(err)),
            Err(_) => Err(Error::new(Kind::ReadTimeout(timeout))),
        }
    }

    /// Encodes BEGIN_REQUEST and PARAMS into the write buffer.
    fn encode_head(&mut self, params: &crate::Params) {
        self.write_buf.clear();
        self.write_buf
            .reserve(16 + params_encoded_len_bound(params) + 8);
        encode_begin_request(
            &mut self.write_buf,
            REQUEST_ID,
            Role::Responder,
            self.config.keep_conn,
        );
        encode_params(&mut self.write_buf, REQUEST_ID, params);
    }

    /// Writes the request; the body is streamed, reading ahead of the response meanwhile.
    async fn write_request<B>(&mut self, params: &crate::Params, body: B) -> Result<(), Error>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        self.encode_head(params);
        if body.is_end_stream() {
            encode_stream_end(&mut self.write_buf, RecordType::Stdin, REQUEST_ID);
            return write_all(&mut self.stream, &self.write_buf, self.config.read_timeout).await;
        }
        self.upload(body).await
    }

    /// Sends what is in the write buffer, then the body as STDIN records, while reading
    /// whatever the server already answers into the read buffer (up to a limit).
    async fn upload<B>(&mut self, body: B) -> Result<(), Error>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let timeout = self.config.read_timeout;
        let mut body = pin!(body);
        let mut sleep = pin!(tokio::time::sleep(timeout));
        let mut written = 0;
        let mut body_done = false;
        poll_fn(|cx| {
            let mut progress = false;
            loop {
                // 1. Send what is buffered.
                while written < self.write_buf.len() {
                    match std::pin::Pin::new(&mut self.stream)
                        .poll_write(cx, &self.write_buf[written..])
                    {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(Error::io(
                                std::io::ErrorKind::WriteZero.into(),
                            )))
                        }
                        Poll::Ready(Ok(n)) => {
                            written += n;
                            progress = true;
                        }
                        Poll::Ready(Err(err)) => return Poll::Ready(Err(Error::io(err))),
                        Poll::Pending => break,
                    }
                }
                let mut more = false;
                // 2. All sent: take the next piece of the body.
                if written == self.write_buf.len() {
                    self.write_buf.clear();
                    written = 0;
                    if body_done {
                        return Poll::Ready(Ok(()));
                    }
                    match body.as_mut().poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Ok(mut data) = frame.into_data() {
                                while data.has_remaining() {
                                    let chunk = data.chunk();
                                    let n = chunk.len();
                                    encode_stream_chunk(
                                        &mut self.write_buf,
                                        RecordType::Stdin,
                                        REQUEST_ID,
                                        chunk,
                                    );
                                    data.advance(n);
                                }
                            }
                            progress = true;
                            more = true;
                        }
                        Poll::Ready(Some(Err(err))) => {
                            return Poll::Ready(Err(Error::with(Kind::Body, err)))
                        }
                        Poll::Ready(None) => {
                            encode_stream_end(&mut self.write_buf, RecordType::Stdin, REQUEST_ID);
                            body_done = true;
                            more = true;
                        }
                        Poll::Pending => {}
                    }
                }
                // 3. Read ahead, so a server answering early is not blocked on its output.
                if !self.eof && self.read_buf.len() < READ_AHEAD_LIMIT {
                    if self.read_buf.capacity() - self.read_buf.len() < 4096 {
                        self.read_buf.reserve(READ_CHUNK);
                    }
                    match poll_read_buf(
                        std::pin::Pin::new(&mut self.stream),
                        cx,
                        &mut self.read_buf,
                    ) {
                        Poll::Ready(Ok(0)) => {
                            // The server has answered and closed: what it sent is in the
                            // read buffer; the head reader decides if it is complete.
                            self.eof = true;
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Ok(_)) => {
                            progress = true;
                            more = true;
                        }
                        Poll::Ready(Err(err)) => return Poll::Ready(Err(Error::io(err))),
                        Poll::Pending => {}
                    }
                }
                if !more {
                    break;
                }
            }
            // 4. Nothing moved: wait, but not longer than the timeout since the last progress.
            if progress {
                sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
            }
            match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Error::new(Kind::ReadTimeout(timeout)))),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

use std::future::Future as _;

async fn write_all(stream: &mut Stream, buf: &[u8], timeout: Duration) -> Result<(), Error> {
    match tokio::time::timeout(timeout, stream.write_all(buf)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(Error::io(err)),
        Err(_) => Err(Error::new(Kind::ReadTimeout(timeout))),
    }
}

/// Sends the request on the lease's connection and reads up to the CGI head.
pub(crate) async fn exchange<B>(
    lease: &mut Lease<Connection>,
    params: &crate::Params,
    body: B,
    stderr: &mut StderrLines,
) -> Result<(CgiHead, ResponseDecoder), Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let conn = lease.get_mut();
    conn.read_buf.clear();
    conn.sent_at = Instant::now();
    conn.write_request(params, body).await?;
    let mut decoder = ResponseDecoder::new(REQUEST_ID, conn.config.max_head_len);
    let mut received = !conn.read_buf.is_empty();
    loop {
        match decoder.decode(&mut conn.read_buf) {
            Ok(Some(Event::Head(head))) => return Ok((head, decoder)),
            Ok(Some(Event::Stderr(chunk))) => stderr.push(chunk),
            Ok(Some(Event::End(end))) => {
                // Only a rejection (OVERLOADED and friends) can end a request before its
                // head; the decoder reports any other early end as a protocol error.
                return Err(Error::new(Kind::Rejected(end.protocol_status)).started(true));
            }
            Ok(Some(Event::Body(_))) => {
                return Err(Error::protocol(ProtocolError::EndBeforeHeaders).started(true))
            }
            Ok(None) => {
                if conn.eof {
                    return Err(Error::new(Kind::UnexpectedEof).started(received));
                }
                match conn.read_some().await {
                    Ok(0) => return Err(Error::new(Kind::UnexpectedEof).started(received)),
                    Ok(_) => received = true,
                    Err(err) => return Err(err.started(received)),
                }
            }
            Err(err) => return Err(Error::protocol(err).started(true)),
        }
    }
}

/// Wraps a lease whose request has its head into a response.
pub(crate) fn into_response(
    lease: Lease<Connection>,
    head: CgiHead,
    decoder: ResponseDecoder,
    stderr: StderrLines,
) -> Response {
    let mut lease = lease;
    let conn = lease.get_mut();
    let (sent_at, upstream) = (conn.sent_at, conn.upstream.clone());
    let body = ResponseBody::new(lease, decoder, stderr, sent_at);
    Response::new(head.status, head.headers, body, upstream)
}

/// Polls a read into the connection's buffer (for the body stream).
pub(crate) fn poll_read(
    conn: &mut Connection,
    cx: &mut std::task::Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if conn.read_buf.capacity() - conn.read_buf.len() < 4096 {
        conn.read_buf.reserve(READ_CHUNK);
    }
    let result = poll_read_buf(std::pin::Pin::new(&mut conn.stream), cx, &mut conn.read_buf);
    if let Poll::Ready(Ok(0)) = result {
        conn.eof = true;
    }
    result
}

impl Poolable for Connection {
    /// Kept open by both sides, the server has not closed it, and nothing is left unread.
    fn is_clean(&self) -> bool {
        self.config.keep_conn && !self.eof && self.read_buf.is_empty()
    }
}
