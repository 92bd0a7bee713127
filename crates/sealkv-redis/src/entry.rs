//! The body of a command-batch entry (opcode 0x08, after `0x08 ‖ ver ‖ ts`): the command rules
//! level the leader proposed it under, and the groups of commands it collected from its clients.
//!
//! ```text
//! entry: 0xFF ‖ level 1 ‖ groups        level ≥ 2 (crate::rules); level 1 is written bare:
//!        groups                         every entry before levels existed is level 1
//! groups: count 4 ‖ count × group                                  (1 ≤ count ≤ 65536)
//! group: flags 1 ‖ nwatch 4 ‖ nwatch × (key_len 4 ‖ key ‖ version 8)
//!                ‖ ncmd 4 ‖ ncmd × (argc 4 ‖ argc × (len 4 ‖ arg))
//! flags: bit 0 = EXEC (reply is the array of the commands' replies, or null when a watched
//!        key's version changed); other bits must be 0
//! ```
//!
//! Integers are big-endian. Every count is checked against the bytes that remain (each item has
//! a minimum size) before anything is allocated, and trailing bytes are an error. A bare `groups`
//! starts with 0x00 (its count is at most 65536), so the 0xFF mark cannot be mistaken for one; a
//! build from before levels reads the mark as a group count far out of range and halts.
//!
//! A follower forwards its clients' groups to the leader as a bare `groups` too: the level is the
//! leader's to choose when it proposes.

use crate::rules::Rules;
use crate::wire::Wire;

/// The most groups in one entry.
pub const MAX_GROUPS: u32 = 65_536;
const FLAG_EXEC: u8 = 0x01;
/// The first byte of an entry that names its rules level.
const LEVEL_MARK: u8 = 0xFF;

/// One client request inside an entry: a single command, or an EXEC'd transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// WATCHed keys and the version each had when watched (EXEC only).
    pub watches: Vec<(Vec<u8>, u64)>,
    /// The commands, each its argument list.
    pub cmds: Vec<Vec<Vec<u8>>>,
    /// A MULTI/EXEC transaction.
    pub exec: bool,
}

impl Group {
    /// A single command.
    pub fn single(args: Vec<Vec<u8>>) -> Group {
        Group { watches: Vec::new(), cmds: vec![args], exec: false }
    }

    /// Encoded size, for batching limits.
    pub fn size(&self) -> usize {
        9 + self.watches.iter().map(|(k, _)| 12 + k.len()).sum::<usize>()
            + self.cmds.iter().map(|c| cmd_size(c)).sum::<usize>()
    }

    /// What [`Group::single`] of `args` would measure, without building it.
    pub fn single_size(args: &[Vec<u8>]) -> usize {
        9 + cmd_size(args)
    }
}

fn cmd_size(args: &[Vec<u8>]) -> usize {
    4 + args.iter().map(|a| 4 + a.len()).sum::<usize>()
}

/// Why a body does not decode (the entry halts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Ended early.
    #[error("command batch truncated at {0}")]
    Truncated(&'static str),
    /// A count the remaining bytes cannot hold, or out of range.
    #[error("command batch {0} count {1} out of range")]
    Count(&'static str, u64),
    /// Unknown flag bits.
    #[error("command batch group flags {0:#04x} unknown")]
    Flags(u8),
    /// Bytes after the last group.
    #[error("command batch has {0} trailing bytes")]
    Trailing(usize),
    /// A rules level this build does not read (a newer leader's), or level 1 behind the mark
    /// (which no build writes: level 1 is bare).
    #[error("command batch is at command rules level {0}, which this build does not apply: upgrade this node")]
    Level(u8),
}

/// Encodes an entry body: `groups` under command rules `rules`.
pub fn encode_entry(rules: Rules, groups: &[Group]) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + groups.iter().map(Group::size).sum::<usize>());
    if rules != Rules::V1 {
        out.extend_from_slice(&[LEVEL_MARK, rules.byte()]);
    }
    encode_into(&mut out, groups);
    out
}

/// Decodes an entry body into its rules level and groups; total.
pub fn decode_entry(body: &[u8]) -> Result<(Rules, Vec<Group>), EntryError> {
    match body {
        [LEVEL_MARK, level, groups @ ..] => match Rules::from_byte(*level) {
            Some(rules) if rules != Rules::V1 => Ok((rules, decode(groups)?)),
            _ => Err(EntryError::Level(*level)),
        },
        _ => Ok((Rules::V1, decode(body)?)),
    }
}

/// Encodes bare groups (a forwarded request; inside an entry, after its level).
pub fn encode(groups: &[Group]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + groups.iter().map(Group::size).sum::<usize>());
    encode_into(&mut out, groups);
    out
}

fn encode_into(out: &mut Vec<u8>, groups: &[Group]) {
    out.extend_from_slice(&(groups.len() as u32).to_be_bytes());
    for g in groups {
        out.push(if g.exec { FLAG_EXEC } else { 0 });
        out.extend_from_slice(&(g.watches.len() as u32).to_be_bytes());
        for (k, v) in &g.watches {
            bytes(out, k);
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&(g.cmds.len() as u32).to_be_bytes());
        for c in &g.cmds {
            out.extend_from_slice(&(c.len() as u32).to_be_bytes());
            for a in c {
                bytes(out, a);
            }
        }
    }
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Arguments are bounded by the RESP limits (512 MiB), far below u32::MAX.
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(Wire<'a>);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EntryError> {
        self.0.take(n).ok_or(EntryError::Truncated(what))
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, EntryError> {
        Ok(u8::from_be_bytes(self.0.array().ok_or(EntryError::Truncated(what))?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, EntryError> {
        Ok(u32::from_be_bytes(self.0.array().ok_or(EntryError::Truncated(what))?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, EntryError> {
        Ok(u64::from_be_bytes(self.0.array().ok_or(EntryError::Truncated(what))?))
    }
    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, EntryError> {
        let n = self.u32(what)? as usize;
        Ok(self.take(n, what)?.to_vec())
    }
    /// A count whose items are at least `min` bytes each.
    fn count(&mut self, what: &'static str, min: usize, max: u32) -> Result<usize, EntryError> {
        let c = self.u32(what)?;
        if c > max || c as usize > self.0.remaining() / min {
            return Err(EntryError::Count(what, u64::from(c)));
        }
        Ok(c as usize)
    }
}

/// Decodes bare groups; total.
pub fn decode(body: &[u8]) -> Result<Vec<Group>, EntryError> {
    let mut r = Reader(Wire::new(body));
    let n = r.count("groups", 9, MAX_GROUPS)?;
    if n == 0 {
        return Err(EntryError::Count("groups", 0));
    }
    let mut groups = Vec::with_capacity(n);
    for _ in 0..n {
        let flags = r.u8("flags")?;
        if flags & !FLAG_EXEC != 0 {
            return Err(EntryError::Flags(flags));
        }
        let nw = r.count("watches", 12, u32::MAX)?;
        let mut watches = Vec::with_capacity(nw);
        for _ in 0..nw {
            let k = r.bytes("watch key")?;
            watches.push((k, r.u64("watch version")?));
        }
        let nc = r.count("commands", 4, u32::MAX)?;
        let mut cmds = Vec::with_capacity(nc);
        for _ in 0..nc {
            let argc = r.count("arguments", 4, u32::MAX)?;
            let mut args = Vec::with_capacity(argc);
            for _ in 0..argc {
                args.push(r.bytes("argument")?);
            }
            cmds.push(args);
        }
        groups.push(Group { watches, cmds, exec: flags & FLAG_EXEC != 0 });
    }
    if r.0.remaining() != 0 {
        return Err(EntryError::Trailing(r.0.remaining()));
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The batching limits measure exactly what `encode` writes (less its group count).
        #[test]
        fn sizes_are_the_encoded_lengths(args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..6),
                                         watches in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..20), any::<u64>()), 0..3)) {
            let single = Group::single(args.clone());
            prop_assert_eq!(Group::single_size(&args), single.size());
            prop_assert_eq!(encode(std::slice::from_ref(&single)).len(), 4 + single.size());
            let g = Group { watches, cmds: vec![args.clone(), args], exec: true };
            prop_assert_eq!(encode(std::slice::from_ref(&g)).len(), 4 + g.size());
        }
    }

    #[test]
    fn layout_is_pinned() {
        let g =
            Group { watches: vec![(b"w".to_vec(), 7)], cmds: vec![vec![b"GET".to_vec(), b"k".to_vec()]], exec: true };
        let want: Vec<u8> = [
            &[0, 0, 0, 1][..],
            &[0x01],
            &[0, 0, 0, 1, 0, 0, 0, 1, b'w', 0, 0, 0, 0, 0, 0, 0, 7],
            &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, b'G', b'E', b'T', 0, 0, 0, 1, b'k'],
        ]
        .concat();
        assert_eq!(encode(std::slice::from_ref(&g)), want);
        assert_eq!(decode(&want).unwrap(), vec![g]);
    }

    #[test]
    fn entry_layout_is_pinned_and_level_1_is_bare() {
        let g = Group::single(vec![b"PING".to_vec()]);
        let bare = encode(std::slice::from_ref(&g));
        assert_eq!(bare, [&[0, 0, 0, 1, 0x00, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 4][..], b"PING"].concat());
        let tagged = encode_entry(Rules::V2, std::slice::from_ref(&g));
        assert_eq!(tagged, [&[0xFF, 0x02][..], &bare].concat());
        assert_eq!(decode_entry(&tagged), Ok((Rules::V2, vec![g.clone()])));
        assert_eq!(encode_entry(Rules::V1, std::slice::from_ref(&g)), bare, "level 1 is written bare");
        assert_eq!(decode_entry(&bare), Ok((Rules::V1, vec![g])), "an entry from before levels is level 1");
    }

    #[test]
    fn unknown_levels_halt_and_old_builds_cannot_misread_a_level() {
        for level in [0u8, 1, 4, 0xFF] {
            let mut b = vec![0xFF, level];
            b.extend_from_slice(&encode(&[Group::single(vec![b"PING".to_vec()])]));
            assert_eq!(decode_entry(&b), Err(EntryError::Level(level)), "level {level}");
        }
        // What a build without levels makes of a levelled entry: a group count out of range.
        let tagged = encode_entry(Rules::V2, &[Group::single(vec![b"PING".to_vec()])]);
        assert!(matches!(decode(&tagged), Err(EntryError::Count("groups", n)) if n > u64::from(MAX_GROUPS)));
        assert!(decode_entry(&[0xFF]).is_err(), "a lone mark is a truncated entry");
    }

    #[test]
    fn hostile_counts_and_flags_are_refused() {
        assert_eq!(decode(&[0, 0, 0, 0]), Err(EntryError::Count("groups", 0)));
        assert_eq!(decode(&[0xFF, 0xFF, 0xFF, 0xFF]), Err(EntryError::Count("groups", u64::from(u32::MAX))));
        let mut b = vec![0, 0, 0, 1, 0x02];
        b.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&b), Err(EntryError::Flags(2)));
        let mut b = vec![0, 0, 0, 1, 0x00, 0, 0, 0, 0];
        b.extend_from_slice(&[0x7F, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(decode(&b), Err(EntryError::Count("commands", _))));
    }

    fn group() -> impl Strategy<Value = Group> {
        let arg = proptest::collection::vec(any::<u8>(), 0..12);
        (
            proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..6), any::<u64>()), 0..3),
            proptest::collection::vec(proptest::collection::vec(arg, 0..4), 0..4),
            any::<bool>(),
        )
            .prop_map(|(watches, cmds, exec)| Group { watches, cmds, exec })
    }

    proptest! {
        #[test]
        fn round_trip_and_every_prefix_or_extension_fails(groups in proptest::collection::vec(group(), 1..4), extra in any::<u8>()) {
            let b = encode(&groups);
            prop_assert_eq!(decode(&b).unwrap(), groups);
            for n in 0..b.len() {
                prop_assert!(decode(&b[..n]).is_err());
            }
            let mut longer = b.clone();
            longer.push(extra);
            prop_assert!(decode(&longer).is_err());
        }

        #[test]
        fn entries_round_trip_at_every_level(groups in proptest::collection::vec(group(), 1..4), rules in proptest::sample::select(Rules::ALL.to_vec())) {
            let b = encode_entry(rules, &groups);
            prop_assert_eq!(decode_entry(&b).unwrap(), (rules, groups));
            for n in 0..b.len() {
                prop_assert!(decode_entry(&b[..n]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = decode_entry(&bytes);
        }
    }
}
