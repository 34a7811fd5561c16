//! Client connections as a resource: how many may be open ([`limit`]) and how long one
//! may stay silent or idle ([`deadline`]). The server ([`crate::server`]) applies both to
//! every accepted connection.

pub mod deadline;
pub mod limit;

pub use deadline::{Activity, Expired, GuardedBody, RequestGuard, Timeouts, TrackedIo};
pub use limit::{ConnectionLimit, ConnectionPermit};
