//! Test payloads whose corruption shows (a byte pattern and the CRC-32 PHP computes), and
//! this process's memory, for tests that bound what streaming costs.

use bytes::Bytes;

/// A deterministic test payload byte: `k % 251`, so shifted or lost chunks show.
pub fn pattern_byte(k: u64) -> u8 {
    (k % 251) as u8
}

/// `len` bytes of [`pattern_byte`] starting at offset `from`.
pub fn pattern(from: u64, len: usize) -> Bytes {
    (0..len as u64).map(|i| pattern_byte(from + i)).collect()
}

/// CRC-32 (IEEE, as PHP's `crc32b` computes it), fed in pieces.
#[derive(Debug, Clone)]
pub struct Crc32 {
    table: [u32; 256],
    state: u32,
}

impl Default for Crc32 {
    fn default() -> Self {
        let mut table = [0u32; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        Self {
            table,
            state: 0xFFFF_FFFF,
        }
    }
}

impl Crc32 {
    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.state =
                self.table[((self.state ^ u32::from(b)) & 0xFF) as usize] ^ (self.state >> 8);
        }
    }

    /// The checksum as PHP prints it: 8 lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:08x}", self.state ^ 0xFFFF_FFFF)
    }
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
