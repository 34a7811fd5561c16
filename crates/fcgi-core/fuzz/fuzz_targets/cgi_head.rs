//! Fuzz target: arbitrary bytes as the start of STDOUT, through `find_head_end`,
//! `parse_head`, and `ResponseDecoder` (which must agree with them).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fcgi_core_fuzz::cgi_head(data));
