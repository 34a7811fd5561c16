//! HTTPS decisions over a snapshot, below the request path: which certificate a
//! ClientHello gets ([`sni`], from the tenant registry and the certificate store
//! [`crate::tls`]) and what plain HTTP answers for TLS's sake ([`plain_http`]: HTTP-01
//! challenges, redirects to HTTPS).

pub mod plain_http;
pub mod sni;
