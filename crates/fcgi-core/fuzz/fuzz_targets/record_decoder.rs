//! Fuzz target: arbitrary bytes as a server's answer, through `RecordDecoder` and
//! `ResponseDecoder` (whole and byte by byte, which must agree).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fcgi_core_fuzz::record_decoder(data));
