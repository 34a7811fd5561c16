//! A connection-counting TCP relay, placed between a FastCGI client and PHP-FPM
//! to observe how many upstream connections the client opens and keeps.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};
use crate::net::{FpmAddress, Stream};

/// Timeout for connecting to the relay's target.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Copy buffer size per direction.
const BUFFER_SIZE: usize = 64 * 1024;

/// Listens on a free loopback port and forwards every accepted connection to
/// a target address, counting connections.
///
/// Half-closes are forwarded (EOF from one side becomes a write shutdown
/// towards the other side); a connection is finished once both directions
/// reached EOF, or at the first I/O error, which tears down both sides.
/// Dropping the relay closes all relayed connections and joins every thread.
///
/// Threads are named `r<port>a` (accept loop), `r<port>c<id>` and
/// `r<port>u<id>` (the two directions of connection `id`), so tests can
/// find them in `/proc/self/task/*/comm` (which keeps 15 characters).
///
/// A connection counts as open until both directions are finished, which
/// the relay notices asynchronously after the peers close; use
/// [`CountingRelay::wait_for_current`] before asserting on counts.
#[derive(Debug)]
pub struct CountingRelay {
    addr: SocketAddr,
    target: FpmAddress,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    total: AtomicUsize,
    current: AtomicUsize,
    max_concurrent: AtomicUsize,
    next_id: AtomicU64,
    /// Clones of both sockets of every open relayed connection, so that
    /// [`CountingRelay::close_all`] and `Drop` can unblock their threads.
    open: Mutex<HashMap<u64, Vec<Stream>>>,
    /// Threads of relayed connections (finished ones are pruned lazily).
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Per open connection, whether it is blackholed: its bytes are read and dropped in
    /// both directions, the sockets stay open (a half-open peer, as a pulled cable).
    blackholes: Mutex<HashMap<u64, Arc<AtomicBool>>>,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, Vec<Stream>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn threads(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn blackholes(&self) -> MutexGuard<'_, HashMap<u64, Arc<AtomicBool>>> {
        self.blackholes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl CountingRelay {
    /// Starts relaying from a fresh loopback port to `target`.
    pub fn start(target: FpmAddress) -> Result<CountingRelay> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| HarnessError::Socket {
                what: "cannot bind the relay's listener on 127.0.0.1:0".to_owned(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| HarnessError::Socket {
                what: "cannot read the relay listener's address".to_owned(),
                source,
            })?;
        let shared = Arc::new(Shared::default());
        let accept_thread = {
            let shared = Arc::clone(&shared);
            let target = target.clone();
            thread::Builder::new()
                .name(format!("r{}a", addr.port()))
                .spawn(move || accept_loop(listener, target, shared))
                .map_err(|source| HarnessError::Socket {
                    what: format!("cannot spawn the accept thread of relay {addr}"),
                    source,
                })?
        };
        Ok(CountingRelay {
            addr,
            target,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    /// The relay's listening address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The relay's listening address as an [`FpmAddress`], for use wherever
    /// the upstream's own address would go.
    pub fn address(&self) -> FpmAddress {
        FpmAddress::Tcp(self.addr)
    }

    /// Where connections are forwarded to.
    pub fn target(&self) -> &FpmAddress {
        &self.target
    }

    /// Connections accepted since start (or the last [`Self::reset_counters`]).
    pub fn total_connections(&self) -> usize {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// Highest number of simultaneously open connections seen.
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_concurrent.load(Ordering::SeqCst)
    }

    /// Connections currently open (accepted and not yet fully closed).
    pub fn current(&self) -> usize {
        self.shared.current.load(Ordering::SeqCst)
    }

    /// Resets `total_connections` to 0 and `max_concurrent` to `current`.
    pub fn reset_counters(&self) {
        self.shared.total.store(0, Ordering::SeqCst);
        self.shared
            .max_concurrent
            .store(self.current(), Ordering::SeqCst);
    }

    /// Polls until `current() == expected`; returns whether that happened
    /// within `timeout`.
    pub fn wait_for_current(&self, expected: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.current() == expected {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Closes every connection currently relayed: both sockets of each are
    /// shut down in both directions (the peers see EOF / a failed write).
    /// New connections are still accepted.
    pub fn close_all(&self) {
        for streams in self.shared.open().values() {
            for stream in streams {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Blackholes every connection currently relayed: from now on their bytes are
    /// dropped in both directions while both sockets stay open, so neither peer sees an
    /// error (a half-open connection, as behind a pulled cable or a dead NAT entry).
    /// New connections are relayed normally. Returns how many were blackholed.
    pub fn blackhole_all(&self) -> usize {
        let blackholes = self.shared.blackholes();
        for flag in blackholes.values() {
            flag.store(true, Ordering::SeqCst);
        }
        blackholes.len()
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); the loop sees the stop flag and exits.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept_thread.take() {
            let _ = handle.join();
        }
        // The accept loop is gone, so no new connection threads can appear.
        self.close_all();
        let threads: Vec<JoinHandle<()>> = self.shared.threads().drain(..).collect();
        for handle in threads {
            let _ = handle.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: FpmAddress, shared: Arc<Shared>) {
    let port = listener.local_addr().map_or(0, |addr| addr.port());
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let client = match incoming {
            Ok(client) => client,
            // Transient (e.g. ECONNABORTED, EMFILE): keep serving.
            Err(_) => {
                thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        shared.total.fetch_add(1, Ordering::SeqCst);
        let now = shared.current.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_concurrent.fetch_max(now, Ordering::SeqCst);

        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let conn_shared = Arc::clone(&shared);
        let conn_target = target.clone();
        let spawned = thread::Builder::new()
            .name(format!("r{port}c{id}"))
            .spawn(move || {
                relay_connection(id, client, &conn_target, &conn_shared);
                conn_shared.open().remove(&id);
                conn_shared.blackholes().remove(&id);
                conn_shared.current.fetch_sub(1, Ordering::SeqCst);
            });
        let mut threads = shared.threads();
        threads.retain(|handle| !handle.is_finished());
        match spawned {
            Ok(handle) => threads.push(handle),
            // The closure (and the client socket) was dropped: undo the count.
            Err(_) => {
                shared.current.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

fn relay_connection(id: u64, client: TcpStream, target: &FpmAddress, shared: &Shared) {
    let port = client.local_addr().map_or(0, |addr| addr.port());
    let _ = client.set_nodelay(true);
    let client = Stream::Tcp(client);
    let Ok(upstream) = target.connect(UPSTREAM_CONNECT_TIMEOUT) else {
        // Refused upstream: close the client connection right away.
        return;
    };
    let (Ok(client_reader), Ok(upstream_reader), Ok(client_ctl), Ok(upstream_ctl)) = (
        client.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    ) else {
        return;
    };
    {
        let mut open = shared.open();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        open.insert(id, vec![client_ctl, upstream_ctl]);
    }
    let blackhole = Arc::new(AtomicBool::new(false));
    shared.blackholes().insert(id, Arc::clone(&blackhole));
    let up_blackhole = Arc::clone(&blackhole);

    // client -> upstream on a helper thread, upstream -> client here.
    let up = thread::Builder::new()
        .name(format!("r{port}u{id}"))
        .spawn(move || pump(client_reader, upstream, &up_blackhole));
    match up {
        Ok(handle) => {
            pump(upstream_reader, client, &blackhole);
            let _ = handle.join();
        }
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream_reader.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` into `to` until EOF, then half-closes `to`. On an I/O error
/// both sockets are shut down completely, which also ends the opposite pump. While
/// `blackhole` is set, what is read is dropped.
fn pump(mut from: Stream, mut to: Stream, blackhole: &AtomicBool) {
    let mut buf = vec![0u8; BUFFER_SIZE];
    let result: io::Result<()> = loop {
        match from.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(_) if blackhole.load(Ordering::SeqCst) => {}
            Ok(n) => {
                if let Err(err) = to.write_all(&buf[..n]) {
                    break Err(err);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => break Err(err),
        }
    };
    match result {
        Ok(()) => {
            let _ = to.shutdown(Shutdown::Write);
        }
        Err(_) => {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        }
    }
}
