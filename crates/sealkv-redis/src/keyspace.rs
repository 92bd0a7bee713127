//! The command context: typed lookups over the layout, expiry, and the helpers every command
//! family shares (so "a key that expired reads as absent" and "an emptied collection is removed"
//! are written once).

use sealkv_store::live_at;

use crate::db::{Db, DbError};
use crate::layout::{self, Kind, Meta};
use crate::reply::Reply;
use crate::rules::Rules;

/// Why a command did not produce its normal reply.
#[derive(Debug)]
pub enum Fail {
    /// A Redis error reply (`ERR …`, `WRONGTYPE …`): the client's problem, nothing written.
    Reply(String),
    /// The store failed: apply halts, a read answers with an error.
    Db(DbError),
}

impl From<DbError> for Fail {
    fn from(e: DbError) -> Self {
        Fail::Db(e)
    }
}

impl From<layout::CorruptMeta> for Fail {
    fn from(e: layout::CorruptMeta) -> Self {
        Fail::Db(e.into())
    }
}

/// A command's result.
pub type Res = Result<Reply, Fail>;

/// Redis's error texts.
pub mod msg {
    /// Type mismatch.
    pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
    /// Bad option combination.
    pub const SYNTAX: &str = "ERR syntax error";
    /// Not an integer.
    pub const NOT_INT: &str = "ERR value is not an integer or out of range";
    /// Not a float.
    pub const NOT_FLOAT: &str = "ERR value is not a valid float";
    /// Not a key.
    pub const NO_KEY: &str = "ERR no such key";
    /// Index past the end.
    pub const RANGE: &str = "ERR index out of range";
    /// Integer overflow.
    pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
    /// Negative where positive is needed.
    pub const NOT_POSITIVE: &str = "ERR value is out of range, must be positive";
    /// Redis's `getRangeLongFromObjectOrReply` error for an integer outside `[lo, hi]`.
    pub fn out_of_range(lo: i64, hi: i64) -> String {
        format!("ERR value is out of range, value must between {lo} and {hi}")
    }
    /// A reply past [`super::REPLY_BUDGET`].
    pub const REPLY_TOO_LARGE: &str =
        "ERR reply too large: sealkv answers at most 1 GiB per command, and per MULTI/EXEC (see docs/redis.md, Limits)";
}

/// The most reply bytes one command, or during apply one group (a MULTI/EXEC), may produce:
/// twice the largest value. Why: every replica evaluates a transaction's reads too, so a reply
/// many times the size of the data (`MGET k k k …` of a large value, `SRANDMEMBER s -16777216`,
/// a transaction of many large GETs) would exhaust every replica's memory at the same entry, and
/// again after every restart.
pub const REPLY_BUDGET: u64 = 1 << 30;

/// Fails with an error reply.
pub fn fail<T>(m: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Reply(m.into()))
}

/// A live key: its meta record and expiry (0 = none).
#[derive(Debug, Clone)]
pub struct Live {
    /// The meta record.
    pub meta: Meta,
    /// Unix ms, 0 for never.
    pub expire: u64,
}

impl Live {
    /// The element count of a hash, set or sorted set (0 for other types).
    pub fn count(&self) -> u64 {
        match self.meta {
            Meta::Hash(n) | Meta::Set(n) | Meta::ZSet(n) => n,
            _ => 0,
        }
    }
}

/// The element count of a key that may be absent.
pub fn count_of(l: &Option<Live>) -> u64 {
    l.as_ref().map_or(0, Live::count)
}

/// Cursor state for SCAN-family reads on this node (see [`crate::cursor`]).
pub use crate::cursor::Cursors;

/// What a command runs with.
pub struct Ctx<'a> {
    /// The store view.
    pub db: &'a mut dyn Db,
    /// SCAN cursors (reads on the leader); `None` during apply, where a SCAN returns everything.
    pub cursors: Option<&'a Cursors>,
    /// The rules the commands run under: the entry's level during apply, the current one for
    /// reads.
    pub rules: Rules,
    rng: u64,
    /// Whether the commands share [`REPLY_BUDGET`] (a group during apply) rather than each
    /// having its own (reads on the leader, where a pipeline of large reads is answered).
    shared_budget: bool,
    /// Reply bytes charged to the shared budget so far.
    replied: u64,
}

impl<'a> Ctx<'a> {
    /// A context over `db`, running commands under `rules`.
    pub fn new(db: &'a mut dyn Db, cursors: Option<&'a Cursors>, rules: Rules) -> Self {
        let rng = db.seed() | 1;
        Ctx { db, cursors, rules, rng, shared_budget: false, replied: 0 }
    }

    /// Makes the commands run in this context share one [`REPLY_BUDGET`] (a group at apply).
    pub fn sharing_reply_budget(mut self) -> Self {
        self.shared_budget = true;
        self
    }

    /// Reply bytes the running command may still produce.
    pub fn reply_room(&self) -> u64 {
        REPLY_BUDGET.saturating_sub(self.replied)
    }

    /// Fails with [`msg::REPLY_TOO_LARGE`] when a reply of `bytes` would not fit in
    /// [`Ctx::reply_room`]: for commands whose reply can be many times the data they read.
    pub fn reply_fits(&self, bytes: u64) -> Result<(), Fail> {
        if bytes > self.reply_room() { fail(msg::REPLY_TOO_LARGE) } else { Ok(()) }
    }

    /// Charges a finished command's reply to the shared budget; whether it fit. Always fits
    /// when the commands do not share one.
    pub fn charge_reply(&mut self, reply: &Reply) -> bool {
        if !self.shared_budget {
            return true;
        }
        let bytes = reply.size();
        if bytes > self.reply_room() {
            return false;
        }
        self.replied += bytes;
        true
    }

    /// Now, as expiry is judged.
    pub fn now(&self) -> u64 {
        self.db.now_ms()
    }

    /// A pseudo-random number: deterministic from the entry during apply (splitmix64).
    pub fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The key's meta record whatever its expiry.
    fn raw(&self, key: &[u8]) -> Result<Option<Live>, Fail> {
        match self.db.get(&layout::meta_key(key))? {
            None => Ok(None),
            Some(s) => Ok(Some(Live { meta: Meta::decode(&s.value)?, expire: s.expire_at_ms })),
        }
    }

    /// The live key, `None` if absent or expired.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Live>, Fail> {
        Ok(self.raw(key)?.filter(|l| live_at(l.expire, self.now())))
    }

    /// The live key if it has type `kind`; `WRONGTYPE` if it has another.
    pub fn lookup_kind(&self, key: &[u8], kind: Kind) -> Result<Option<Live>, Fail> {
        match self.lookup(key)? {
            Some(l) if l.meta.kind() != kind => fail(msg::WRONGTYPE),
            other => Ok(other),
        }
    }

    /// Before a write: like [`Ctx::lookup_kind`], but an expired key still on disk is removed
    /// first, so a new key never inherits its old elements.
    pub fn lookup_for_write(&mut self, key: &[u8], kind: Option<Kind>) -> Result<Option<Live>, Fail> {
        match self.raw(key)? {
            None => Ok(None),
            Some(l) if !live_at(l.expire, self.now()) => {
                self.remove(key, &l)?;
                Ok(None)
            }
            Some(l) => match kind {
                Some(k) if l.meta.kind() != k => fail(msg::WRONGTYPE),
                _ => Ok(Some(l)),
            },
        }
    }

    /// Writes the meta record with expiry `expire`, keeping the expiry index in step with the
    /// key's previous expiry `old_expire`.
    pub fn save(&mut self, key: &[u8], meta: &Meta, expire: u64, old_expire: u64) -> Result<(), Fail> {
        self.db.put(&layout::meta_key(key), &meta.encode(), expire)?;
        if expire != old_expire {
            if old_expire != 0 {
                self.db.delete(&layout::expiry_key(old_expire, key))?;
            }
            if expire != 0 {
                self.db.put(&layout::expiry_key(expire, key), b"", 0)?;
            }
        }
        Ok(())
    }

    /// Saves a collection's meta record after elements were removed, or removes the key when it
    /// became empty. A record equal to the live one means nothing was removed, and nothing is
    /// written: Redis does not count that as a modification, so a WATCH on the key stays valid
    /// (and no Raft entry carries a write for nothing).
    pub fn save_or_remove(&mut self, key: &[u8], meta: Meta, live: &Live) -> Result<(), Fail> {
        if meta == live.meta {
            return Ok(());
        }
        let empty = match &meta {
            Meta::String(_) => false,
            Meta::Hash(n) | Meta::Set(n) | Meta::ZSet(n) => *n == 0,
            Meta::List { head, tail } => head == tail,
        };
        if empty {
            self.remove(key, &Live { meta, expire: live.expire })
        } else {
            self.save(key, &meta, live.expire, live.expire)
        }
    }

    /// Removes a key: its meta record, every element and its expiry index entry.
    pub fn remove(&mut self, key: &[u8], live: &Live) -> Result<(), Fail> {
        self.db.delete(&layout::meta_key(key))?;
        if !matches!(live.meta, Meta::String(_)) {
            let (lo, hi) = layout::elem_range(key, b"");
            let subs: Vec<Vec<u8>> =
                self.db.scan(lo, hi, false).map(|r| r.map(|(k, _)| k)).collect::<Result<_, _>>()?;
            for k in subs {
                self.db.delete(&k)?;
            }
        }
        if live.expire != 0 {
            self.db.delete(&layout::expiry_key(live.expire, key))?;
        }
        Ok(())
    }

    /// Deletes a key if it is live; whether it was.
    pub fn delete_key(&mut self, key: &[u8]) -> Result<bool, Fail> {
        match self.lookup_for_write(key, None)? {
            Some(l) => {
                self.remove(key, &l)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The elements of `key` whose sub starts with `sub_prefix`: (sub, value) in order.
    pub fn elements(&self, key: &[u8], sub_prefix: &[u8], reverse: bool) -> ElemIter<'_> {
        let (lo, hi) = layout::elem_range(key, sub_prefix);
        let skip = layout::elem_prefix(key).len();
        Box::new(
            self.db
                .scan(lo, hi, reverse)
                .map(move |r| r.map(|(k, v)| (k.get(skip..).unwrap_or_default().to_vec(), v)).map_err(Fail::from)),
        )
    }

    /// An element's value.
    pub fn element(&self, key: &[u8], sub: &[u8]) -> Result<Option<Vec<u8>>, Fail> {
        Ok(self.db.get(&layout::elem_key(key, sub))?.map(|s| s.value))
    }

    /// Writes an element.
    pub fn put_element(&mut self, key: &[u8], sub: &[u8], value: &[u8]) -> Result<(), Fail> {
        Ok(self.db.put(&layout::elem_key(key, sub), value, 0)?)
    }

    /// Deletes an element.
    pub fn delete_element(&mut self, key: &[u8], sub: &[u8]) -> Result<(), Fail> {
        Ok(self.db.delete(&layout::elem_key(key, sub))?)
    }
}

/// Elements as (sub, value).
pub type ElemIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), Fail>> + 'a>;

/// Parses an integer the way Redis does (no sign '+', no spaces, no leading zeros games).
pub fn parse_int(b: &[u8]) -> Result<i64, Fail> {
    int(b).ok_or(Fail::Reply(msg::NOT_INT.into()))
}

/// Parses an integer whose negation must fit too (Redis's `getRangeLongFromObjectOrReply` over
/// ±`LONG_MAX`): a count or rank whose sign picks a direction, so -2^63 has no meaning.
pub fn parse_signed_count(b: &[u8]) -> Result<i64, Fail> {
    match parse_int(b)? {
        i64::MIN => fail(msg::out_of_range(-i64::MAX, i64::MAX)),
        n => Ok(n),
    }
}

/// Parses a count that must not be negative: `message` when it is negative or not an integer
/// (Redis answers both with one message that names the option).
pub fn non_negative(b: &[u8], message: &str) -> Result<usize, Fail> {
    match int(b) {
        Some(n) if n >= 0 => Ok(n as usize),
        _ => fail(message),
    }
}

/// Parses an integer, `None` if it is not one.
pub fn int(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 || b.first() == Some(&b'+') {
        return None;
    }
    if b.len() > 1 && (b.first() == Some(&b'0') || b.starts_with(b"-0")) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Uppercases an option name for matching.
pub fn upper(b: &[u8]) -> Vec<u8> {
    b.to_ascii_uppercase()
}

/// Redis glob matching (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes), iterative with backtracking
/// on the last star, so no pattern costs more than O(pattern × string).
pub fn glob(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if i == s.len() && p == pattern.len() {
            return true;
        }
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
                continue;
            }
            Some(_) if i == s.len() => None,
            Some(b'?') => Some(p + 1),
            Some(b'[') => class(pattern, p, s.get(i).copied().unwrap_or(0)),
            Some(b'\\') if pattern.get(p + 1).is_some() => (pattern.get(p + 1) == s.get(i)).then_some(p + 2),
            Some(c) => (Some(c) == s.get(i)).then_some(p + 1),
            None => None,
        };
        match step {
            Some(np) => {
                p = np;
                i += 1;
            }
            None => match star {
                Some((sp, si)) if si < s.len() => {
                    star = Some((sp, si + 1));
                    p = sp + 1;
                    i = si + 1;
                }
                _ => return false,
            },
        }
    }
}

/// Matches a `[...]` class at `p` against `c`: the pattern index after it if it matches.
/// Follows Redis's `stringmatchlen` byte for byte, quirks included: `x-y` is a range whenever two
/// more bytes follow `x` (so in `[a-]` the `]` ends a range, not the class), and a class left open
/// runs to the end of the pattern.
fn class(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut hit = false;
    loop {
        let rest = pattern.len().saturating_sub(j);
        match pattern.get(j) {
            Some(b'\\') if rest >= 2 => {
                j += 1;
                hit |= pattern.get(j) == Some(&c);
            }
            Some(b']') => break,
            None => {
                // Open to the end: step back so the step past the class lands at the end.
                j -= 1;
                break;
            }
            Some(&a) if rest >= 3 && pattern.get(j + 1) == Some(&b'-') => {
                let b = pattern.get(j + 2).copied().unwrap_or(a);
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                hit |= (lo..=hi).contains(&c);
                j += 2;
            }
            Some(&a) => hit |= a == c,
        }
        j += 1;
    }
    (hit != negate).then_some(j + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob(b"*", b""));
        assert!(glob(b"h?llo", b"hello"));
        assert!(glob(b"h*llo", b"heeeello"));
        assert!(glob(b"h[ae]llo", b"hallo"));
        assert!(!glob(b"h[^e]llo", b"hello"));
        assert!(glob(b"h[a-b]llo", b"hbllo"));
        assert!(glob(b"user:*:name", b"user:42:name"));
        // Redis's quirks (checked against redis-server 7.0.15): in `[a-]` the `]` ends a range
        // from `]` to `a`, and the class stays open to the end of the pattern.
        assert!(glob(b"[a-]", b"]") && glob(b"[a-]", b"a") && glob(b"[a-]", b"_"));
        assert!(!glob(b"[a-]", b"-"));
        assert!(!glob(b"h[a-]llo", b"hallo") && glob(b"h[a-]llo", b"hl"));
        assert!(glob(b"a[b", b"ab") && !glob(b"a[b", b"a[b"));
        assert!(!glob(b"user:*:name", b"user:42:mail"));
        assert!(glob(b"a\\*b", b"a*b"));
        assert!(!glob(b"a\\*b", b"axb"));
        assert!(!glob(b"abc", b"ab"));
    }

    #[test]
    fn numbers_parse_like_redis() {
        assert_eq!(int(b"-12"), Some(-12));
        assert_eq!(int(b"+1"), None);
        assert_eq!(int(b"01"), None);
        assert_eq!(int(b" 1"), None);
        assert_eq!(int(b"99999999999999999999"), None);
    }
}
