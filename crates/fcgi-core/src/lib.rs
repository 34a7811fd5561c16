//! FastCGI for Rust servers: a sans-IO codec and a pooled async client for PHP-FPM.
//!
//! (Overview written below once the client lands.)

pub mod proto;

pub use proto::params::{Params, ParamsError};
pub use proto::ProtocolError;
