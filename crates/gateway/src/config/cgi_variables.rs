//! The CGI variables the gateway derives from each request, named once: a constant per
//! name for the CGI mapping (`cgi::params`) and the list the config refuses as tenant
//! param names. It lives with the config so the config needs nothing from the request
//! path.

/// Declares each CGI variable the gateway derives from a request once: a constant per
/// name (for the CGI mapping's inserts) and the list of them all ([`CGI_VARIABLES`],
/// which the config refuses as tenant param names).
macro_rules! cgi_variables {
    ($($name:ident),+ $(,)?) => {
        /// The names of the CGI variables, one constant each.
        pub(crate) mod var {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                pub(crate) const $name: &str = stringify!($name);
            )+
        }

        /// Every CGI variable the gateway derives from a request. A tenant param with one
        /// of these names would silently replace the request's own value (tenant params
        /// are sent last and PHP-FPM keeps the last value), so the config refuses them.
        pub const CGI_VARIABLES: &[&str] = &[$(var::$name),+];
    };
}

cgi_variables! {
    REQUEST_METHOD,
    SCRIPT_FILENAME,
    SCRIPT_NAME,
    REQUEST_URI,
    DOCUMENT_URI,
    DOCUMENT_ROOT,
    QUERY_STRING,
    CONTENT_TYPE,
    CONTENT_LENGTH,
    SERVER_PROTOCOL,
    GATEWAY_INTERFACE,
    SERVER_SOFTWARE,
    REMOTE_ADDR,
    REMOTE_PORT,
    SERVER_ADDR,
    SERVER_PORT,
    SERVER_NAME,
    REQUEST_SCHEME,
    HTTPS,
    REDIRECT_STATUS,
    PATH_INFO,
    PATH_TRANSLATED,
    SSL_PROTOCOL,
    SSL_CIPHER,
}
