//! Embedding the gateway in your own hyper server: `/api/...` is answered by a handler of
//! this program (JSON), every other path goes through the gateway's `tower::Service`
//! (tenant by Host, static files, PHP-FPM with the tenant's params).
//!
//! # Running it
//! It starts no PHP-FPM: point it at one, like `scripts/demo.sh` does. From the
//! repository root, with the demo's PHP-FPM running on `.demo/php-fpm.sock` (start
//! `scripts/demo.sh` once and stop its gateway, or run your own pool there):
//!
//! ```text
//! cargo run -p gateway --example embed -- --config tenants.toml --listen 127.0.0.1:8081
//! curl http://127.0.0.1:8081/api/health                          # this program
//! curl -H 'Host: centro1.example.org' http://127.0.0.1:8081/     # PHP, via the gateway
//! ```
//!
//! `--config` defaults to `tenants.toml`, `--listen` to `127.0.0.1:8081`. Logs go to
//! stderr (`RUST_LOG` filters them); Ctrl-C stops it gracefully.
//!
//! Only the request path is embedded: config reloads, the usage flusher and the admin
//! API run in `Gateway::serve`, which this program does not call.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use gateway::body::GatewayBody;
use gateway::config::Config;
use gateway::peer::ConnInfo;
use gateway::service::GatewayService;
use gateway::Gateway;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tower::ServiceExt;

struct Args {
    config: PathBuf,
    listen: SocketAddr,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: PathBuf::from("tenants.toml"),
        listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--config" => args.config = value.into(),
            "--listen" => {
                args.listen = value
                    .parse()
                    .map_err(|_| format!("--listen {value:?} is not IP:port"))?
            }
            other => return Err(format!("unknown argument {other:?} (--config, --listen)")),
        }
    }
    Ok(args)
}

/// This program's own API: a tiny JSON handler that never touches PHP.
fn api(req: &Request<Incoming>) -> Response<GatewayBody> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/api/health") => (StatusCode::OK, r#"{"status":"ok"}"#.to_owned()),
        (&Method::GET, "/api/whoami") => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let host = serde_json::Value::from(host);
            (StatusCode::OK, format!(r#"{{"host":{host}}}"#))
        }
        _ => (
            StatusCode::NOT_FOUND,
            r#"{"error":"no such API endpoint"}"#.to_owned(),
        ),
    };
    let mut response = Response::new(GatewayBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Routes one request: `/api/...` here, the rest to the gateway.
async fn route(
    gateway: GatewayService,
    conn: ConnInfo,
    mut req: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    if req.uri().path().starts_with("/api/") {
        return Ok(api(&req));
    }
    // REMOTE_ADDR, SERVER_ADDR and SERVER_PORT come from here; without it PHP sees 0.0.0.0.
    req.extensions_mut().insert(conn);
    gateway.oneshot(req).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    gateway::logging::init(false);
    let args = parse_args()?;
    let mut config = Config::load(&args.config)?;
    // This program owns the listener. `Gateway::bind` binds the config's addresses, so
    // give it a throwaway loopback port that nothing is sent to; only its service is used.
    config.server.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
    // The admin API is served by `Gateway::serve` only; do not bind its port for nothing.
    config.server.admin = None;
    let service = Gateway::bind(config).await?.service();

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %args.listen, config = %args.config.display(), "embed example listening");
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    continue;
                }
            },
            _ = &mut ctrl_c => break,
        };
        let conn = ConnInfo {
            remote,
            local: stream.local_addr().unwrap_or(args.listen),
            tls: false,
            tls_session: None,
        };
        let service = service.clone();
        let handler = service_fn(move |req| route(service.clone(), conn, req));
        let connection = builder
            .serve_connection(TokioIo::new(stream), handler)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%remote, error = %err, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: finishing in-flight requests");
    graceful.shutdown().await;
    Ok(())
}
