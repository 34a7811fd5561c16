//! The body of a static or private file answer: a byte range of an [`OpenFile`].
//!
//! Kept in memory (small files): one slice. On a plain connection: one slice of the
//! file's mapping, which the connection sends with `sendfile(2)` ([`crate::sendfile`]).
//! Otherwise (TLS, on-the-fly compression): `pread` in chunks into a buffer reused once
//! the connection has written the previous chunk, asking the kernel not to wait for the
//! disk (`RWF_NOWAIT`); a chunk that is not in the page cache is read on tokio's
//! blocking pool instead, so a cold disk does not stall the other connections.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::open_file_cache::OpenFile;

/// How much is read at once when the file is read.
const CHUNK: usize = 128 * 1024;

/// `start..end` of an open file.
#[derive(Debug)]
pub(crate) struct FileBody {
    file: Arc<OpenFile>,
    pos: u64,
    end: u64,
    zero_copy: bool,
    buf: BytesMut,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    /// `range` of `file`; `zero_copy` when the connection sends mapped slices with
    /// `sendfile(2)` (plain TCP).
    pub(crate) fn new(file: Arc<OpenFile>, range: std::ops::Range<u64>, zero_copy: bool) -> Self {
        Self {
            file,
            pos: range.start,
            end: range.end,
            zero_copy,
            buf: BytesMut::new(),
            reading: None,
        }
    }

    /// Reads the file instead of handing out its mapping: its bytes are about to be read
    /// in this process (compression).
    pub(crate) fn read_in_process(&mut self) {
        self.zero_copy = false;
    }

    fn advance(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if chunk.is_empty() {
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being sent",
            ))));
        }
        self.pos += chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn slice_of(&self, whole: &Bytes) -> Option<Bytes> {
        let (start, end) = (
            usize::try_from(self.pos).ok()?,
            usize::try_from(self.end).ok()?,
        );
        (end <= whole.len()).then(|| whole.slice(start..end))
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Some(reading) = this.reading.as_mut() {
            let read = std::task::ready!(Pin::new(reading).poll(cx));
            this.reading = None;
            return match read {
                Ok(Ok(chunk)) => this.advance(chunk),
                Ok(Err(err)) => Poll::Ready(Some(Err(err))),
                Err(join) => Poll::Ready(Some(Err(io::Error::other(join)))),
            };
        }
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        if let Some(small) = this.file.small() {
            let slice = this.slice_of(small);
            return match slice {
                Some(chunk) => this.advance(chunk),
                None => this.advance(Bytes::new()),
            };
        }
        if this.zero_copy {
            if let Some(chunk) = this.file.mapped().and_then(|m| this.slice_of(m)) {
                return this.advance(chunk);
            }
        }
        let Some(file) = this.file.file() else {
            // Only small files have no descriptor, and they were answered above.
            return this.advance(Bytes::new());
        };
        let want = usize::try_from(this.end - this.pos).map_or(CHUNK, |left| left.min(CHUNK));
        // Reclaims the previous chunk's memory once the connection has let go of it.
        this.buf.reserve(want);
        match read_cached(file, this.pos, want, &mut this.buf) {
            Ok(()) => {
                let chunk = this.buf.split().freeze();
                this.advance(chunk)
            }
            Err(err) if would_wait(&err) => {
                let (file, pos) = (this.file.clone(), this.pos);
                this.reading = Some(tokio::task::spawn_blocking(move || {
                    let mut buf = BytesMut::with_capacity(want);
                    if let Some(file) = file.file() {
                        read_at(file, pos, want, &mut buf, 0)?;
                    }
                    Ok(buf.freeze())
                }));
                self.poll_frame(cx)
            }
            Err(err) => Poll::Ready(Some(Err(err))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end && self.reading.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end.saturating_sub(self.pos))
    }
}

/// Reads up to `want` bytes at `pos` only if they are in the page cache.
fn read_cached(file: &std::fs::File, pos: u64, want: usize, buf: &mut BytesMut) -> io::Result<()> {
    read_at(file, pos, want, buf, libc::RWF_NOWAIT)
}

fn would_wait(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
        || err.raw_os_error() == Some(libc::EOPNOTSUPP)
        || err.raw_os_error() == Some(libc::ENOSYS)
}

/// `preadv2` of up to `want` bytes at `pos` into `buf`'s spare capacity.
fn read_at(
    file: &std::fs::File,
    pos: u64,
    want: usize,
    buf: &mut BytesMut,
    flags: libc::c_int,
) -> io::Result<()> {
    let spare = buf.spare_capacity_mut();
    let want = want.min(spare.len());
    let offset =
        libc::off_t::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: want,
    };
    // SAFETY: `iov` covers `want` bytes of `buf`'s spare capacity, which the kernel fills.
    let read = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, flags) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised the `read` bytes it reports.
    unsafe { buf.set_len(buf.len() + read.unsigned_abs()) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn collect(body: FileBody) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn every_way_of_sending_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let file = Arc::new(OpenFile::open(&path, &path).unwrap().unwrap());
        assert!(file.small().is_none());
        for zero_copy in [false, true] {
            let whole = collect(FileBody::new(file.clone(), 0..1_000_000, zero_copy)).await;
            assert!(whole == content, "zero_copy {zero_copy}");
            let part = collect(FileBody::new(file.clone(), 999..700_001, zero_copy)).await;
            assert!(part == content[999..700_001], "zero_copy {zero_copy}");
        }
    }

    #[tokio::test]
    async fn a_file_that_shrank_ends_the_body_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        std::fs::write(&path, vec![7u8; 200_000]).unwrap();
        let file = Arc::new(OpenFile::open(&path, &path).unwrap().unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100_000)
            .unwrap();
        let result = FileBody::new(file, 0..200_000, false).collect().await;
        assert!(result.is_err());
    }
}
