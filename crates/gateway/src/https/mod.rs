//! HTTPS decisions over a snapshot, below the request path: which certificate a
//! ClientHello gets ([`sni`], from the tenant registry and the certificate store
//! [`crate::tls`]).

pub mod sni;
