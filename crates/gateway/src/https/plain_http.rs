//! What a plain-HTTP request gets for TLS's sake, before routing: the answer to an
//! HTTP-01 challenge, or a 308 redirect to HTTPS for tenants that have a certificate.

use http::{header, HeaderValue, Request, Response, StatusCode};

use super::sni::{self, Choice};
use crate::body::GatewayBody;
use crate::peer::ConnInfo;
use crate::snapshot::{SharedState, Snapshot};

/// Path prefix of HTTP-01 challenges.
const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// What a plain-HTTP request gets before routing, for TLS's sake: the answer to an
/// HTTP-01 challenge, or a 308 to HTTPS when `redirect_https` is on and the tenant has a
/// certificate. `None`: route it as usual.
pub fn plain_http_answer<B>(
    state: &SharedState,
    snapshot: &Snapshot,
    req: &Request<B>,
    conn: ConnInfo,
) -> Option<Response<GatewayBody>> {
    if conn.tls {
        return None;
    }
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(HTTP01_PREFIX) {
        let answer = state.tls.http01_answer(token)?;
        let mut response = Response::new(GatewayBody::full(answer));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return Some(response);
    }
    let server = &snapshot.config.server;
    let port = state.tls.https_port();
    if !server.redirect_https || port == 0 {
        return None;
    }
    // Behind a TLS-terminating balancer the client already speaks HTTPS.
    let proxied = server
        .trusted_proxies
        .iter()
        .any(|net| net.contains(&conn.remote.ip().to_canonical()));
    if proxied && req.headers().contains_key("x-forwarded-proto") {
        return None;
    }
    let authority = match req.uri().authority() {
        Some(authority) => authority.as_str(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    let host = crate::routing::normalize_host(authority)?;
    if !matches!(
        sni::choose(&state.tls, snapshot, Some(&host)),
        Choice::Cert { .. }
    ) {
        return None;
    }
    let location = match (port, req.uri().path_and_query()) {
        (443, pq) => format!("https://{host}{}", pq.map_or("/", |pq| pq.as_str())),
        (port, pq) => format!("https://{host}:{port}{}", pq.map_or("/", |pq| pq.as_str())),
    };
    let location = HeaderValue::from_str(&location).ok()?;
    let mut response = Response::new(GatewayBody::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    Some(response)
}
