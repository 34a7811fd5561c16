//! Test payloads whose corruption shows (a byte pattern; the CRC-32 PHP computes is
//! `fpm_harness::Crc32`), and this process's memory, for tests that bound what streaming
//! costs.

use bytes::Bytes;

/// A deterministic test payload byte: `k % 251`, so shifted or lost chunks show.
pub fn pattern_byte(k: u64) -> u8 {
    (k % 251) as u8
}

/// `len` bytes of [`pattern_byte`] starting at offset `from`.
pub fn pattern(from: u64, len: usize) -> Bytes {
    (0..len as u64).map(|i| pattern_byte(from + i)).collect()
}

/// The peak resident set size of this process (`VmHWM`), in bytes.
pub fn peak_rss() -> u64 {
    proc_status_kib("VmHWM:") * 1024
}

/// The current resident set size of this process (`VmRSS`), in bytes.
pub fn current_rss() -> u64 {
    proc_status_kib("VmRSS:") * 1024
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}
