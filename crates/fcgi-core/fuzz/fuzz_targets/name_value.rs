//! Fuzz target: arbitrary bytes as PARAMS content, through `NameValueIter` and `decode_pair`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fcgi_core_fuzz::name_value(data));
