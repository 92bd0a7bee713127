//! MVCC keys: `escape(user_key) ‖ 0x00 0x01 ‖ BE64(!commit_ts)`.
//!
//! The user key is escaped (every 0x00 becomes 0x00 0xFF) and terminated with 0x00 0x01 so the
//! encoding is order-preserving and prefix-free: all versions of one user key are contiguous,
//! newest first, and no other key's versions sort between them. With a bare `user_key ‖ ts` the
//! versions of `"a"` would interleave with those of `"a\x01…"`, so neither a point read nor an
//! ordered scan could stop early. The last 8 bytes are always the inverted timestamp.

use std::ops::Bound;

/// Bytes after the escaped user key: terminator and timestamp.
pub const SUFFIX_LEN: usize = 2 + 8;
/// fjall's key limit; an encoded MVCC key must fit.
pub const MAX_MVCC_KEY_LEN: usize = 65_535;
/// The longest user key that always fits, whatever its bytes (every byte could be 0x00).
pub const MAX_USER_KEY_LEN: usize = (MAX_MVCC_KEY_LEN - SUFFIX_LEN) / 2;

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// Why bytes are not an MVCC key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is shorter than its fixed suffix or ends inside an escape.
    #[error("MVCC key of {len} bytes is truncated")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// A 0x00 is followed by something other than 0xFF (escape) or 0x01 (terminator).
    #[error("MVCC key has an invalid escape at byte {at}")]
    BadEscape {
        /// Offset of the 0x00.
        at: usize,
    },
    /// Bytes other than the 8-byte timestamp follow the terminator.
    #[error("MVCC key has {extra} bytes between the terminator and the timestamp")]
    Trailing {
        /// How many.
        extra: usize,
    },
    /// The encoded key would exceed the storage engine's key limit.
    #[error("key of {len} bytes is too long (the encoded key must fit in {MAX_MVCC_KEY_LEN} bytes)")]
    TooLong {
        /// The user key's length.
        len: usize,
    },
}

/// Appends the escaped user key and its terminator (the prefix shared by all its versions).
pub fn encode_prefix_into(out: &mut Vec<u8>, user_key: &[u8]) {
    escape_into(out, user_key);
    out.extend_from_slice(&[ESCAPE, TERMINATOR]);
}

/// Appends the escaped bytes of `user_key` with no terminator (the prefix of every user key that
/// starts with `user_key`).
pub fn escape_into(out: &mut Vec<u8>, user_key: &[u8]) {
    out.reserve(user_key.len() + SUFFIX_LEN);
    for chunk in user_key.split_inclusive(|b| *b == ESCAPE) {
        out.extend_from_slice(chunk);
        if chunk.last() == Some(&ESCAPE) {
            out.push(ESCAPED_ZERO);
        }
    }
}

/// Encodes the MVCC key of `user_key` at `commit_ts`.
pub fn encode(user_key: &[u8], commit_ts: u64) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(user_key.len() + SUFFIX_LEN + 4);
    encode_prefix_into(&mut out, user_key);
    out.extend_from_slice(&(!commit_ts).to_be_bytes());
    if out.len() > MAX_MVCC_KEY_LEN {
        return Err(KeyError::TooLong { len: user_key.len() });
    }
    Ok(out)
}

/// Rewrites the timestamp of an encoded MVCC key in place (same user key, another version).
pub fn set_ts(mvcc_key: &mut [u8], commit_ts: u64) {
    if let Some(ts) = mvcc_key.last_chunk_mut::<8>() {
        *ts = (!commit_ts).to_be_bytes();
    }
}

/// Splits an MVCC key into its version prefix (escaped key + terminator) and commit timestamp,
/// without unescaping. Total: any input gives a key or an error.
pub fn split(mvcc_key: &[u8]) -> Result<(&[u8], u64), KeyError> {
    let (prefix, ts) = mvcc_key.split_last_chunk::<8>().ok_or(KeyError::Truncated { len: mvcc_key.len() })?;
    if !prefix.ends_with(&[ESCAPE, TERMINATOR]) {
        return Err(KeyError::Truncated { len: mvcc_key.len() });
    }
    Ok((prefix, !u64::from_be_bytes(*ts)))
}

/// Decodes an MVCC key into the user key and commit timestamp, checking every escape.
pub fn decode(mvcc_key: &[u8]) -> Result<(Vec<u8>, u64), KeyError> {
    let (prefix, ts) = split(mvcc_key)?;
    Ok((unescape_prefix(prefix)?, ts))
}

/// Unescapes a version prefix (escaped key ‖ 0x00 0x01) back into the user key.
pub fn unescape_prefix(prefix: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(prefix.len());
    let mut i = 0;
    loop {
        match prefix.get(i) {
            None => return Err(KeyError::Truncated { len: prefix.len() }),
            Some(&ESCAPE) => match prefix.get(i + 1) {
                Some(&ESCAPED_ZERO) => {
                    out.push(ESCAPE);
                    i += 2;
                }
                Some(&TERMINATOR) => {
                    let extra = prefix.len() - (i + 2);
                    if extra != 0 {
                        return Err(KeyError::Trailing { extra });
                    }
                    return Ok(out);
                }
                Some(_) => return Err(KeyError::BadEscape { at: i }),
                None => return Err(KeyError::Truncated { len: prefix.len() }),
            },
            Some(&b) => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// A range of user keys, turned into MVCC-key bounds that cover every version of every key in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// Keys between two bounds.
    Bounds(Bound<Vec<u8>>, Bound<Vec<u8>>),
    /// Keys starting with a prefix.
    Prefix(Vec<u8>),
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        KeyRange::Bounds(Bound::Unbounded, Bound::Unbounded)
    }

    /// The MVCC-key bounds of this range.
    pub(crate) fn mvcc_bounds(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let prefix = |k: &[u8]| {
            let mut v = Vec::with_capacity(k.len() + SUFFIX_LEN);
            encode_prefix_into(&mut v, k);
            v
        };
        let after_all_versions = |k: &[u8]| {
            let mut v = prefix(k);
            v.extend_from_slice(&[0xFF; 8]);
            v
        };
        match self {
            KeyRange::Bounds(start, end) => {
                let start = match start {
                    Bound::Included(k) => Bound::Included(prefix(k)),
                    Bound::Excluded(k) => Bound::Excluded(after_all_versions(k)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                let end = match end {
                    Bound::Included(k) => Bound::Included(after_all_versions(k)),
                    Bound::Excluded(k) => Bound::Excluded(prefix(k)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                (start, end)
            }
            KeyRange::Prefix(p) => {
                let mut start = Vec::with_capacity(p.len() + 2);
                escape_into(&mut start, p);
                let end = next_prefix(&start);
                (Bound::Included(start), end.map_or(Bound::Unbounded, Bound::Excluded))
            }
        }
    }
}

/// The smallest byte string greater than every string starting with `prefix`, if any.
fn next_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_pin() {
        let k = encode(b"a\x00b", 1).unwrap();
        assert_eq!(k, b"a\x00\xffb\x00\x01\xff\xff\xff\xff\xff\xff\xff\xfe");
        assert_eq!(decode(&k).unwrap(), (b"a\x00b".to_vec(), 1));
        assert_eq!(encode(b"", u64::MAX).unwrap(), b"\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00");
    }

    #[test]
    fn decoder_rejects_malformed() {
        assert_eq!(decode(b""), Err(KeyError::Truncated { len: 0 }));
        assert_eq!(decode(b"\x00\x01\x00\x00\x00\x00\x00\x00\x00"), Err(KeyError::Truncated { len: 9 }));
        assert_eq!(decode(b"a\x00\x02\x00\x01\0\0\0\0\0\0\0\0"), Err(KeyError::BadEscape { at: 1 }));
        assert_eq!(decode(b"a\x00\x01b\x00\x01\0\0\0\0\0\0\0\0"), Err(KeyError::Trailing { extra: 3 }));
        assert_eq!(decode(b"ab\x01\0\0\0\0\0\0\0\0"), Err(KeyError::Truncated { len: 11 }));
        assert!(encode(&vec![0u8; MAX_USER_KEY_LEN], 1).is_ok());
        assert_eq!(encode(&vec![0u8; MAX_USER_KEY_LEN + 1], 1), Err(KeyError::TooLong { len: MAX_USER_KEY_LEN + 1 }));
    }

    proptest! {
        #[test]
        fn round_trip(k in proptest::collection::vec(any::<u8>(), 0..40), ts in any::<u64>()) {
            let e = encode(&k, ts).unwrap();
            prop_assert_eq!(decode(&e).unwrap(), (k, ts));
        }

        #[test]
        fn order_is_user_key_then_newest_first(
            a in proptest::collection::vec(0u8..4, 0..6), b in proptest::collection::vec(0u8..4, 0..6),
            ta in any::<u64>(), tb in any::<u64>(),
        ) {
            let (ea, eb) = (encode(&a, ta).unwrap(), encode(&b, tb).unwrap());
            let expected = a.cmp(&b).then(tb.cmp(&ta));
            prop_assert_eq!(ea.cmp(&eb), expected);
        }

        #[test]
        fn decoder_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn ranges_cover_exactly_their_keys(
            k in proptest::collection::vec(0u8..3, 0..5), lo in proptest::collection::vec(0u8..3, 0..4),
            hi in proptest::collection::vec(0u8..3, 0..4), ts in any::<u64>(), inc_lo: bool, inc_hi: bool,
        ) {
            let mk = encode(&k, ts).unwrap();
            let b = |v: &Vec<u8>, inc: bool| if inc { Bound::Included(v.clone()) } else { Bound::Excluded(v.clone()) };
            let r = KeyRange::Bounds(b(&lo, inc_lo), b(&hi, inc_hi));
            let user = (b(&lo, inc_lo), b(&hi, inc_hi));
            let in_user = std::ops::RangeBounds::contains(&user, &k);
            let in_mvcc = std::ops::RangeBounds::contains(&r.mvcc_bounds(), &mk);
            prop_assert_eq!(in_user, in_mvcc);
            let p = KeyRange::Prefix(lo.clone());
            prop_assert_eq!(k.starts_with(&lo), std::ops::RangeBounds::contains(&p.mvcc_bounds(), &mk));
        }
    }
}
