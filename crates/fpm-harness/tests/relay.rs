//! Integration tests of `CountingRelay`: counting, half-close forwarding,
//! relaying to PHP-FPM and thread cleanup.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::Request;
use fpm_harness::{CountingRelay, Fpm, FpmAddress, FpmConfig, Listen};

/// Echo server: echoes until EOF, then closes; one thread per connection.
fn echo_server() -> (FpmAddress, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            thread::spawn(move || {
                let mut buf = [0u8; 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    (FpmAddress::Tcp(addr), handle)
}

/// Threads of this process belonging to the relay listening on `port`.
fn relay_threads(port: u16) -> usize {
    let prefix = format!("r{port}");
    fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| fs::read_to_string(task.unwrap().path().join("comm")).ok())
        .filter(|name| {
            name.strip_prefix(&prefix)
                .and_then(|rest| rest.chars().next())
                .is_some_and(|c| c.is_ascii_alphabetic())
        })
        .count()
}

#[test]
fn relay_counts_total_current_and_max_concurrent_connections() {
    let (target, _server) = echo_server();
    let relay = CountingRelay::start(target).unwrap();
    assert_eq!(relay.total_connections(), 0);

    let mut a = TcpStream::connect(relay.addr()).unwrap();
    let mut b = TcpStream::connect(relay.addr()).unwrap();
    let mut c = TcpStream::connect(relay.addr()).unwrap();
    for (stream, msg) in [(&mut a, b"a"), (&mut b, b"b"), (&mut c, b"c")] {
        stream.write_all(msg).unwrap();
        let mut echoed = [0u8; 1];
        stream.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, msg);
    }
    assert_eq!(relay.current(), 3);
    drop((a, b, c));
    assert!(relay.wait_for_current(0, Duration::from_secs(5)));

    let mut d = TcpStream::connect(relay.addr()).unwrap();
    d.write_all(b"d").unwrap();
    d.read_exact(&mut [0u8; 1]).unwrap();
    assert_eq!(relay.total_connections(), 4);
    assert_eq!(relay.max_concurrent(), 3);
    assert_eq!(relay.current(), 1);

    relay.reset_counters();
    assert_eq!(relay.total_connections(), 0);
    assert_eq!(relay.max_concurrent(), 1);
}

#[test]
fn relay_forwards_half_close_and_delivers_everything_before_eof() {
    let (target, _server) = echo_server();
    let relay = CountingRelay::start(target).unwrap();
    let mut stream = TcpStream::connect(relay.addr()).unwrap();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let payload = payload.clone();
        thread::spawn(move || {
            stream.write_all(&payload).unwrap();
            // Our write side closes; the relay must pass the EOF on, so the
            // echo server finishes and closes, which we then see as EOF.
            stream.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut echoed = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.read_to_end(&mut echoed).unwrap();
    writer.join().unwrap();
    assert_eq!(echoed, payload);
    drop(stream);
    assert!(relay.wait_for_current(0, Duration::from_secs(5)));
}

#[test]
fn relay_keeps_the_other_direction_open_after_upstream_half_close() {
    // Upstream that sends a greeting, half-closes, then reads until EOF and
    // reports how much it received through a channel.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = FpmAddress::Tcp(listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(b"bye").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut received = Vec::new();
        conn.read_to_end(&mut received).unwrap();
        tx.send(received).unwrap();
    });
    let relay = CountingRelay::start(target).unwrap();
    let mut stream = TcpStream::connect(relay.addr()).unwrap();
    let mut greeting = Vec::new();
    stream.read_to_end(&mut greeting).unwrap();
    assert_eq!(greeting, b"bye");
    // Still writable after the upstream's EOF.
    stream.write_all(b"late data").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"late data"
    );
    assert!(relay.wait_for_current(0, Duration::from_secs(5)));
}

#[test]
fn relay_to_unix_socket_php_fpm_serves_requests() {
    let fpm = Fpm::start(FpmConfig::new().listen(Listen::Unix).workers(1)).unwrap();
    let relay = CountingRelay::start(fpm.address().clone()).unwrap();
    for _ in 0..3 {
        let response = Request::get("hello.php", "")
            .send(&relay.address())
            .unwrap();
        assert_eq!(response.body(), b"Hello, World!");
        // The relay notices the close asynchronously; wait so the next
        // connection does not overlap with this one's teardown.
        assert!(relay.wait_for_current(0, Duration::from_secs(5)));
    }
    assert_eq!(relay.total_connections(), 3);
    assert_eq!(relay.max_concurrent(), 1);
}

#[test]
fn close_all_drops_open_connections() {
    let (target, _server) = echo_server();
    let relay = CountingRelay::start(target).unwrap();
    let mut stream = TcpStream::connect(relay.addr()).unwrap();
    stream.write_all(b"x").unwrap();
    stream.read_exact(&mut [0u8; 1]).unwrap();
    relay.close_all();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(stream.read(&mut [0u8; 1]).unwrap_or(0), 0);
    assert!(relay.wait_for_current(0, Duration::from_secs(5)));
}

#[test]
fn refused_upstream_closes_client_connection() {
    let port = fpm_harness::free_port();
    let target = FpmAddress::Tcp(([127, 0, 0, 1], port).into());
    let relay = CountingRelay::start(target).unwrap();
    let mut stream = TcpStream::connect(relay.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(stream.read(&mut [0u8; 1]).unwrap_or(0), 0);
    assert_eq!(relay.total_connections(), 1);
    assert!(relay.wait_for_current(0, Duration::from_secs(5)));
}

#[test]
fn drop_joins_all_relay_threads_even_with_open_connections() {
    let (target, _server) = echo_server();
    let relay = CountingRelay::start(target).unwrap();
    let port = relay.addr().port();
    let streams: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(relay.addr()).unwrap();
            s.write_all(b"x").unwrap();
            s.read_exact(&mut [0u8; 1]).unwrap();
            s
        })
        .collect();
    // Accept thread plus two per connection.
    assert_eq!(relay_threads(port), 9);

    drop(relay);
    assert_eq!(relay_threads(port), 0);
    // The relayed connections were closed by the drop.
    for mut s in streams {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(s.read(&mut [0u8; 1]).unwrap_or(0), 0);
    }
}
