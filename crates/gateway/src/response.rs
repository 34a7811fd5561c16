//! Response mapping, the last step (FastCGI → **response mapping** → client): PHP-FPM's
//! CGI answer becomes an HTTP response without its hop-by-hop headers, and every
//! response (PHP's, a static file, a redirect, an error page) gets its final headers and
//! the request's record before it goes to the client.
//!
//! Whether the client gets a body is decided here, once, for every kind of answer (HEAD,
//! 1xx, 204, 304): [`GatewayBody::with_record`] then reads a bodiless PHP answer on to its
//! END_REQUEST so the connection is reused.

use http::header::{self, HeaderName};
use http::{HeaderValue, Response, StatusCode};

use crate::access::RequestRecord;
use crate::body::GatewayBody;
use crate::compression::{
    add_vary, encode_headers, judge, negotiate, ClientEncodings, Encoder, Policy, Verdict,
};

/// Headers that describe one hop and never pass through a gateway.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
];

/// PHP-FPM's response as HTTP: its status and headers, less the hop-by-hop ones, and its
/// body as it streams.
pub(crate) fn from_fastcgi(response: fcgi_core::Response) -> Response<GatewayBody> {
    let server = AnsweredBy(response.upstream().clone());
    let (status, mut headers, body) = response.into_parts();
    // PHP rarely sends any of them: one pass over its few headers is cheaper than hashing
    // each name for a removal that finds nothing.
    if headers.keys().any(is_hop_by_hop) {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        headers.remove("keep-alive");
        headers.remove("proxy-connection");
    }
    let mut response = Response::new(GatewayBody::fastcgi(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response.extensions_mut().insert(server);
    response
}

/// The PHP-FPM server that answered, carried from [`from_fastcgi`] to [`finish`] (which
/// puts it in the access record) in the response's extensions.
#[derive(Debug, Clone)]
struct AnsweredBy(fcgi_core::Upstream);

/// Moves the PHP-FPM server that answered from PHP's answer's `extensions` into
/// `record`, for an answer the gateway replaces with its own (a private file handed over
/// with `X-Accel-Redirect`), so the access log still names it.
pub(crate) fn keep_answered_by(extensions: &mut http::Extensions, record: &mut RequestRecord) {
    if let Some(AnsweredBy(server)) = extensions.remove::<AnsweredBy>() {
        record.upstream = Some(server);
    }
}

/// Whether a response header describes one hop only and must not be passed on.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == "keep-alive" || name == "proxy-connection"
}

/// The response as it goes to the client: our headers, and the request's record riding
/// on the body so the access log and usage are written when it is really finished. `head`
/// says the request was a HEAD.
///
/// Compression is decided here too, for every kind of answer alike ([`compression`]):
/// the client's `Accept-Encoding` against `policy`.
pub(crate) fn finish(
    mut response: Response<GatewayBody>,
    mut record: Box<RequestRecord>,
    head: bool,
    client: &ClientEncodings,
    policy: Policy<'_>,
) -> Response<GatewayBody> {
    finish_headers(&mut response);
    record.status = response.status().as_u16();
    if let Some(AnsweredBy(server)) = response.extensions_mut().remove::<AnsweredBy>() {
        record.upstream = Some(server);
    }
    let bodiless = is_bodiless(head, response.status());
    let response = compress(response, client, policy, bodiless);
    let (parts, body) = response.into_parts();
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    Response::from_parts(parts, body.with_record(record, content_length, bodiless))
}

/// Compresses `response` when the client and the answer allow it, adding `Vary` to every
/// answer that could have been compressed. `bodiless` answers (HEAD) get the headers
/// the GET would have, and no body to encode.
fn compress(
    response: Response<GatewayBody>,
    client: &ClientEncodings,
    policy: Policy<'_>,
    bodiless: bool,
) -> Response<GatewayBody> {
    if policy.offered.is_empty() {
        return response;
    }
    let chosen = negotiate(client.accept.as_ref(), policy.offered);
    let (mut parts, body) = response.into_parts();
    match judge(
        parts.status,
        &parts.headers,
        client.range,
        chosen.is_some(),
        policy.min_bytes,
    ) {
        Verdict::Never => Response::from_parts(parts, body),
        Verdict::VaryOnly => {
            add_vary(&mut parts.headers);
            Response::from_parts(parts, body)
        }
        Verdict::Compress => {
            let Some(encoding) = chosen else {
                return Response::from_parts(parts, body);
            };
            if bodiless {
                encode_headers(&mut parts.headers, encoding);
                return Response::from_parts(parts, body);
            }
            match Encoder::new(encoding) {
                Ok(encoder) => {
                    encode_headers(&mut parts.headers, encoding);
                    Response::from_parts(parts, body.compressed(encoder))
                }
                Err(err) => {
                    tracing::warn!(error = %err, encoding = encoding.as_str(), "cannot start an encoder; sending the body as it is");
                    add_vary(&mut parts.headers);
                    Response::from_parts(parts, body)
                }
            }
        }
    }
}

/// Whether the client gets no body whatever the answer holds: a HEAD, or a status that
/// has none (1xx, 204, 304).
fn is_bodiless(head: bool, status: StatusCode) -> bool {
    head || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Headers every response gets: our `Server`, and no `X-Powered-By`.
fn finish_headers(response: &mut Response<GatewayBody>) {
    let headers = response.headers_mut();
    // A scan of the few headers is cheaper than parsing and hashing the name to remove
    // it, and the header is usually absent (`expose_php = Off`).
    if headers.keys().any(|name| name == "x-powered-by") {
        headers.remove("x-powered-by");
    }
    headers.insert(header::SERVER, HeaderValue::from_static("fcgi-gateway"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_recognised_and_others_pass() {
        for name in [
            "connection",
            "transfer-encoding",
            "upgrade",
            "te",
            "trailer",
            "keep-alive",
            "proxy-connection",
        ] {
            assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["content-type", "set-cookie", "x-keep-alive", "location"] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }
}
