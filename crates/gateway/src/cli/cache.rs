//! `gateway cache purge NAME [--url U]... [--prefix P] [--tag T]...`: the cache lives in
//! the running gateway, so this command asks its admin API (`[server] admin`, with the
//! configured token) to purge, as `POST /tenants/{name}/cache/purge`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::CliError;
use crate::cache::Purge;
use crate::config::Config;

/// How long the admin API has to answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Purges what `purge` names (everything when it names nothing) from tenant `name`'s
/// cache in the gateway serving the config at `path`; the text says how many URLs went.
pub fn cache_purge(path: &Path, name: &str, purge: &Purge) -> Result<String, CliError> {
    let config = Config::load(path)?;
    let Some(addr) = config.server.admin else {
        return Err(CliError::AdminOff {
            path: path.to_path_buf(),
        });
    };
    let token = config
        .server
        .admin_token
        .as_ref()
        .map(|token| token.expose().to_owned());
    let body = serde_json::json!({
        "urls": purge.urls,
        "prefix": purge.prefix,
        "tags": purge.tags,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::Admin(format!("cannot start a runtime: {err}")))?;
    let target = format!("/tenants/{name}/cache/purge");
    let (status, answer) = runtime.block_on(async {
        tokio::time::timeout(
            ADMIN_TIMEOUT,
            post(
                connect_address(addr),
                &target,
                token.as_deref(),
                body.to_string(),
            ),
        )
        .await
        .map_err(|_| CliError::Admin(format!("the admin API at {addr} did not answer in time")))?
    })?;
    let json: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    if status != StatusCode::OK {
        let message = json["detail"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
        return Err(CliError::Admin(format!("{status}: {message}")));
    }
    if json["cached"].as_bool() == Some(false) {
        return Ok(format!(
            "tenant {name} has no response cache; nothing purged\n"
        ));
    }
    let purged = json["purged"].as_u64().unwrap_or(0);
    Ok(format!(
        "purged {purged} URL(s) from tenant {name}'s cache\n"
    ))
}

/// Where to reach a listener bound to `addr`: a wildcard address through loopback.
fn connect_address(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// One JSON `POST` to the admin API: its status and body.
async fn post(
    addr: SocketAddr,
    target: &str,
    token: Option<&str>,
    body: String,
) -> Result<(StatusCode, Bytes), CliError> {
    let fail = |what: &str, err: &dyn std::fmt::Display| {
        CliError::Admin(format!("admin API at {addr}: {what}: {err}"))
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|err| fail("cannot connect (is the gateway running?)", &err))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| fail("handshake", &err))?;
    tokio::spawn(connection);
    let mut request = Request::post(target)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|err| fail("building the request", &err))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| fail("request", &err))?;
    let status = response.status();
    let answer = response
        .into_body()
        .collect()
        .await
        .map_err(|err| fail("reading the answer", &err))?
        .to_bytes();
    Ok((status, answer))
}
