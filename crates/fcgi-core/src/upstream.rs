//! Where the FastCGI server listens (TCP or a Unix socket), and the byte stream to it.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::error::{Error, Kind};

/// The address of a FastCGI server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// `host:port`, resolved at each connect.
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// An upstream string that is neither `unix:PATH` nor `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid FastCGI upstream {0:?}: expected HOST:PORT or unix:PATH")]
pub struct InvalidUpstream(String);

impl FromStr for Upstream {
    type Err = InvalidUpstream;

    /// Parses `unix:/run/php/fpm.sock`, `127.0.0.1:9000`, `[::1]:9000` or `php:9000`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(InvalidUpstream(s.into()));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| InvalidUpstream(s.into()))?;
        let host_ok = !host.is_empty()
            && (host.starts_with('[') && host.ends_with(']') || !host.contains(':'));
        if !host_ok || port.parse::<u16>().is_err() {
            return Err(InvalidUpstream(s.into()));
        }
        Ok(Self::Tcp(s.into()))
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => f.write_str(addr),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Upstream {
    /// Opens a stream, failing with a connect error after `timeout`.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<Stream, Error> {
        let connect = async {
            match self {
                Self::Tcp(addr) => {
                    let stream = TcpStream::connect(addr.as_str()).await?;
                    // Requests are written whole; Nagle would only add latency.
                    stream.set_nodelay(true)?;
                    Ok(Stream::Tcp(stream))
                }
                Self::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
            }
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => Err(Error::with(Kind::Connect, ConnectError(self.clone(), err))),
            Err(_) => Err(Error::new(Kind::ConnectTimeout(timeout))),
        }
    }
}

/// A connect failure, naming the upstream.
#[derive(Debug, thiserror::Error)]
#[error("{0}: {1}")]
struct ConnectError(Upstream, #[source] io::Error);

/// A connected socket of either family.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// How hard [`Stream::is_reusable`] looks at a kept connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LivenessCheck {
    /// Ask the socket every time.
    Thorough,
    /// Ask the socket only when the reactor saw it become readable.
    Cheap,
}

impl Stream {
    /// Whether a kept connection still looks usable: the server has neither closed it nor
    /// sent bytes that belong to no request. Never blocks.
    ///
    /// `Thorough` always asks the socket (a `MSG_PEEK` read). `Cheap` asks it only when
    /// the reactor has seen it become readable since a read last drained it: a server that
    /// closed the connection or sent stray bytes did make it readable, so the only miss is
    /// a close the reactor has not polled yet, the same race the peek has with a close
    /// still in flight. It saves a system call on nearly every reuse, so it is for
    /// requests that are replayed on a fresh connection when a reused one turns out dead.
    pub(crate) fn is_reusable(&self, check: LivenessCheck) -> bool {
        fn peek(sock: socket2::SockRef<'_>) -> io::Result<usize> {
            let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
            sock.peek(&mut probe)
        }
        let result = match (self, check) {
            (Self::Tcp(s), LivenessCheck::Thorough) => peek(socket2::SockRef::from(s)),
            (Self::Unix(s), LivenessCheck::Thorough) => peek(socket2::SockRef::from(s)),
            // `try_io` runs the peek only when the socket is marked readable, and clears
            // the mark when the peek would block.
            (Self::Tcp(s), LivenessCheck::Cheap) => {
                s.try_io(Interest::READABLE, || peek(socket2::SockRef::from(s)))
            }
            (Self::Unix(s), LivenessCheck::Cheap) => {
                s.try_io(Interest::READABLE, || peek(socket2::SockRef::from(s)))
            }
        };
        // The socket is non-blocking (tokio set it so): WouldBlock means idle and open.
        matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_from_config_strings() {
        assert_eq!(
            "unix:/run/php/fpm.sock".parse(),
            Ok(Upstream::Unix("/run/php/fpm.sock".into()))
        );
        assert_eq!(
            "127.0.0.1:9000".parse(),
            Ok(Upstream::Tcp("127.0.0.1:9000".into()))
        );
        assert_eq!("[::1]:9000".parse(), Ok(Upstream::Tcp("[::1]:9000".into())));
        assert_eq!("php:9000".parse(), Ok(Upstream::Tcp("php:9000".into())));
        for bad in ["", "unix:", "9000", "host:", "host:99999", "::1:9000"] {
            assert!(bad.parse::<Upstream>().is_err(), "{bad}");
        }
        assert_eq!(
            "unix:/a.sock".parse::<Upstream>().unwrap().to_string(),
            "unix:/a.sock"
        );
    }
}
