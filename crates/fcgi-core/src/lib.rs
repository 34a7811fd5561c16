//! FastCGI for Rust servers: a sans-IO codec and a pooled async client for PHP-FPM.
//!
//! # Layout
//! - [`proto`]: the codec. Records, name-value pairs, CGI response heads and the response
//!   state machine; no IO, fuzzed. Encoders write into any `BufMut`; decoders take a
//!   `BytesMut` and return `Ok(None)` when they need more bytes.
//! - [`Connection`]: one connection, one request at a time, over TCP or a Unix socket.
//!   The request body streams out as STDIN; the response comes back as soon as its CGI
//!   head is parsed, its body a stream of `Bytes` ([`ResponseBody`]).
//! - [`Pool`]: a bounded keep-alive pool with fair per-key queues, idle timeout, a
//!   liveness check before reuse and one retry of idempotent requests on a fresh
//!   connection when a kept one turns out dead (PHP-FPM recycled its worker). Over one
//!   server ([`Pool::new`]) or several ([`Pool::with_servers`]: per-server bound, weight,
//!   backup; health checks with PHP-FPM's `ping.path`; failover).
//! - `keepalive` (internal): the pool's logic, generic over what it pools: per-server
//!   bounds, fair queues, idle reaper. [`Pool`] is it over [`Connection`]s.
//! - [`Error`]: one opaque error with predicates (`is_connect`, `is_timeout`,
//!   `is_protocol`, `is_overloaded`, `is_all_down`).
//!
//! # Example: a pooled request
//! ```no_run
//! use fcgi_core::{Params, Pool, PoolConfig, Request, Upstream};
//! use http_body_util::BodyExt;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream: Upstream = "127.0.0.1:9000".parse()?;
//! let pool = Pool::new(upstream, PoolConfig::default());
//!
//! let mut params = Params::new();
//! params.insert("REQUEST_METHOD", "GET")?;
//! params.insert("SCRIPT_FILENAME", "/srv/app/index.php")?;
//! params.insert("QUERY_STRING", "")?;
//!
//! let response = pool.send(Request::new(params)).await?;
//! println!("status {}", response.status());
//! let mut body = response.into_body();
//! while let Some(frame) = body.frame().await {
//!     if let Ok(chunk) = frame?.into_data() {
//!         print!("{}", String::from_utf8_lossy(&chunk));
//!     }
//! }
//! # Ok(())
//! # }
//! ```

//!
//! # Example: several servers
//! ```no_run
//! use std::time::Duration;
//! use fcgi_core::{HealthConfig, Ping, Pool, PoolConfig, ServerConfig};
//!
//! # fn build() -> Result<Pool, Box<dyn std::error::Error>> {
//! let mut heavy = ServerConfig::new("10.0.0.12:9000".parse()?, 16);
//! heavy.weight = 2;
//! let mut backup = ServerConfig::new("unix:/run/php/php8.2-fpm.sock".parse()?, 8);
//! backup.backup = true;
//! let servers = vec![ServerConfig::new("10.0.0.11:9000".parse()?, 16), heavy, backup];
//! let health = HealthConfig {
//!     // PHP-FPM's pool needs `ping.path = /fpm-ping` (its `ping.response` is `pong`).
//!     ping: Some(Ping { path: "/fpm-ping".into(), response: "pong".into() }),
//!     interval: Duration::from_secs(2),
//!     timeout: Duration::from_secs(1),
//!     fails: 2,
//!     passes: 2,
//! };
//! // Inside a tokio runtime: the checks run in a background task.
//! let pool = Pool::with_servers(servers, PoolConfig::default(), health)?;
//! // `response.upstream()` names the server that answered; `pool.server_stats()` gives
//! // each server's health, connections in use and idle, failures and checks.
//! # Ok(pool)
//! # }
//! ```
// No `unwrap`/`expect` outside tests: what comes from the network, a file or the
// config fails with a typed error instead.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod client;
mod error;
mod keepalive;
pub mod pool;
pub mod proto;
mod upstream;

pub use client::{ClientConfig, Connection, QueueKey, Request, Response, ResponseBody, StderrSink};
pub use error::Error;
pub use pool::{
    HealthConfig, InvalidPool, Ping, Pool, PoolConfig, PoolStats, ServerConfig, ServerStats,
};
pub use proto::params::{Params, ParamsError};
pub use proto::record::{EndRequestBody, ProtocolStatus};
pub use proto::ProtocolError;
pub use upstream::{InvalidUpstream, Upstream};
