//! Static files under the shared root, served by tower-http's `ServeFile`: content types,
//! ETag/Last-Modified, 304, Range/206 and HEAD.
//!
//! Which paths may be served at all (never `.php` source, never dotfiles, never outside the
//! root) is decided earlier, in [`crate::cgi::script`]; this module only serves a file
//! already known to be safe.

use std::path::Path;

use http::{header, HeaderValue, Request, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::body::GatewayBody;
use crate::error::GatewayError;

/// Serves one regular file for `req` (method and conditional/range headers are honoured).
pub async fn serve_file<B>(
    file: &Path,
    req: Request<B>,
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: Send + 'static,
{
    let response = ServeFile::new(file)
        .oneshot(req)
        .await
        .map_err(|err| GatewayError::internal(format!("serving {}: {err}", file.display())))?;
    let (mut parts, body) = response.into_parts();
    // Files are shared by every tenant; nothing in them varies by cookie or auth.
    parts
        .headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    Ok(Response::from_parts(parts, GatewayBody::static_file(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn serves_content_type_etag_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("style.css");
        std::fs::write(&file, "body { color: red }").unwrap();
        let response = serve_file(&file, Request::new(())).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/css");
        assert!(response.headers().contains_key(header::LAST_MODIFIED));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"body { color: red }");

        let ranged = Request::builder()
            .header(header::RANGE, "bytes=0-3")
            .body(())
            .unwrap();
        let response = serve_file(&file, ranged).await.unwrap();
        assert_eq!(response.status(), 206);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"body");
    }
}
