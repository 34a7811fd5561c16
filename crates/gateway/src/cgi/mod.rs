//! The CGI step of a request: which script runs ([`script`]) and the FastCGI params it
//! receives ([`params`]).

pub mod params;
pub mod script;
