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
//!   connection when a kept one turns out dead (PHP-FPM recycled its worker).
//! - `keepalive` (internal): the pool's logic, generic over what it pools: per-server
//!   bounds, fair queues, idle reaper. [`Pool`] is it over [`Connection`]s.
//! - [`Error`]: one opaque error with predicates (`is_connect`, `is_timeout`,
//!   `is_protocol`, `is_overloaded`).
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
