//! FastCGI name-value pairs: the encoding of the PARAMS stream (and of GET_VALUES).
//!
//! A length below 128 takes one byte; a longer one takes four bytes with the top bit set.
//! [`Params`] keeps pairs already encoded, in insertion order, so building a request's
//! environment costs one growing buffer and framing it into records is a copy.

use bytes::{BufMut, Bytes, BytesMut};

use super::record::MAX_CONTENT_LEN;

/// The largest length a name or value can declare (31 bits).
pub const MAX_NAME_VALUE_LEN: usize = 0x7fff_ffff;

/// Errors building a set of params.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// One pair does not fit in a single PARAMS record. PHP-FPM parses PARAMS one record
    /// at a time and rejects a pair that crosses records, so such a pair cannot be sent.
    #[error("param {name:?} is {encoded_len} bytes encoded; a pair must fit one {MAX_CONTENT_LEN}-byte record")]
    PairTooLarge {
        /// The name (cut to 64 bytes, lossily decoded) of the offending pair.
        name: String,
        /// Its encoded size.
        encoded_len: usize,
    },
}

impl ParamsError {
    /// The name of the param that did not fit.
    pub fn name(&self) -> &str {
        match self {
            Self::PairTooLarge { name, .. } => name,
        }
    }
}

/// Errors decoding name-value pairs: the peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameValueError {
    /// The content ended in the middle of a length or of a name or value.
    #[error("name-value pair truncated at byte {offset}")]
    Truncated {
        /// Offset of the pair that is cut short.
        offset: usize,
    },
}

/// Size of the length prefix for a name or value of `len` bytes.
#[inline]
fn length_prefix_len(len: usize) -> usize {
    if len < 128 {
        1
    } else {
        4
    }
}

/// Size of one pair once encoded.
#[inline]
pub fn encoded_pair_len(name_len: usize, value_len: usize) -> usize {
    length_prefix_len(name_len) + length_prefix_len(value_len) + name_len + value_len
}

#[inline]
fn put_length<B: BufMut>(dst: &mut B, len: usize) {
    if len < 128 {
        dst.put_u8(len as u8);
    } else {
        dst.put_u32(len as u32 | 0x8000_0000);
    }
}

/// Encodes one name-value pair into `dst`.
///
/// The caller checks sizes: names and values must be at most [`MAX_NAME_VALUE_LEN`].
pub fn encode_pair<B: BufMut>(dst: &mut B, name: &[u8], value: &[u8]) {
    put_length(dst, name.len());
    put_length(dst, value.len());
    dst.put_slice(name);
    dst.put_slice(value);
}

/// Reads one length prefix at `src[at..]`: `(length, prefix size)`.
#[inline]
fn read_length(src: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *src.get(at)?;
    if first & 0x80 == 0 {
        return Some((first as usize, 1));
    }
    let b = src.get(at..at + 4)?;
    let len = u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]) as usize;
    Some((len, 4))
}

/// Decodes the pair that starts at `src[offset..]`.
///
/// Returns the name, the value and the offset just past the pair.
pub fn decode_pair(src: &[u8], offset: usize) -> Result<(&[u8], &[u8], usize), NameValueError> {
    let truncated = NameValueError::Truncated { offset };
    let (name_len, a) = read_length(src, offset).ok_or(truncated.clone())?;
    let (value_len, b) = read_length(src, offset + a).ok_or(truncated.clone())?;
    let name_start = offset + a + b;
    let value_start = name_start.checked_add(name_len).ok_or(truncated.clone())?;
    let end = value_start
        .checked_add(value_len)
        .ok_or(truncated.clone())?;
    if end > src.len() {
        return Err(truncated);
    }
    Ok((&src[name_start..value_start], &src[value_start..end], end))
}

/// Iterates over the pairs of a complete PARAMS (or GET_VALUES) content.
///
/// Yields an error once, then stops, when the content is cut short.
#[derive(Debug, Clone)]
pub struct NameValueIter<'a> {
    src: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> NameValueIter<'a> {
    /// Iterates over the pairs encoded in `src`.
    pub fn new(src: &'a [u8]) -> Self {
        Self {
            src,
            offset: 0,
            failed: false,
        }
    }
}

impl<'a> Iterator for NameValueIter<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), NameValueError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.src.len() {
            return None;
        }
        match decode_pair(self.src, self.offset) {
            Ok((name, value, end)) => {
                self.offset = end;
                Some(Ok((name, value)))
            }
            Err(err) => {
                self.failed = true;
                Some(Err(err))
            }
        }
    }
}

/// A request's CGI environment, kept encoded in insertion order.
///
/// When a name is inserted twice both pairs are sent and PHP-FPM keeps the last one,
/// so a caller that wants a value to win inserts it last.
///
/// ```
/// use fcgi_core::Params;
///
/// let mut params = Params::with_capacity(512);
/// params.insert("REQUEST_METHOD", "GET")?;
/// params.insert("SCRIPT_FILENAME", "/srv/app/index.php")?;
/// assert_eq!(params.get("REQUEST_METHOD"), Some(&b"GET"[..]));
/// # Ok::<(), fcgi_core::ParamsError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// The pairs, encoded back to back; never holds a pair larger than one record.
    encoded: BytesMut,
    /// Number of pairs, so framing can size its output without a second walk.
    count: usize,
}

impl Params {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set that can hold `bytes` of encoded pairs without growing.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            encoded: BytesMut::with_capacity(bytes),
            count: 0,
        }
    }

    /// Appends a pair. Fails, leaving the set unchanged, when the pair would not fit in
    /// one PARAMS record.
    pub fn insert(
        &mut self,
        name: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<&mut Self, ParamsError> {
        let (name, value) = (name.as_ref(), value.as_ref());
        let len = encoded_pair_len(name.len(), value.len());
        if len > MAX_CONTENT_LEN {
            return Err(ParamsError::PairTooLarge {
                name: String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned(),
                encoded_len: len,
            });
        }
        self.encoded.reserve(len);
        encode_pair(&mut self.encoded, name, value);
        self.count += 1;
        Ok(self)
    }

    /// Appends a pair whose name is built from parts (for example `HTTP_` plus a header
    /// name), transforming each byte of `suffix` with `map`. Saves building the name in a
    /// temporary buffer.
    pub fn insert_with_prefix(
        &mut self,
        prefix: &[u8],
        suffix: &[u8],
        map: impl Fn(u8) -> u8,
        value: &[u8],
    ) -> Result<&mut Self, ParamsError> {
        let name_len = prefix.len() + suffix.len();
        let len = encoded_pair_len(name_len, value.len());
        if len > MAX_CONTENT_LEN {
            let mut name = String::from_utf8_lossy(prefix).into_owned();
            name.extend(suffix.iter().take(64).map(|&b| map(b) as char));
            return Err(ParamsError::PairTooLarge {
                name,
                encoded_len: len,
            });
        }
        self.encoded.reserve(len);
        put_length(&mut self.encoded, name_len);
        put_length(&mut self.encoded, value.len());
        self.encoded.put_slice(prefix);
        // Copy, then map in place: one bounds check for the whole name, not one per byte.
        let start = self.encoded.len();
        self.encoded.put_slice(suffix);
        for b in &mut self.encoded[start..] {
            *b = map(*b);
        }
        self.encoded.put_slice(value);
        self.count += 1;
        Ok(self)
    }

    /// Appends every pair of `other`, in order: one copy of already-encoded bytes, which
    /// is how a tenant's fixed params join each request cheaply.
    pub fn append(&mut self, other: &Params) -> &mut Self {
        self.encoded.extend_from_slice(&other.encoded);
        self.count += other.count;
        self
    }

    /// Number of pairs (a repeated name counts each time).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no pair was inserted.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of all pairs once encoded, without record framing.
    pub fn encoded_len(&self) -> usize {
        self.encoded.len()
    }

    /// The pairs encoded back to back (no record headers).
    pub fn as_encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// Removes every pair, keeping the allocation.
    pub fn clear(&mut self) {
        self.encoded.clear();
        self.count = 0;
    }

    /// The pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        // Only `insert` writes `encoded`, so every pair in it is well formed.
        NameValueIter::new(&self.encoded).map_while(Result::ok)
    }

    /// The value PHP-FPM would see for `name`: the last one inserted.
    pub fn get(&self, name: impl AsRef<[u8]>) -> Option<&[u8]> {
        let name = name.as_ref();
        self.iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .last()
    }

    /// Whether `name` was inserted.
    pub fn contains(&self, name: impl AsRef<[u8]>) -> bool {
        let name = name.as_ref();
        self.iter().any(|(n, _)| n == name)
    }

    /// The encoded pairs as `Bytes`, consuming the set.
    pub fn into_encoded(self) -> Bytes {
        self.encoded.freeze()
    }

    /// Offsets where each pair ends, for framing. Walks the encoded buffer.
    pub(crate) fn pair_ends(&self) -> impl Iterator<Item = usize> + '_ {
        let src: &[u8] = &self.encoded;
        let mut offset = 0;
        std::iter::from_fn(move || {
            if offset >= src.len() {
                return None;
            }
            let (_, _, end) = decode_pair(src, offset).ok()?;
            offset = end;
            Some(end)
        })
    }
}

impl std::fmt::Debug for Params {
    /// Prints names only: values may be secrets (database passwords, cookies).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, _)| String::from_utf8_lossy(n)))
            .finish()
    }
}

impl<N: AsRef<[u8]>, V: AsRef<[u8]>> TryFrom<Vec<(N, V)>> for Params {
    type Error = ParamsError;

    fn try_from(pairs: Vec<(N, V)>) -> Result<Self, Self::Error> {
        let mut params = Params::new();
        for (name, value) in pairs {
            params.insert(name, value)?;
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(name: &[u8], value: &[u8]) {
        let mut buf = Vec::new();
        encode_pair(&mut buf, name, value);
        assert_eq!(buf.len(), encoded_pair_len(name.len(), value.len()));
        let (n, v, end) = decode_pair(&buf, 0).unwrap();
        assert_eq!((n, v, end), (name, value, buf.len()));
    }

    #[test]
    fn lengths_up_to_127_take_one_byte() {
        let name = vec![b'N'; 127];
        let mut buf = Vec::new();
        encode_pair(&mut buf, &name, b"v");
        assert_eq!(buf[0], 127);
        assert_eq!(buf[1], 1);
        round_trip(&name, b"v");
    }

    #[test]
    fn lengths_from_128_take_four_bytes_with_top_bit() {
        let value = vec![b'V'; 128];
        let mut buf = Vec::new();
        encode_pair(&mut buf, b"n", &value);
        assert_eq!(&buf[..5], &[1, 0x80, 0, 0, 128]);
        round_trip(b"n", &value);
        round_trip(&[b'x'; 128], &[b'y'; 127]);
        round_trip(&vec![b'x'; 70_000], b"");
    }

    #[test]
    fn empty_names_and_values_round_trip() {
        round_trip(b"", b"");
        round_trip(b"EMPTY", b"");
    }

    #[test]
    fn truncated_pairs_are_errors_not_panics() {
        let mut buf = Vec::new();
        encode_pair(&mut buf, b"NAME", &[b'v'; 300]);
        for cut in 0..buf.len() {
            assert_eq!(
                decode_pair(&buf[..cut], 0),
                Err(NameValueError::Truncated { offset: 0 })
            );
        }
    }

    #[test]
    fn huge_declared_lengths_do_not_overflow() {
        let buf = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1];
        assert!(decode_pair(&buf, 0).is_err());
    }

    #[test]
    fn iterator_stops_after_an_error() {
        let mut buf = Vec::new();
        encode_pair(&mut buf, b"A", b"1");
        buf.push(5);
        let items: Vec<_> = NameValueIter::new(&buf).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
    }

    #[test]
    fn params_keep_order_and_last_value_wins() {
        let mut params = Params::new();
        params.insert("A", "1").unwrap();
        params.insert("B", "2").unwrap();
        params.insert("A", "3").unwrap();
        assert_eq!(params.len(), 3);
        assert_eq!(params.get("A"), Some(&b"3"[..]));
        let names: Vec<_> = params.iter().map(|(n, _)| n.to_vec()).collect();
        assert_eq!(names, vec![b"A".to_vec(), b"B".to_vec(), b"A".to_vec()]);
    }

    #[test]
    fn params_reject_a_pair_larger_than_one_record() {
        let mut params = Params::new();
        let value = vec![b'x'; MAX_CONTENT_LEN];
        let err = params.insert("QUERY_STRING", &value).unwrap_err();
        assert_eq!(err.name(), "QUERY_STRING");
        assert!(params.is_empty());
        // The largest pair that fits: 1 + 4 + 1 + value.
        let fits = vec![b'x'; MAX_CONTENT_LEN - 6];
        params.insert("Q", &fits).unwrap();
        assert_eq!(params.encoded_len(), MAX_CONTENT_LEN);
    }

    #[test]
    fn insert_with_prefix_builds_the_name() {
        let mut params = Params::new();
        params
            .insert_with_prefix(
                b"HTTP_",
                b"x-forwarded-for",
                |b| match b {
                    b'-' => b'_',
                    b => b.to_ascii_uppercase(),
                },
                b"1.2.3.4",
            )
            .unwrap();
        assert_eq!(params.get("HTTP_X_FORWARDED_FOR"), Some(&b"1.2.3.4"[..]));
    }

    #[test]
    fn debug_output_hides_values() {
        let mut params = Params::new();
        params.insert("DBPASS", "hunter2").unwrap();
        let shown = format!("{params:?}");
        assert!(shown.contains("DBPASS"));
        assert!(!shown.contains("hunter2"));
    }
}
