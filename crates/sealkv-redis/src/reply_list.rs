//! The reply-list codec: how replies travel from the state machine to the proposer waiting for
//! them, and from the leader back to a follower that forwarded a client's command.
//!
//! ```text
//! list  = count u64 ‖ reply × count
//! reply = tag u32 ‖ body
//!   0 +OK          —                    6 array     count u64 ‖ reply × count
//!   1 status line  len u64 ‖ UTF-8      7 nil array —
//!   2 error line   len u64 ‖ UTF-8      8 double    f64 bits
//!   3 integer      i64                  9 map       count u64 ‖ (reply ‖ reply) × count
//!   4 bulk string  len u64 ‖ bytes     10 set       count u64 ‖ reply × count
//!   5 nil          —                   11 pairs     count u64 ‖ (reply ‖ reply) × count
//! ```
//!
//! Every integer is little-endian. These are the bytes bincode 1 (fixed-width integers) gave the
//! derived serde encoding that earlier versions used, so nodes of both versions still understand
//! each other's forwarded replies during a rolling upgrade.
//!
//! Why by hand: the derived decoder recursed once per nesting level with no limit, so a forwarded
//! reply nested a few hundred thousand arrays deep (a few MB) overflowed the stack and aborted the
//! node. This decoder is total: it refuses nesting deeper than [`MAX_DEPTH`], unknown tags, status
//! and error lines that are not UTF-8, any length the remaining bytes cannot hold, and trailing
//! bytes, and it never reserves room for more elements than the remaining bytes could encode.

use crate::reply::Reply;
use crate::wire::Wire;

/// The deepest nesting a decoded reply may have. The replies sealkv produces nest a few levels
/// (EXEC of a command whose reply is a map of arrays); 64 leaves room for any command's and keeps
/// the decoder's recursion far inside any thread's stack.
pub const MAX_DEPTH: usize = 64;

/// Why bytes are not a reply list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyListError {
    /// The bytes end inside a reply, or a length exceeds what is left.
    #[error("reply list truncated")]
    Truncated,
    /// A reply's tag is not one of the twelve kinds.
    #[error("unknown reply tag {0}")]
    UnknownTag(u32),
    /// A status or error line is not UTF-8.
    #[error("a status or error line is not UTF-8")]
    NotUtf8,
    /// Replies nest deeper than [`MAX_DEPTH`].
    #[error("replies nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Bytes follow the last reply.
    #[error("{0} bytes follow the reply list")]
    Trailing(usize),
}

/// The smallest encoding of one reply (its tag), which bounds what a claimed count may reserve.
const MIN_REPLY: usize = 4;

/// Encodes a list of replies.
pub fn encode_replies(replies: &[Reply]) -> Vec<u8> {
    // Every replica encodes one list per applied entry. Room for the count and one 12-byte reply
    // each (`+OK`, an integer, a nil) holds a write batch's usual replies in one allocation.
    let mut out = Vec::with_capacity(8 + 12 * replies.len());
    put_len(&mut out, replies.len());
    for r in replies {
        put(&mut out, r);
    }
    out
}

/// Decodes [`encode_replies`] output.
pub fn decode_replies(bytes: &[u8]) -> Result<Vec<Reply>, ReplyListError> {
    let mut r = Reader(Wire::new(bytes));
    let n = r.len()?;
    let mut list = Vec::with_capacity(r.room(n, MIN_REPLY));
    for _ in 0..n {
        list.push(r.reply(0)?);
    }
    match r.0.remaining() {
        0 => Ok(list),
        n => Err(ReplyListError::Trailing(n)),
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

fn put(out: &mut Vec<u8>, r: &Reply) {
    let tag: u32 = match r {
        Reply::Ok => 0,
        Reply::Simple(_) => 1,
        Reply::Error(_) => 2,
        Reply::Int(_) => 3,
        Reply::Bulk(_) => 4,
        Reply::Nil => 5,
        Reply::Array(_) => 6,
        Reply::NilArray => 7,
        Reply::Double(_) => 8,
        Reply::Map(_) => 9,
        Reply::Set(_) => 10,
        Reply::Pairs(_) => 11,
    };
    out.extend_from_slice(&tag.to_le_bytes());
    match r {
        Reply::Ok | Reply::Nil | Reply::NilArray => {}
        Reply::Simple(s) | Reply::Error(s) => put_bytes(out, s.as_bytes()),
        Reply::Int(i) => out.extend_from_slice(&i.to_le_bytes()),
        Reply::Bulk(b) => put_bytes(out, b),
        Reply::Double(d) => out.extend_from_slice(&d.to_bits().to_le_bytes()),
        Reply::Array(items) | Reply::Set(items) => {
            put_len(out, items.len());
            for item in items {
                put(out, item);
            }
        }
        Reply::Map(pairs) | Reply::Pairs(pairs) => {
            put_len(out, pairs.len());
            for (k, v) in pairs {
                put(out, k);
                put(out, v);
            }
        }
    }
}

struct Reader<'a>(Wire<'a>);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ReplyListError> {
        self.0.take(n).ok_or(ReplyListError::Truncated)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ReplyListError> {
        self.0.array().ok_or(ReplyListError::Truncated)
    }

    /// A count or length; one the remaining bytes cannot hold even at a byte each is truncated.
    fn len(&mut self) -> Result<usize, ReplyListError> {
        let n = u64::from_le_bytes(self.array()?);
        usize::try_from(n).ok().filter(|n| *n <= self.0.remaining()).ok_or(ReplyListError::Truncated)
    }

    /// How many of `n` claimed elements of at least `each` bytes the remaining bytes can hold.
    fn room(&self, n: usize, each: usize) -> usize {
        n.min(self.0.remaining() / each)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ReplyListError> {
        let n = self.len()?;
        self.take(n)
    }

    fn line(&mut self) -> Result<String, ReplyListError> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| ReplyListError::NotUtf8)
    }

    fn items(&mut self, depth: usize) -> Result<Vec<Reply>, ReplyListError> {
        let n = self.len()?;
        let mut items = Vec::with_capacity(self.room(n, MIN_REPLY));
        for _ in 0..n {
            items.push(self.reply(depth)?);
        }
        Ok(items)
    }

    fn pairs(&mut self, depth: usize) -> Result<Vec<(Reply, Reply)>, ReplyListError> {
        let n = self.len()?;
        let mut pairs = Vec::with_capacity(self.room(n, 2 * MIN_REPLY));
        for _ in 0..n {
            let k = self.reply(depth)?;
            pairs.push((k, self.reply(depth)?));
        }
        Ok(pairs)
    }

    /// One reply at nesting `depth` (0 for the list's own elements).
    fn reply(&mut self, depth: usize) -> Result<Reply, ReplyListError> {
        let tag = u32::from_le_bytes(self.array()?);
        let inner = depth + 1;
        if matches!(tag, 6 | 9 | 10 | 11) && inner > MAX_DEPTH {
            return Err(ReplyListError::TooDeep);
        }
        Ok(match tag {
            0 => Reply::Ok,
            1 => Reply::Simple(self.line()?),
            2 => Reply::Error(self.line()?),
            3 => Reply::Int(i64::from_le_bytes(self.array()?)),
            4 => Reply::Bulk(self.bytes()?.to_vec()),
            5 => Reply::Nil,
            6 => Reply::Array(self.items(inner)?),
            7 => Reply::NilArray,
            8 => Reply::Double(f64::from_bits(u64::from_le_bytes(self.array()?))),
            9 => Reply::Map(self.pairs(inner)?),
            10 => Reply::Set(self.items(inner)?),
            11 => Reply::Pairs(self.pairs(inner)?),
            other => return Err(ReplyListError::UnknownTag(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Every kind of reply once. The bytes are what the derived bincode encoding of earlier
    /// versions produced for the same list, so a peer of either version decodes the other's.
    #[test]
    fn the_layout_is_pinned_to_the_earlier_versions_bytes() {
        let list = vec![
            Reply::Ok,
            Reply::Simple("PONG".into()),
            Reply::err("ERR x"),
            Reply::Int(-3),
            Reply::bulk("ab"),
            Reply::Nil,
            Reply::Array(vec![Reply::NilArray]),
            Reply::Double(1.5),
            Reply::Map(vec![(Reply::bulk("k"), Reply::Int(1))]),
            Reply::Set(vec![]),
            Reply::Pairs(vec![(Reply::bulk("m"), Reply::Double(-0.0))]),
        ];
        let b = encode_replies(&list);
        assert_eq!(
            hex(&b),
            "0b00000000000000000000000100000004000000000000005\
             04f4e47020000000500000000000000455252207803000000\
             fdffffffffffffff040000000200000000000000616205000\
             0000600000001000000000000000700000008000000000000\
             000000f83f090000000100000000000000040000000100000\
             0000000006b0300000001000000000000000a000000000000\
             00000000000b0000000100000000000000040000000100000\
             0000000006d080000000000000000000080"
        );
        assert_eq!(decode_replies(&b), Ok(list));
    }

    /// `depth` arrays, one inside the other, around a nil: the list's only reply.
    fn nested(depth: usize) -> Vec<u8> {
        let mut b = 1u64.to_le_bytes().to_vec();
        for _ in 0..depth {
            b.extend_from_slice(&6u32.to_le_bytes());
            b.extend_from_slice(&1u64.to_le_bytes());
        }
        b.extend_from_slice(&5u32.to_le_bytes());
        b
    }

    #[test]
    fn nesting_is_accepted_to_max_depth_and_refused_beyond() {
        let mut deepest = Reply::Nil;
        for _ in 0..MAX_DEPTH {
            deepest = Reply::Array(vec![deepest]);
        }
        assert_eq!(nested(MAX_DEPTH), encode_replies(std::slice::from_ref(&deepest)));
        assert_eq!(decode_replies(&nested(MAX_DEPTH)), Ok(vec![deepest]));
        assert_eq!(decode_replies(&nested(MAX_DEPTH + 1)), Err(ReplyListError::TooDeep));
    }

    /// The derived decoder this replaced aborted the process here (a stack overflow on a thread
    /// with a worker's 2 MiB stack).
    #[test]
    fn a_reply_nested_200000_deep_is_refused_without_exhausting_the_stack() {
        let t = std::thread::Builder::new().stack_size(2 << 20).spawn(|| decode_replies(&nested(200_000)));
        assert_eq!(t.unwrap().join().unwrap(), Err(ReplyListError::TooDeep));
    }

    #[test]
    fn malformed_lists_get_their_own_errors() {
        let ok = encode_replies(&[Reply::Simple("hi".into())]);
        let mut trailing = ok.clone();
        trailing.push(0);
        assert_eq!(decode_replies(&trailing), Err(ReplyListError::Trailing(1)));
        let mut bad_tag = ok.clone();
        bad_tag[8] = 12;
        assert_eq!(decode_replies(&bad_tag), Err(ReplyListError::UnknownTag(12)));
        let mut not_utf8 = ok.clone();
        not_utf8[20] = 0xFF;
        assert_eq!(decode_replies(&not_utf8), Err(ReplyListError::NotUtf8));
        // A count of 2^60 arrays with nothing behind it: refused, nothing reserved for it.
        let mut huge = 1u64.to_le_bytes().to_vec();
        huge.extend_from_slice(&6u32.to_le_bytes());
        huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert_eq!(decode_replies(&huge), Err(ReplyListError::Truncated));
        assert_eq!(decode_replies(&[]), Err(ReplyListError::Truncated));
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            Just(Reply::Ok),
            ".{0,8}".prop_map(Reply::Simple),
            ".{0,8}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Int),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Reply::Bulk),
            Just(Reply::Nil),
            Just(Reply::NilArray),
            any::<f64>().prop_filter("NaN is not equal to itself", |d| !d.is_nan()).prop_map(Reply::Double),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            let items = proptest::collection::vec(inner.clone(), 0..4);
            let pairs = proptest::collection::vec((inner.clone(), inner), 0..3);
            prop_oneof![
                items.clone().prop_map(Reply::Array),
                items.prop_map(Reply::Set),
                pairs.clone().prop_map(Reply::Map),
                pairs.prop_map(Reply::Pairs),
            ]
        })
    }

    proptest! {
        #[test]
        fn lists_round_trip_and_every_strict_prefix_is_refused(list in proptest::collection::vec(reply(), 0..5)) {
            let b = encode_replies(&list);
            prop_assert_eq!(decode_replies(&b), Ok(list));
            for cut in 0..b.len() {
                prop_assert!(decode_replies(&b[..cut]).is_err(), "prefix of {} bytes decoded", cut);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(list) = decode_replies(&bytes) {
                prop_assert_eq!(encode_replies(&list), bytes);
            }
        }
    }
}
