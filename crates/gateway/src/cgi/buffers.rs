//! Stack buffers the CGI mapping formats values in, so that building a request's params
//! allocates nothing but the params themselves: IP addresses, and values concatenated
//! from two pieces (`SCRIPT_FILENAME` is the root plus the script). Numbers go through
//! `itoa`'s stack buffer.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// Formats IP addresses without allocating. 45 bytes hold the longest IPv6 text form.
pub(super) struct AddrBuf {
    buf: [u8; 48],
    len: usize,
}

impl AddrBuf {
    pub(super) fn new() -> Self {
        Self {
            buf: [0; 48],
            len: 0,
        }
    }

    pub(super) fn format(&mut self, ip: IpAddr) -> &[u8] {
        self.len = 0;
        match ip {
            IpAddr::V4(v4) => self.format_v4(v4),
            // `Display` for `Ipv6Addr` writes straight into the formatter; the buffer
            // always has room, so the result is never an error.
            IpAddr::V6(v6) => {
                let _ = write!(self, "{v6}");
            }
        }
        &self.buf[..self.len]
    }

    /// The hot case, by hand: cheaper than going through `fmt`.
    fn format_v4(&mut self, ip: Ipv4Addr) {
        let mut num = itoa::Buffer::new();
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                self.buf[self.len] = b'.';
                self.len += 1;
            }
            let digits = num.format(octet).as_bytes();
            self.buf[self.len..self.len + digits.len()].copy_from_slice(digits);
            self.len += digits.len();
        }
    }
}

impl std::fmt::Write for AddrBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Builds a value from pieces: on the stack when it fits, else in a heap buffer kept for
/// the rest of the request.
pub(super) struct JoinBuf {
    stack: [u8; 512],
    heap: Vec<u8>,
}

impl JoinBuf {
    pub(super) fn new() -> Self {
        Self {
            stack: [0; 512],
            heap: Vec::new(),
        }
    }

    pub(super) fn concat(&mut self, a: &[u8], b: &[u8]) -> &[u8] {
        let len = a.len() + b.len();
        if len <= self.stack.len() {
            self.stack[..a.len()].copy_from_slice(a);
            self.stack[a.len()..len].copy_from_slice(b);
            &self.stack[..len]
        } else {
            self.heap.clear();
            self.heap.extend_from_slice(a);
            self.heap.extend_from_slice(b);
            &self.heap
        }
    }

    pub(super) fn join_values<'v>(
        &mut self,
        values: impl Iterator<Item = &'v [u8]>,
        separator: &[u8],
    ) -> &[u8] {
        // Repeated headers are rare and can be long (cookies): always the heap.
        self.heap.clear();
        for (i, value) in values.enumerate() {
            if i > 0 {
                self.heap.extend_from_slice(separator);
            }
            self.heap.extend_from_slice(value);
        }
        &self.heap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_and_address_buffers_format_edge_values() {
        let mut n = itoa::Buffer::new();
        assert_eq!(n.format(0u64).as_bytes(), b"0");
        assert_eq!(
            n.format(u64::MAX).as_bytes(),
            u64::MAX.to_string().as_bytes()
        );
        let mut a = AddrBuf::new();
        assert_eq!(
            a.format("255.255.255.255".parse().unwrap()),
            b"255.255.255.255"
        );
        assert_eq!(a.format("0.0.0.0".parse().unwrap()), b"0.0.0.0");
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        assert_eq!(a.format(longest), longest.to_string().as_bytes());
    }

    #[test]
    fn long_concatenations_fall_back_to_the_heap() {
        let mut j = JoinBuf::new();
        assert_eq!(j.concat(b"/a", b"/b.php"), b"/a/b.php");
        let long = "d".repeat(600);
        let joined = j.concat(b"/root", long.as_bytes()).to_vec();
        assert_eq!(joined, [&b"/root"[..], long.as_bytes()].concat());
    }
}
