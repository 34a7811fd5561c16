//! Integration tests of `Nginx`: it starts from a caller-supplied `http` body
//! and can front a harness php-fpm.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use fpm_harness::{Fpm, FpmConfig, Listen, Nginx};

/// Sends a bodyless HTTP/1.0 GET and returns the raw response.
fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn nginx_starts_and_serves_static_fixture() {
    let nginx = Nginx::start(
        "server {\n\
         \x20   listen 127.0.0.1:{{PORT}};\n\
         \x20   root {{FIXTURES}};\n\
         }",
    )
    .unwrap();
    assert_ne!(nginx.port(), 0);
    assert_eq!(
        nginx.base_url(),
        format!("http://127.0.0.1:{}", nginx.port())
    );
    let response = http_get(nginx.port(), "/static/hello.txt");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("\r\n\r\nhello static\n"), "{response}");
}

#[test]
fn nginx_proxies_php_to_harness_fpm_over_unix_socket() {
    let fpm = Fpm::start(FpmConfig::new().listen(Listen::Unix).workers(1)).unwrap();
    let config = format!(
        "server {{\n\
         \x20   listen 127.0.0.1:{{{{PORT}}}};\n\
         \x20   root {{{{FIXTURES}}}};\n\
         \x20   location ~ \\.php$ {{\n\
         \x20       include {{{{FASTCGI_PARAMS}}}};\n\
         \x20       fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n\
         \x20       fastcgi_pass {};\n\
         \x20   }}\n\
         }}",
        fpm.address().to_upstream_string()
    );
    let nginx = Nginx::start(&config).unwrap();
    let response = http_get(nginx.port(), "/hello.php");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("\r\n\r\nHello, World!"), "{response}");

    let redirect = http_get(nginx.port(), "/redirect.php");
    assert!(redirect.starts_with("HTTP/1.1 302"), "{redirect}");
    assert!(
        redirect.contains("\r\nLocation: /elsewhere\r\n"),
        "{redirect}"
    );
}

#[test]
fn nginx_start_reports_config_errors_with_log_tail() {
    let err = Nginx::start("server { listen 127.0.0.1:{{PORT}}; bogus_directive on; }")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bogus_directive"), "{err}");
}

#[test]
fn fastcgi_params_path_points_to_distribution_file() {
    let path = Nginx::fastcgi_params_path();
    assert_eq!(path, std::path::Path::new("/etc/nginx/fastcgi_params"));
    assert!(path.is_file());
}

#[test]
fn drop_stops_nginx() {
    let nginx = Nginx::start("server { listen 127.0.0.1:{{PORT}}; return 204; }").unwrap();
    let port = nginx.port();
    let pid = nginx.master_pid().unwrap();
    drop(nginx);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z"), "{stat}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
