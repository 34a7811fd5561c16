//! Request headers → `HTTP_*` CGI variables: repeats joined (cookies with `; `), and the
//! headers that must never reach PHP dropped (Host, httpoxy's `Proxy`, names with `_`,
//! and any that would shadow a tenant param).

use std::iter::Peekable;

use fcgi_core::Params;
use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;

use super::buffers::JoinBuf;
use super::params::ParamsBuildError;
use crate::tenant::Tenant;

/// Appends each request header as `HTTP_*`, repeats joined, skipping the ones that must
/// not reach PHP.
pub(super) fn insert_headers(
    tenant: &Tenant,
    headers: &HeaderMap,
    join: &mut JoinBuf,
    params: &mut Params,
) -> Result<(), ParamsBuildError> {
    // `HeaderMap::iter` yields all values of one name back to back, each paired with a
    // reference to the same stored name; that is how repeats are found without a hash
    // lookup per header (the joining tests fail should that ever change).
    let mut iter = headers.iter().peekable();
    while let Some((name, first)) = iter.next() {
        let name_str = name.as_str();
        // Host was sent as the authority the tenant was chosen by. `Proxy` is httpoxy:
        // as HTTP_PROXY it would set the proxy of PHP's HTTP clients. A name with `_`
        // would map onto the same variable as its `-` twin (`X_Forwarded_For` shadowing
        // `X-Forwarded-For`), so like nginx's default such headers are dropped.
        // Every other name becomes `HTTP_*`, which no CGI variable and no `PHP_VALUE`
        // starts with; tenant params are validated never to start with it either, and
        // the flag keeps this correct should that rule ever change.
        // `X-Sendfile-Type` and `X-Accel-Mapping` are what the gateway tells PHP about
        // X-Accel-Redirect (sent as params to tenants with a private root); a client's
        // must never stand in for them.
        if name == header::HOST
            || name_str == "proxy"
            || name_str.contains('_')
            || name_str == "x-sendfile-type"
            || name_str == "x-accel-mapping"
            || (tenant.shadows_headers && shadows_tenant_param(tenant, name_str))
        {
            while next_value_of(&mut iter, name).is_some() {}
            continue;
        }
        let value = match next_value_of(&mut iter, name) {
            None => first.as_bytes(),
            Some(second) => {
                // PHP parses one Cookie string, with `; ` between pairs (RFC 6265); HTTP/2
                // clients split cookies into separate fields.
                let separator: &[u8] = if name == header::COOKIE { b"; " } else { b", " };
                let rest = std::iter::from_fn(|| next_value_of(&mut iter, name));
                join.join_values(
                    [first, second]
                        .into_iter()
                        .chain(rest)
                        .map(|v| v.as_bytes()),
                    separator,
                )
            }
        };
        params
            .insert_with_prefix(b"HTTP_", name_str.as_bytes(), cgi_name_byte, value)
            .map_err(|_| ParamsBuildError::HeaderTooLarge {
                header: name.clone(),
            })?;
    }
    Ok(())
}

/// The next value if it belongs to the same stored header as `name`.
fn next_value_of<'h>(
    iter: &mut Peekable<header::Iter<'h, HeaderValue>>,
    name: &HeaderName,
) -> Option<&'h HeaderValue> {
    iter.next_if(|(next, _)| std::ptr::eq(*next, name))
        .map(|(_, value)| value)
}

/// Maps a (lower-case) header name byte to its CGI form: `x-forwarded-for` →
/// `X_FORWARDED_FOR`.
fn cgi_name_byte(b: u8) -> u8 {
    if b == b'-' {
        b'_'
    } else {
        b.to_ascii_uppercase()
    }
}

fn shadows_tenant_param(tenant: &Tenant, header: &str) -> bool {
    let mut name = Vec::with_capacity(5 + header.len());
    name.extend_from_slice(b"HTTP_");
    name.extend(header.bytes().map(cgi_name_byte));
    tenant.param_names.contains(name.as_slice())
}
