//! Zero-copy file bodies on plain connections: a file is mapped into memory (never read
//! through the mapping here) and its bytes handed to hyper as a `Bytes` slice of that
//! mapping; when hyper writes a slice that lies inside a registered mapping to a plain TCP
//! socket, [`poll_write_vectored`] sends it with `sendfile(2)` from the file's descriptor
//! instead, so the file's pages go from the page cache to the socket without a copy
//! through user space (nginx's `sendfile on`).
//!
//! hyper owns the socket and writes whatever bytes a body yields, so the mapping's
//! address range is the token that says "this is that file, at that offset". hyper does
//! not look into body bytes on HTTP/1.1 (it queues them and writes them with `writev`),
//! nor does h2c beyond framing; the bytes are only read through the mapping when some
//! other writer gets them, which still gives the file's content. A mapping is only
//! handed out for plain connections: TLS and on-the-fly compression read the file with
//! `pread` instead (`crate::file_body`), so a file truncated meanwhile cannot fault the
//! process through its mapping.
//!
//! A mapping is registered for as long as it lives (it is unregistered before it is
//! unmapped, so its addresses cannot be reused while registered), and every `Bytes`
//! slice keeps it alive, so a slice hyper still holds always finds its file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

/// Every live mapping: start address → (end address, file descriptor).
static REGIONS: RwLock<BTreeMap<usize, (usize, RawFd)>> = RwLock::new(BTreeMap::new());
/// How many mappings live; writes skip the lookup when none does.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// One file mapped read-only and registered for [`poll_write_vectored`].
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    // Holds the descriptor the registry names open as long as the mapping lives.
    _file: Arc<File>,
}

// SAFETY: the mapping is read-only and shared; nothing writes through `ptr`.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped readable until `drop`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let start = self.ptr as usize;
        if let Ok(mut regions) = REGIONS.write() {
            regions.remove(&start);
        }
        LIVE.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: unmaps exactly what `map` mapped; no slice of it is left (they hold
        // this owner alive).
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// Maps the first `len` bytes of `file` and registers them, as one `Bytes` whose slices
/// are sent with `sendfile(2)` on plain connections. `len` must not be 0.
pub(crate) fn map(file: &Arc<File>, len: u64) -> io::Result<Bytes> {
    let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if len == 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: a fresh read-only shared mapping of an open descriptor; the kernel picks the
    // address.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = ptr as usize;
    let mapping = Mapping {
        ptr,
        len,
        _file: file.clone(),
    };
    LIVE.fetch_add(1, Ordering::Relaxed);
    match REGIONS.write() {
        Ok(mut regions) => {
            regions.insert(start, (start + len, file.as_raw_fd()));
        }
        Err(_) => return Err(io::Error::other("sendfile registry poisoned")),
    }
    Ok(Bytes::from_owner(mapping))
}

/// The file and offset a slice stands for, if it lies inside a live mapping.
fn region_of(regions: &BTreeMap<usize, (usize, RawFd)>, slice: &[u8]) -> Option<(RawFd, u64)> {
    if slice.is_empty() {
        return None;
    }
    let start = slice.as_ptr() as usize;
    let (&base, &(end, fd)) = regions.range(..=start).next_back()?;
    (start + slice.len() <= end).then_some((fd, (start - base) as u64))
}

/// Writes `bufs` to a plain TCP stream: ordinary slices with `writev`, a slice of a
/// registered mapping with `sendfile(2)` from its file. Slices before a file's are sent
/// first, with the socket corked (`TCP_CORK`, nginx's `tcp_nopush`) until the file's
/// slice is all out: the head goes in the same packet as the file's first bytes, and the
/// file leaves in full-sized segments sent together rather than one by one as the
/// kernel fills them (on loopback, each of those is a wake-up of the receiver: 13% of
/// the kernel time of a 300 KB answer). The caller (hyper) calls again for the rest.
pub(crate) fn poll_write_vectored(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    if LIVE.load(Ordering::Relaxed) == 0 {
        return Pin::new(stream).poll_write_vectored(cx, bufs);
    }
    let found = match REGIONS.read() {
        Ok(regions) => bufs
            .iter()
            .enumerate()
            .find_map(|(i, buf)| region_of(&regions, buf).map(|r| (i, r))),
        Err(_) => None,
    };
    match found {
        None => Pin::new(stream).poll_write_vectored(cx, bufs),
        Some((i, (fd, offset))) if bufs[..i].iter().all(|b| b.is_empty()) => {
            let (socket, len) = (stream.as_raw_fd(), bufs[i].len());
            let sent =
                std::task::ready!(poll_io(stream, cx, || send_file(socket, fd, offset, len)));
            if matches!(sent, Ok(n) if n == len) {
                // The slice is out: what the cork held goes now.
                cork(socket, false);
            }
            Poll::Ready(sent)
        }
        Some((i, _)) => {
            let (socket, head) = (stream.as_raw_fd(), &bufs[..i]);
            cork(socket, true);
            poll_io(stream, cx, || send_more(socket, head))
        }
    }
}

/// Runs a non-blocking write until it does not block, waiting for writability between.
fn poll_io(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    mut write: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        if let Err(err) = std::task::ready!(stream.poll_write_ready(cx)) {
            return Poll::Ready(Err(err));
        }
        match stream.try_io(Interest::WRITABLE, &mut write) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            done => return Poll::Ready(done),
        }
    }
}

/// `sendfile(2)` of `len` bytes at `offset`; 0 bytes sent of a non-empty slice means the
/// file was truncated under us, which ends the response with an error.
fn send_file(socket: RawFd, file: RawFd, offset: u64, len: usize) -> io::Result<usize> {
    let mut offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both descriptors are open (the slice being written keeps the mapping, and
    // with it the file, alive); the kernel writes only `offset`.
    let sent = unsafe { libc::sendfile(socket, file, &mut offset, len.min(1 << 30)) };
    match sent {
        n if n < 0 => Err(io::Error::last_os_error()),
        0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while being sent",
        )),
        n => Ok(n.unsigned_abs()),
    }
}

/// Sets or clears `TCP_CORK`. A failure leaves the socket as it was: at worst a corked
/// socket's last partial segment waits the kernel's 200 ms cork limit.
fn cork(socket: RawFd, on: bool) {
    let value: libc::c_int = on.into();
    // SAFETY: `value` outlives the call and the length is its size.
    unsafe {
        libc::setsockopt(
            socket,
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// `sendmsg` of `bufs` with `MSG_MORE`: the kernel holds a partial packet for the file's
/// bytes that follow.
fn send_more(socket: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid ("no name, no control data").
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast::<libc::iovec>();
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
    // SAFETY: `msg` points at `bufs`, alive for the call.
    let sent = unsafe { libc::sendmsg(socket, &msg, libc::MSG_MORE | libc::MSG_NOSIGNAL) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    fn corked(stream: &TcpStream) -> bool {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: both out-parameters are valid for the call.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        value != 0
    }

    #[tokio::test]
    async fn a_mapped_slice_is_sent_from_its_file_after_the_corked_head_then_uncorked() {
        let mut tmp = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        tmp.write_all(&content).unwrap();
        let file = Arc::new(tmp);
        let mapped = map(&file, content.len() as u64).unwrap();
        let body = mapped.slice(1000..250_000);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            socket.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = b"HEAD ".to_vec();
        let (mut head_left, mut body_left) = (&head[..], &body[..]);
        while !head_left.is_empty() || !body_left.is_empty() {
            let bufs = [IoSlice::new(head_left), IoSlice::new(body_left)];
            let n = std::future::poll_fn(|cx| poll_write_vectored(&mut stream, cx, &bufs))
                .await
                .unwrap();
            let from_head = n.min(head_left.len());
            head_left = &head_left[from_head..];
            body_left = &body_left[n - from_head..];
            if head_left.is_empty() && body_left.len() == body.len() {
                assert!(corked(&stream), "the head waits for the file's bytes");
            }
        }
        assert!(!corked(&stream), "uncorked once the file's slice is out");
        drop(stream);
        let got = reader.await.unwrap();
        assert_eq!(&got[..5], b"HEAD ");
        assert!(got[5..] == content[1000..250_000]);
    }

    #[test]
    fn a_dropped_mapping_is_no_longer_found() {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(b"0123456789").unwrap();
        let file = Arc::new(tmp);
        let mapped = map(&file, 10).unwrap();
        let (ptr, len) = (mapped.as_ptr() as usize, mapped.len());
        let found = |p: usize| {
            let regions = REGIONS.read().unwrap();
            regions
                .range(..=p)
                .next_back()
                .is_some_and(|(&start, &(end, _))| start == ptr && p < end)
        };
        assert!(found(ptr + len - 1));
        drop(mapped);
        assert!(!found(ptr));
    }
}
