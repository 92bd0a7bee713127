//! Where Redis keys live in the store. Every store key of the Redis keyspace starts with 0xFF
//! (the gRPC `kv` API refuses that byte as a first key byte, so the two never collide):
//!
//! ```text
//! FF 'm' ‖ key                              → meta: type ‖ type fields  (store expiry = key expiry)
//! FF 'e' ‖ key_len u32 ‖ key ‖ sub           → one element of a collection
//! FF 'x' ‖ expire_at_ms u64 ‖ key            → expiry index entry (empty), for the leader's sweep
//! FF 's'                                     → keyspace counts: keys u64 ‖ expires u64
//!
//! meta: 0x01 string ‖ bytes
//!       0x02 hash   ‖ len u64
//!       0x03 list   ‖ head u64 ‖ tail u64   (elements at sub = BE64(i) for head ≤ i < tail)
//!       0x04 set    ‖ len u64
//!       0x05 zset   ‖ len u64
//! zset subs: 0x00 ‖ member → score (f64 bits, BE); 0x01 ‖ sortable(score) ‖ member → empty
//! ```
//!
//! One stored value per element plus the meta record: element operations cost a point read or a
//! short range scan, never a rewrite of the collection. The meta record is rewritten by every
//! write to its key, so its newest version's timestamp is the key's last modification (WATCH).

use std::ops::Bound;

/// First byte of every Redis store key.
pub const NS: u8 = 0xFF;
const META: u8 = b'm';
const ELEM: u8 = b'e';
const EXPIRY: u8 = b'x';
const COUNTS: u8 = b's';
/// Where list indexes start, so both ends can grow by 2^63 elements.
pub const LIST_MID: u64 = 1 << 63;

/// The meta store key of `key`.
pub fn meta_key(key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 2);
    v.extend_from_slice(&[NS, META]);
    v.extend_from_slice(key);
    v
}

/// Whether a store key is a meta record (a Redis key).
pub fn is_meta(store_key: &[u8]) -> bool {
    store_key.starts_with(&[NS, META])
}

/// The user key of a meta store key.
pub fn key_of_meta(store_key: &[u8]) -> Option<&[u8]> {
    store_key.strip_prefix(&[NS, META])
}

/// Bounds of every meta key (the keyspace), or of those starting with `prefix`.
pub fn meta_range(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    prefix_bounds(meta_key(prefix))
}

/// The prefix every element of `key` starts with.
pub fn elem_prefix(key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 6);
    v.extend_from_slice(&[NS, ELEM]);
    // Keys are bounded far below u32::MAX by the store's key limit.
    v.extend_from_slice(&(key.len() as u32).to_be_bytes());
    v.extend_from_slice(key);
    v
}

/// The store key of element `sub` of `key`.
pub fn elem_key(key: &[u8], sub: &[u8]) -> Vec<u8> {
    let mut v = elem_prefix(key);
    v.extend_from_slice(sub);
    v
}

/// The store key of a list element.
pub fn list_key(key: &[u8], index: u64) -> Vec<u8> {
    elem_key(key, &index.to_be_bytes())
}

/// Bounds of the elements of `key` whose sub starts with `sub_prefix`.
pub fn elem_range(key: &[u8], sub_prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    prefix_bounds(elem_key(key, sub_prefix))
}

/// The store key of an expiry index entry.
pub fn expiry_key(expire_at_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 10);
    v.extend_from_slice(&[NS, EXPIRY]);
    v.extend_from_slice(&expire_at_ms.to_be_bytes());
    v.extend_from_slice(key);
    v
}

/// Bounds of the expiry index entries due at or before `now_ms`.
pub fn expiry_due(now_ms: u64) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut hi = vec![NS, EXPIRY];
    hi.extend_from_slice(&now_ms.saturating_add(1).to_be_bytes());
    (Bound::Included(vec![NS, EXPIRY]), Bound::Excluded(hi))
}

/// Splits an expiry index key into its time and user key.
pub fn split_expiry(store_key: &[u8]) -> Option<(u64, &[u8])> {
    let rest = store_key.strip_prefix(&[NS, EXPIRY])?;
    let (ms, key) = rest.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*ms), key))
}

/// The store key of the keyspace counts ([`Counts`]).
pub fn counts_key() -> Vec<u8> {
    vec![NS, COUNTS]
}

/// The keyspace's counts, kept by the apply path so DBSIZE and INFO keyspace read one record
/// instead of scanning every key. As in Redis, a key counts from its write until its removal: an
/// expired key still counts until the leader's expiry sweep (or a write to it) removes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Meta records present (the keys).
    pub keys: u64,
    /// Those with an expiry.
    pub expires: u64,
}

impl Counts {
    /// `keys 8 BE ‖ expires 8 BE`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.keys.to_be_bytes());
        v.extend_from_slice(&self.expires.to_be_bytes());
        v
    }

    /// Decodes the record; total. More expiring keys than keys is corruption.
    pub fn decode(b: &[u8]) -> Result<Counts, CorruptMeta> {
        let (keys, expires) = b.split_first_chunk::<8>().ok_or(CorruptMeta("counts length"))?;
        let expires: [u8; 8] = expires.try_into().map_err(|_| CorruptMeta("counts length"))?;
        let c = Counts { keys: u64::from_be_bytes(*keys), expires: u64::from_be_bytes(expires) };
        if c.expires > c.keys {
            return Err(CorruptMeta("counts: more expiring keys than keys"));
        }
        Ok(c)
    }

    /// These counts moved by an entry's `delta`; `None` if that leaves them impossible (below
    /// zero, or more expiring keys than keys), which only a wrong record or a counting bug can do.
    pub fn shifted(self, delta: CountDelta) -> Option<Counts> {
        let keys = self.keys.checked_add_signed(delta.keys)?;
        let expires = self.expires.checked_add_signed(delta.expires)?;
        (expires <= keys).then_some(Counts { keys, expires })
    }
}

/// How one entry's writes moved the [`Counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountDelta {
    /// Keys created minus keys removed.
    pub keys: i64,
    /// Expiries set on keys minus expiries gone (by PERSIST, an overwrite or removal).
    pub expires: i64,
}

impl CountDelta {
    /// Records one meta record going from `before` to `after` (each `None` when absent, else its
    /// expiry, 0 for none).
    pub fn record(&mut self, before: Option<u64>, after: Option<u64>) {
        let present = |s: Option<u64>| i64::from(s.is_some());
        let expiring = |s: Option<u64>| i64::from(s.is_some_and(|e| e != 0));
        self.keys += present(after) - present(before);
        self.expires += expiring(after) - expiring(before);
    }

    /// Whether the entry left the counts as they were.
    pub fn is_zero(&self) -> bool {
        *self == CountDelta::default()
    }
}

/// Bounds of the whole Redis keyspace in the store (FLUSHALL).
pub fn everything() -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (Bound::Included(vec![NS]), Bound::Unbounded)
}

/// Bounds covering every store key that starts with `prefix`.
pub fn prefix_bounds(prefix: Vec<u8>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut end = prefix.clone();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return (Bound::Included(prefix), Bound::Excluded(end));
        }
    }
    (Bound::Included(prefix), Bound::Unbounded)
}

/// Order-preserving encoding of a score: byte order equals numeric order (−inf < … < +inf).
pub fn sortable(score: f64) -> [u8; 8] {
    let bits = score.to_bits();
    let flipped = if bits >> 63 == 1 { !bits } else { bits | (1 << 63) };
    flipped.to_be_bytes()
}

/// The inverse of [`sortable`].
pub fn unsortable(b: [u8; 8]) -> f64 {
    let v = u64::from_be_bytes(b);
    f64::from_bits(if v >> 63 == 1 { v & !(1 << 63) } else { !v })
}

/// A key's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    String,
    /// A hash.
    Hash,
    /// A list.
    List,
    /// A set.
    Set,
    /// A sorted set.
    ZSet,
}

impl Kind {
    /// The name TYPE answers with.
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Hash => "hash",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::ZSet => "zset",
        }
    }
}

/// A decoded meta record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta {
    /// A string's bytes.
    String(Vec<u8>),
    /// A hash's field count.
    Hash(u64),
    /// A list's index window.
    List {
        /// First index.
        head: u64,
        /// One past the last index.
        tail: u64,
    },
    /// A set's member count.
    Set(u64),
    /// A sorted set's member count.
    ZSet(u64),
}

/// Why a meta record does not decode (a halt during apply, an error reply on a read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt Redis metadata ({0})")]
pub struct CorruptMeta(pub &'static str);

impl Meta {
    /// The key's type.
    pub fn kind(&self) -> Kind {
        match self {
            Meta::String(_) => Kind::String,
            Meta::Hash(_) => Kind::Hash,
            Meta::List { .. } => Kind::List,
            Meta::Set(_) => Kind::Set,
            Meta::ZSet(_) => Kind::ZSet,
        }
    }

    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Meta::String(b) => {
                let mut v = Vec::with_capacity(b.len() + 1);
                v.push(0x01);
                v.extend_from_slice(b);
                v
            }
            Meta::Hash(n) => tagged(0x02, &[*n]),
            Meta::List { head, tail } => tagged(0x03, &[*head, *tail]),
            Meta::Set(n) => tagged(0x04, &[*n]),
            Meta::ZSet(n) => tagged(0x05, &[*n]),
        }
    }

    /// Decodes a record; total.
    pub fn decode(b: &[u8]) -> Result<Meta, CorruptMeta> {
        let (&tag, rest) = b.split_first().ok_or(CorruptMeta("empty"))?;
        let u64s = |n: usize| -> Result<Vec<u64>, CorruptMeta> {
            if rest.len() != n * 8 {
                return Err(CorruptMeta("length"));
            }
            Ok(rest.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8]))).collect())
        };
        Ok(match tag {
            0x01 => Meta::String(rest.to_vec()),
            0x02 => Meta::Hash(first(&u64s(1)?)),
            0x03 => {
                let v = u64s(2)?;
                let (head, tail) = (first(&v), v.get(1).copied().unwrap_or(0));
                if head > tail {
                    return Err(CorruptMeta("list window"));
                }
                Meta::List { head, tail }
            }
            0x04 => Meta::Set(first(&u64s(1)?)),
            0x05 => Meta::ZSet(first(&u64s(1)?)),
            _ => return Err(CorruptMeta("type tag")),
        })
    }
}

fn first(v: &[u64]) -> u64 {
    v.first().copied().unwrap_or(0)
}

fn tagged(tag: u8, fields: &[u64]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + fields.len() * 8);
    v.push(tag);
    fields.iter().for_each(|f| v.extend_from_slice(&f.to_be_bytes()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layouts_are_pinned() {
        assert_eq!(meta_key(b"k"), b"\xFFmk");
        assert_eq!(elem_key(b"k", b"f"), b"\xFFe\x00\x00\x00\x01kf");
        assert_eq!(expiry_key(258, b"k"), b"\xFFx\x00\x00\x00\x00\x00\x00\x01\x02k");
        assert_eq!(split_expiry(&expiry_key(258, b"k")), Some((258, &b"k"[..])));
        assert_eq!(Meta::String(b"v".to_vec()).encode(), b"\x01v");
        assert_eq!(Meta::Hash(2).encode(), b"\x02\x00\x00\x00\x00\x00\x00\x00\x02");
        assert_eq!(Meta::List { head: 1, tail: 2 }.encode().len(), 17);
        assert_eq!(Meta::decode(b"\x03\x00"), Err(CorruptMeta("length")));
        assert_eq!(Meta::decode(b""), Err(CorruptMeta("empty")));
        assert_eq!(Meta::decode(b"\x09"), Err(CorruptMeta("type tag")));
        let mut bad = vec![0x03];
        bad.extend_from_slice(&5u64.to_be_bytes());
        bad.extend_from_slice(&4u64.to_be_bytes());
        assert_eq!(Meta::decode(&bad), Err(CorruptMeta("list window")));
    }

    #[test]
    fn counts_layout_is_pinned_and_impossible_counts_refused() {
        assert_eq!(counts_key(), b"\xFFs");
        assert!(!is_meta(&counts_key()) && is_meta(&meta_key(b"")));
        let c = Counts { keys: 258, expires: 1 };
        assert_eq!(c.encode(), b"\x00\x00\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x00\x00\x00\x01");
        assert_eq!(Counts::decode(&c.encode()), Ok(c));
        assert_eq!(Counts::decode(&c.encode()[..15]), Err(CorruptMeta("counts length")));
        assert_eq!(Counts::decode(&[0; 17]), Err(CorruptMeta("counts length")));
        let mut more = Counts { keys: 1, expires: 2 }.encode();
        assert_eq!(Counts::decode(&more), Err(CorruptMeta("counts: more expiring keys than keys")));
        more[7] = 2;
        assert_eq!(Counts::decode(&more), Ok(Counts { keys: 2, expires: 2 }));
        assert_eq!(c.shifted(CountDelta { keys: -258, expires: -1 }), Some(Counts::default()));
        assert_eq!(c.shifted(CountDelta { keys: -259, expires: 0 }), None);
        assert_eq!(c.shifted(CountDelta { keys: 0, expires: 258 }), None);
        let mut d = CountDelta::default();
        d.record(None, Some(0));
        d.record(Some(0), Some(5));
        d.record(Some(7), None);
        assert_eq!(d, CountDelta { keys: 0, expires: 0 });
        d.record(None, Some(9));
        assert_eq!(d, CountDelta { keys: 1, expires: 1 });
    }

    proptest! {
        #[test]
        fn sortable_scores_order_like_numbers(a in any::<f64>(), b in any::<f64>()) {
            prop_assume!(!a.is_nan() && !b.is_nan());
            let (x, y) = (sortable(a), sortable(b));
            if a < b { prop_assert!(x < y); }
            prop_assert_eq!(unsortable(x).to_bits(), a.to_bits());
        }

        #[test]
        fn meta_round_trips_and_garbage_never_panics(s in proptest::collection::vec(any::<u8>(), 0..20), n in any::<u64>(), bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            for m in [Meta::String(s.clone()), Meta::Hash(n), Meta::Set(n), Meta::ZSet(n), Meta::List { head: n / 2, tail: n }] {
                prop_assert_eq!(Meta::decode(&m.encode()).unwrap(), m);
            }
            let _ = Meta::decode(&bytes);
            let c = Counts { keys: n, expires: n / 3 };
            prop_assert_eq!(Counts::decode(&c.encode()), Ok(c));
            let _ = Counts::decode(&bytes);
        }

        #[test]
        fn element_prefixes_of_different_keys_never_nest(a in proptest::collection::vec(any::<u8>(), 0..8), b in proptest::collection::vec(any::<u8>(), 0..8)) {
            prop_assume!(a != b);
            let (pa, pb) = (elem_prefix(&a), elem_prefix(&b));
            prop_assert!(!pa.starts_with(&pb) && !pb.starts_with(&pa));
        }
    }
}
