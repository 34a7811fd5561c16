//! Addresses, free ports and connection helpers shared by the harness parts.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where a FastCGI server (or the relay in front of it) accepts connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FpmAddress {
    /// A TCP socket, always on loopback in this harness.
    Tcp(SocketAddr),
    /// A Unix domain socket at this path.
    Unix(PathBuf),
}

impl FpmAddress {
    /// The address in the gateway's upstream syntax: `"127.0.0.1:PORT"` or
    /// `"unix:/path/to/socket"`.
    pub fn to_upstream_string(&self) -> String {
        match self {
            FpmAddress::Tcp(addr) => addr.to_string(),
            FpmAddress::Unix(path) => format!("unix:{}", path.display()),
        }
    }

    /// Opens a blocking connection to this address (TCP connects with
    /// `timeout`; Unix connects are immediate or fail).
    pub fn connect(&self, timeout: Duration) -> io::Result<Stream> {
        match self {
            FpmAddress::Tcp(addr) => {
                let stream = TcpStream::connect_timeout(addr, timeout)?;
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            FpmAddress::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
        }
    }
}

impl fmt::Display for FpmAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_upstream_string())
    }
}

/// A connected blocking stream, TCP or Unix.
#[derive(Debug)]
pub enum Stream {
    /// TCP connection.
    Tcp(TcpStream),
    /// Unix domain socket connection.
    Unix(UnixStream),
}

impl Stream {
    /// Shuts down one or both directions (see [`TcpStream::shutdown`]).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    /// Another handle to the same socket.
    pub fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Tcp(s) => s.try_clone().map(Stream::Tcp),
            Stream::Unix(s) => s.try_clone().map(Stream::Unix),
        }
    }

    /// Sets the read timeout of the socket.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Returns a loopback TCP port that was free a moment ago (bind to port 0,
/// read the port, close). Another process may grab it before the caller binds
/// it; the harness tolerates this by failing loudly rather than hanging.
/// Returns 0 only if binding to `127.0.0.1:0` itself fails.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or(0)
}

/// Like [`free_port`] but reports the bind error.
pub(crate) fn try_free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
