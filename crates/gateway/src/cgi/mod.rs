//! The CGI mapping step (route → **CGI mapping** → pool): one [`CgiRequest`] holds what
//! PHP-FPM is told about a request, and [`params`] writes it out as FastCGI params.
//!
//! - [`params`]: the CGI variables (the one list of their names), then the rest.
//! - `headers`: request headers → `HTTP_*`, and the ones that never reach PHP.
//! - `buffers`: the stack buffers values are formatted in.

mod buffers;
mod headers;
pub mod params;

use http::request::Parts;

use crate::peer::Peer;
use crate::tenant::Tenant;

/// Everything the CGI params of one request are built from, each piece once. `Debug`
/// leaves out the headers (cookies, credentials) and the tenant's param values.
#[derive(Clone, Copy)]
pub(crate) struct CgiRequest<'a> {
    /// The tenant the host selected; its params are appended last.
    pub tenant: &'a Tenant,
    /// The request line and headers.
    pub parts: &'a Parts,
    /// The authority as the client sent it, port included: `HTTP_HOST`
    /// (see [`request_authority`](crate::routing::request_authority)).
    pub authority: &'a str,
    /// The normalised host, without port: `SERVER_NAME`.
    pub server_name: &'a str,
    /// `SCRIPT_NAME`: the script's URL path (`/x.php`), from
    /// [`Resolution::Php`](crate::resolve::Resolution::Php).
    pub script_name: &'a str,
    /// `PATH_INFO`: what followed the script in the URL, if anything.
    pub path_info: Option<&'a str>,
    /// `DOCUMENT_ROOT`: the code root as PHP-FPM sees it (`fastcgi.fpm_root`).
    /// `SCRIPT_FILENAME` is this plus `script_name`.
    pub document_root: &'a str,
    /// The client, resolved once for this request (`REMOTE_*`, `SERVER_ADDR/PORT`,
    /// `HTTPS`).
    pub peer: Peer,
    /// The body length that will be sent as STDIN (`CONTENT_LENGTH`), if any body.
    pub content_length: Option<u64>,
}

impl std::fmt::Debug for CgiRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgiRequest")
            .field("tenant", &self.tenant.name)
            .field("method", &self.parts.method)
            .field("uri", &self.parts.uri)
            .field("authority", &self.authority)
            .field("server_name", &self.server_name)
            .field("script_name", &self.script_name)
            .field("path_info", &self.path_info)
            .field("document_root", &self.document_root)
            .field("peer", &self.peer)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}
