//! Command rules levels: which version of the commands' semantics an entry is evaluated under.
//!
//! Every replica evaluates a command-batch entry when it applies it (`docs/redis.md`). A change to
//! what a command does with the same arguments and state (reading `0x10` as a score, say) would
//! make two builds disagree about the same entry: in a rolling upgrade, and for the entries a
//! restarted node applies that the others applied before their own upgrade. So the leader writes
//! the level it proposes under into each entry ([`crate::entry::encode_entry`]), every replica
//! evaluates the entry under that level whatever its build, and a build that does not know an
//! entry's level halts there instead of guessing. Reads, which no replica repeats, run under
//! [`Rules::CURRENT`].
//!
//! Only a change to what a command writes needs a level. One that changes only a reply (which
//! error text a malformed command gets, say) leaves every replica's state the same, and only the
//! leader's replies reach a client. Nor does one that answers a command every earlier build halted
//! at (a key too long for the store, say, now an error reply): no replica ever applied past such
//! an entry, so there is no state for a newer build to disagree with.
//!
//! Every behaviour that differs between levels is decided here, so a level is one list of
//! differences, not a condition spread over the commands.

use crate::longdouble::{self, Num};
use crate::strtod;

/// A command rules level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rules {
    /// Entries without a level (every entry before levels existed). Scores and range bounds are
    /// read by Rust's float parser: no hexadecimal floats, `1e400` is infinity and `1e-400` zero.
    /// INCRBYFLOAT and HINCRBYFLOAT read no hexadecimal float either.
    V1 = 1,
    /// Floats are read as Redis reads them, through `strtod`/`strtold` ([`crate::strtod`]):
    /// hexadecimal floats are numbers, a score that overflows or underflows to zero is refused,
    /// and a range bound skips leading white space, ends at an embedded NUL, and reads an empty
    /// bound as 0.
    V2 = 2,
    /// A score of -0 is the score 0, as in Redis, where -0 and 0 compare equal: ZADD and ZINCRBY
    /// store 0 for a score that is -0, so members at either zero sort by member, and a score
    /// range whose bound is a zero covers members at both zeros, including any stored as -0 at an
    /// earlier level. Before, -0 was stored as given and sorted below 0, so `ZRANGEBYSCORE z 0 0`
    /// missed a member added at `-0` and ZREMRANGEBYSCORE left it. FLUSHALL and FLUSHDB take one
    /// option at most: `FLUSHALL ASYNC x` flushed before, and is Redis's syntax error now. And a
    /// transaction's reads share one reply budget ([`crate::keyspace::REPLY_BUDGET`]): once it is
    /// spent, its later reads answer an error without running, so they no longer draw from the
    /// random picks that a later SPOP in it makes.
    V3 = 3,
}

impl Rules {
    /// The level this build proposes under.
    pub const CURRENT: Rules = Rules::V3;

    /// Every level this build applies, oldest first.
    pub const ALL: [Rules; 3] = [Rules::V1, Rules::V2, Rules::V3];

    /// The level a stored level byte names; `None` for one this build does not know.
    pub fn from_byte(b: u8) -> Option<Rules> {
        match b {
            1 => Some(Rules::V1),
            2 => Some(Rules::V2),
            3 => Some(Rules::V3),
            _ => None,
        }
    }

    /// The level's byte in an entry.
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// A score argument (ZADD, ZINCRBY); `None` is `ERR value is not a valid float`.
    pub fn score(self, b: &[u8]) -> Option<f64> {
        match self {
            Rules::V1 => v1_float(b),
            Rules::V2 | Rules::V3 => strtod::string2d(b),
        }
    }

    /// The score a sorted-set member is stored at when it is set to `score`.
    pub fn stored_score(self, score: f64) -> f64 {
        if self >= Rules::V3 && score == 0.0 { 0.0 } else { score }
    }

    /// How many options FLUSHALL and FLUSHDB take (ASYNC or SYNC); before level 3 any after the
    /// first were ignored.
    pub fn flush_options(self) -> usize {
        if self >= Rules::V3 { 1 } else { usize::MAX }
    }

    /// Whether the commands of a group (a MULTI/EXEC) share one reply budget at apply.
    pub fn group_reply_budget(self) -> bool {
        self >= Rules::V3
    }

    /// Whether a score range bounded by a zero covers both zeros (see [`Rules::V3`]); before
    /// level 3 the index was searched from and to the bound's own sign of zero.
    pub fn zeros_are_one_score(self) -> bool {
        self >= Rules::V3
    }

    /// A score range bound after its optional `(` (ZRANGE BYSCORE, ZRANGEBYSCORE, ZCOUNT,
    /// ZREMRANGEBYSCORE); `None` is `ERR min or max is not a float`.
    pub fn range_bound(self, b: &[u8]) -> Option<f64> {
        match self {
            Rules::V1 => v1_float(b),
            Rules::V2 | Rules::V3 => strtod::range_bound(b),
        }
    }

    /// An INCRBYFLOAT or HINCRBYFLOAT operand, or the value it increments.
    pub fn long_double(self, b: &[u8]) -> Option<Num> {
        longdouble::parse(b, self >= Rules::V2)
    }
}

/// Level 1's float reading, kept exactly as it was: `inf` and `infinity` with an optional sign,
/// otherwise Rust's `f64` parser; never NaN, no surrounding white space.
fn v1_float(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.trim() != s {
        return None;
    }
    let v: f64 = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => s.parse().ok()?,
    };
    (!v.is_nan()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_bytes_round_trip_and_unknown_ones_are_refused() {
        for r in Rules::ALL {
            assert_eq!(Rules::from_byte(r.byte()), Some(r));
        }
        assert_eq!(Rules::CURRENT, Rules::V3);
        for b in [0u8, 4, 0xFF] {
            assert_eq!(Rules::from_byte(b), None, "{b}");
        }
    }

    /// Level 1 must keep answering as it did, so a newer build applies old entries as the build
    /// that first applied them did.
    #[test]
    fn level_1_reads_floats_as_it_always_did() {
        assert_eq!(Rules::V1.score(b"1.5e3"), Some(1500.0));
        assert_eq!(Rules::V1.score(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(Rules::V1.score(b"1e400"), Some(f64::INFINITY));
        assert_eq!(Rules::V1.score(b"1e-400"), Some(0.0));
        for refused in [&b"nan"[..], b"abc", b"0x10", b" 1", b"", b"(1"] {
            assert_eq!(Rules::V1.score(refused), None, "{refused:?}");
            assert_eq!(Rules::V1.range_bound(refused), None, "{refused:?}");
        }
        assert!(Rules::V1.long_double(b"0x10").is_none());
    }

    #[test]
    fn level_2_reads_floats_as_redis_does() {
        assert_eq!(Rules::V2.score(b"0x10"), Some(16.0));
        assert_eq!(Rules::V2.score(b"1e400"), None);
        assert_eq!(Rules::V2.score(b"1e-400"), None);
        assert_eq!(Rules::V2.range_bound(b" 1"), Some(1.0));
        assert_eq!(Rules::V2.range_bound(b""), Some(0.0));
        assert_eq!(Rules::V2.range_bound(b"1e400"), Some(f64::INFINITY));
        assert!(Rules::V2.long_double(b"0x10").is_some());
    }

    #[test]
    fn level_3_stores_negative_zero_as_zero() {
        for r in [Rules::V1, Rules::V2] {
            assert!(r.stored_score(-0.0).is_sign_negative(), "{r:?} keeps -0 as it always did");
            assert!(!r.zeros_are_one_score());
        }
        assert!(Rules::V3.stored_score(-0.0).is_sign_positive());
        assert_eq!(Rules::V3.flush_options(), 1);
        assert!(Rules::V3.group_reply_budget() && !Rules::V2.group_reply_budget());
        assert_eq!(Rules::V2.flush_options(), usize::MAX);
        assert!(Rules::V3.zeros_are_one_score());
        for s in [0.0, 1.5, -2.0, f64::INFINITY, f64::NEG_INFINITY, -f64::MIN_POSITIVE] {
            assert_eq!(Rules::V3.stored_score(s).to_bits(), s.to_bits(), "{s}");
        }
    }
}
