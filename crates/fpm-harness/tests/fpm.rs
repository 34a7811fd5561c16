//! Integration tests of `Fpm`: starting, killing, restarting and reloading a
//! real php-fpm.

mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::Request;
use fpm_harness::{Fpm, FpmAddress, FpmConfig, Listen};

fn hello(addr: &FpmAddress) -> String {
    let response = Request::get("hello.php", "")
        .send(addr)
        .expect("hello.php request");
    response.body_text()
}

#[test]
fn starts_on_tcp_and_accepts_connections() {
    let fpm = Fpm::start(FpmConfig::new().workers(2)).unwrap();
    let FpmAddress::Tcp(addr) = fpm.address() else {
        panic!("expected a TCP address, got {:?}", fpm.address());
    };
    assert!(addr.ip().is_loopback());
    assert_eq!(fpm.address().to_upstream_string(), addr.to_string());
    TcpStream::connect(addr).unwrap();
    assert_eq!(hello(fpm.address()), "Hello, World!");
}

#[test]
fn starts_on_unix_socket_and_accepts_connections() {
    let fpm = Fpm::start(FpmConfig::new().listen(Listen::Unix).workers(2)).unwrap();
    let FpmAddress::Unix(path) = fpm.address() else {
        panic!("expected a Unix address, got {:?}", fpm.address());
    };
    assert!(path.starts_with(fpm.dir()));
    assert_eq!(
        fpm.address().to_upstream_string(),
        format!("unix:{}", path.display())
    );
    UnixStream::connect(path).unwrap();
    assert_eq!(hello(fpm.address()), "Hello, World!");
}

#[test]
fn static_pool_has_configured_number_of_workers() {
    let fpm = Fpm::start(FpmConfig::new().workers(3)).unwrap();
    let workers = fpm.worker_pids().unwrap();
    assert_eq!(workers.len(), 3, "workers: {workers:?}");
    assert!(!workers.contains(&fpm.master_pid().unwrap()));
}

fn kill_then_restart_reuses_address(listen: Listen) {
    let mut fpm = Fpm::start(FpmConfig::new().listen(listen).workers(2)).unwrap();
    let address = fpm.address().clone();
    let old_master = fpm.master_pid().unwrap();
    let old_workers = fpm.worker_pids().unwrap();

    fpm.kill().unwrap();
    assert_eq!(fpm.master_pid(), None);
    assert!(!fpm.is_running());
    assert!(
        Request::get("hello.php", "").send(&address).is_err(),
        "killed php-fpm still answers"
    );
    for pid in &old_workers {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "worker {pid} survived the kill: {stat}"
        );
    }

    fpm.restart().unwrap();
    assert_eq!(fpm.address(), &address);
    assert_ne!(fpm.master_pid(), Some(old_master));
    assert_eq!(hello(&address), "Hello, World!");
}

#[test]
fn kill_then_restart_works_on_the_same_tcp_address() {
    kill_then_restart_reuses_address(Listen::Tcp);
}

#[test]
fn kill_then_restart_works_on_the_same_unix_socket() {
    kill_then_restart_reuses_address(Listen::Unix);
}

#[test]
fn restart_while_running_replaces_the_instance() {
    let mut fpm = Fpm::start(FpmConfig::new().workers(1)).unwrap();
    let old_master = fpm.master_pid().unwrap();
    fpm.restart().unwrap();
    assert_ne!(fpm.master_pid(), Some(old_master));
    assert_eq!(hello(fpm.address()), "Hello, World!");
}

#[test]
fn reload_keeps_master_and_replaces_workers() {
    let mut fpm = Fpm::start(FpmConfig::new().workers(2)).unwrap();
    let master = fpm.master_pid().unwrap();
    let old: HashSet<u32> = fpm.worker_pids().unwrap().into_iter().collect();

    fpm.reload_and_wait().unwrap();

    assert_eq!(fpm.master_pid(), Some(master));
    let new: HashSet<u32> = fpm.worker_pids().unwrap().into_iter().collect();
    assert_eq!(new.len(), 2);
    assert!(old.is_disjoint(&new), "old {old:?} new {new:?}");
    assert_eq!(hello(fpm.address()), "Hello, World!");
}

#[test]
fn graceful_reload_lets_in_flight_request_finish() {
    let fpm = Fpm::start(FpmConfig::new().workers(1)).unwrap();
    let address = fpm.address().clone();
    let in_flight = std::thread::spawn(move || Request::get("sleep.php", "ms=700").send(&address));
    // Let the request reach the worker.
    std::thread::sleep(Duration::from_millis(200));
    fpm.reload().unwrap();
    let response = in_flight.join().unwrap().unwrap();
    assert_eq!(response.body_text(), "slept 700");
}

#[test]
fn max_requests_recycles_workers() {
    let fpm = Fpm::start(FpmConfig::new().workers(1).max_requests(2)).unwrap();
    let pids: Vec<String> = (0..4)
        .map(|_| {
            Request::get("info.php", "")
                .send(fpm.address())
                .unwrap()
                .body_text()
        })
        .collect();
    assert_eq!(pids[0], pids[1]);
    assert_ne!(pids[1], pids[2]);
    assert_eq!(pids[2], pids[3]);
}

#[test]
fn status_page_is_served_at_configured_path() {
    let fpm = Fpm::start(FpmConfig::new().workers(1)).unwrap();
    let mut request = Request::get("fpm-status", "");
    request.extra = vec![("SCRIPT_NAME", "/fpm-status")];
    let response = request.send(fpm.address()).unwrap();
    let body = response.body_text();
    assert!(body.contains("pool:") && body.contains("harness"), "{body}");
    assert!(body.contains("process manager:      static"), "{body}");
}

#[test]
fn start_fails_with_log_tail_when_config_is_invalid() {
    let err = Fpm::start(FpmConfig::new().pool_directive("pm.bogus_directive", "1")).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("exited"), "{message}");
    assert!(message.contains("bogus_directive"), "{message}");
}

#[test]
fn log_contains_worker_stderr_and_startup_notice() {
    let fpm = Fpm::start(FpmConfig::new().workers(1)).unwrap();
    Request::get("stderr.php", "lines=2")
        .send(fpm.address())
        .unwrap();
    assert!(
        fpm.wait_for_log("line 2", Duration::from_secs(5)),
        "log: {}",
        fpm.log_contents().unwrap()
    );
    assert!(fpm
        .log_contents()
        .unwrap()
        .contains("ready to handle connections"));
}

#[test]
fn drop_kills_master_and_workers() {
    let fpm = Fpm::start(FpmConfig::new().workers(2)).unwrap();
    let mut pids = fpm.worker_pids().unwrap();
    pids.push(fpm.master_pid().unwrap());
    drop(fpm);
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "process {pid} survived drop: {stat}"
        );
    }
}
