//! PHP-FPM's own status page (`pm.status_path`), asked over FastCGI directly: the CGI
//! params that reach it. Tests read it to see what the workers are doing.

/// The path the harness's PHP-FPM serves its status page on, unless configured otherwise.
pub const STATUS_PATH: &str = "/fpm-status";

/// The CGI params of a `GET` of the status page with `query` (`json`, `json&full`). FPM
/// matches the path on `SCRIPT_NAME` and never runs a script for it.
pub fn status_page_params(query: &str) -> [(&'static str, String); 7] {
    [
        ("GATEWAY_INTERFACE", "CGI/1.1".to_owned()),
        ("SERVER_PROTOCOL", "HTTP/1.1".to_owned()),
        ("REQUEST_METHOD", "GET".to_owned()),
        ("SCRIPT_NAME", STATUS_PATH.to_owned()),
        ("SCRIPT_FILENAME", STATUS_PATH.to_owned()),
        ("REQUEST_URI", format!("{STATUS_PATH}?{query}")),
        ("QUERY_STRING", query.to_owned()),
    ]
}
