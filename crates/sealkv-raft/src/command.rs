//! KV commands: the FSM payloads with opcodes 0x00 (one write) and 0x01 (an atomic batch).
//!
//! ```text
//! 0x00 ‖ ver 0x01 ‖ ts 8 ‖ op
//! 0x01 ‖ ver 0x01 ‖ ts 8 ‖ count 4 ‖ count × op         (1 ≤ count ≤ 65536)
//! op:  0x01 put    ‖ key_len 4 ‖ key ‖ expire_at_ms 8 ‖ value_len 4 ‖ value
//!      0x02 delete ‖ key_len 4 ‖ key
//! ```
//!
//! Integers are big-endian. `ts` is the coordinator's HLC timestamp (48-bit ms ‖ 16-bit logical);
//! the apply hook never lets a commit timestamp go backwards (see `state_machine`). Every length
//! is checked against the bytes that remain before anything is allocated, and trailing bytes are
//! an error, so decoding is total.

use sealkv_crypto::codec::Reader;
use sealkv_crypto::wire::WireError;
use thiserror::Error;

/// Opcode of a single write.
pub const OP_SINGLE: u8 = 0x00;
/// Opcode of a batch.
pub const OP_BATCH: u8 = 0x01;
/// The only command format version.
pub const VERSION: u8 = 0x01;
/// The most writes one batch may carry.
pub const MAX_BATCH: u32 = 65_536;

const TAG_PUT: u8 = 0x01;
const TAG_DELETE: u8 = 0x02;

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write a value; `expire_at_ms` 0 means no expiry.
    Put {
        /// User key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// Unix ms after which the value reads as absent.
        expire_at_ms: u64,
    },
    /// Write a tombstone.
    Delete {
        /// User key.
        key: Vec<u8>,
    },
}

/// A decoded KV command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The proposer's timestamp.
    pub ts: u64,
    /// The writes, applied atomically in order.
    pub ops: Vec<Op>,
}

/// Why a payload is not a KV command.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    /// Ended early, or bytes after the last op.
    #[error("kv command: {0}")]
    Wire(#[from] WireError),
    /// Not 0x00 or 0x01.
    #[error("not a kv command (opcode {0:#04x})")]
    Opcode(u8),
    /// Unknown version.
    #[error("unknown kv command version {0:#04x}")]
    Version(u8),
    /// Unknown op tag.
    #[error("unknown kv op tag {0:#04x}")]
    OpTag(u8),
    /// A batch with 0 or too many ops, or a single command with other than one.
    #[error("kv batch count {0} out of range")]
    Count(u64),
}

impl Command {
    /// Encodes as a single command when there is one op, else as a batch.
    pub fn encode(&self) -> Result<Vec<u8>, CommandError> {
        let size: usize = self.ops.iter().map(|op| 1 + 4 + op_key(op).len() + 12 + op_value_len(op)).sum();
        let mut out = Vec::with_capacity(14 + size);
        match self.ops.as_slice() {
            [op] => {
                out.extend_from_slice(&[OP_SINGLE, VERSION]);
                out.extend_from_slice(&self.ts.to_be_bytes());
                encode_op(&mut out, op);
            }
            ops => {
                let count = u32::try_from(ops.len())
                    .ok()
                    .filter(|c| (1..=MAX_BATCH).contains(c))
                    .ok_or(CommandError::Count(ops.len() as u64))?;
                out.extend_from_slice(&[OP_BATCH, VERSION]);
                out.extend_from_slice(&self.ts.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
                for op in ops {
                    encode_op(&mut out, op);
                }
            }
        }
        Ok(out)
    }

    /// Decodes a 0x00 or 0x01 payload.
    pub fn decode(payload: &[u8]) -> Result<Command, CommandError> {
        let mut r = Reader::new(payload);
        let opcode = r.u8("kv opcode")?;
        let version = r.u8("kv version")?;
        if opcode != OP_SINGLE && opcode != OP_BATCH {
            return Err(CommandError::Opcode(opcode));
        }
        if version != VERSION {
            return Err(CommandError::Version(version));
        }
        let ts = r.u64("kv ts")?;
        let count = if opcode == OP_SINGLE {
            1
        } else {
            let c = r.u32("kv count")?;
            // Every op is at least 5 bytes, so a count the rest cannot hold is refused before
            // the vector is sized from it.
            if c == 0 || c > MAX_BATCH || c as usize > r.remaining() / 5 {
                return Err(CommandError::Count(u64::from(c)));
            }
            c as usize
        };
        let mut ops = Vec::with_capacity(count);
        for _ in 0..count {
            ops.push(read_op(&mut r)?);
        }
        r.finish()?;
        Ok(Command { ts, ops })
    }
}

fn op_key(op: &Op) -> &[u8] {
    match op {
        Op::Put { key, .. } | Op::Delete { key } => key,
    }
}

fn op_value_len(op: &Op) -> usize {
    match op {
        Op::Put { value, .. } => value.len(),
        Op::Delete { .. } => 0,
    }
}

fn encode_op(out: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Put { key, value, expire_at_ms } => {
            out.push(TAG_PUT);
            put_bytes(out, key);
            out.extend_from_slice(&expire_at_ms.to_be_bytes());
            put_bytes(out, value);
        }
        Op::Delete { key } => {
            out.push(TAG_DELETE);
            put_bytes(out, key);
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths above u32 cannot be proposed: the coordinator bounds keys and values far below.
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn read_bytes(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<u8>, CommandError> {
    let len = r.u32(what)? as usize;
    Ok(r.take(len, what)?.to_vec())
}

fn read_op(r: &mut Reader<'_>) -> Result<Op, CommandError> {
    match r.u8("kv op tag")? {
        TAG_PUT => {
            let key = read_bytes(r, "kv key")?;
            let expire_at_ms = r.u64("kv expire_at_ms")?;
            let value = read_bytes(r, "kv value")?;
            Ok(Op::Put { key, value, expire_at_ms })
        }
        TAG_DELETE => Ok(Op::Delete { key: read_bytes(r, "kv key")? }),
        t => Err(CommandError::OpTag(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_put_layout_is_pinned() {
        let c =
            Command { ts: 0x0102, ops: vec![Op::Put { key: b"k".to_vec(), value: b"vv".to_vec(), expire_at_ms: 7 }] };
        let bytes = c.encode().unwrap();
        let want: Vec<u8> = [
            &[0x00, 0x01][..],
            &[0, 0, 0, 0, 0, 0, 0x01, 0x02],
            &[0x01, 0, 0, 0, 1, b'k'],
            &[0, 0, 0, 0, 0, 0, 0, 7],
            &[0, 0, 0, 2, b'v', b'v'],
        ]
        .concat();
        assert_eq!(bytes, want);
        assert_eq!(Command::decode(&bytes).unwrap(), c);
    }

    #[test]
    fn batch_layout_is_pinned() {
        let c = Command { ts: 9, ops: vec![Op::Delete { key: b"a".to_vec() }, Op::Delete { key: vec![] }] };
        let bytes = c.encode().unwrap();
        let want: Vec<u8> =
            [&[0x01, 0x01][..], &9u64.to_be_bytes(), &[0, 0, 0, 2], &[0x02, 0, 0, 0, 1, b'a'], &[0x02, 0, 0, 0, 0]]
                .concat();
        assert_eq!(bytes, want);
        assert_eq!(Command::decode(&bytes).unwrap(), c);
    }

    #[test]
    fn hostile_counts_and_lengths_are_refused() {
        let mut b = vec![0x01, 0x01];
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Command::decode(&b), Err(CommandError::Count(u64::from(u32::MAX))));
        let mut s = vec![0x00, 0x01];
        s.extend_from_slice(&1u64.to_be_bytes());
        s.push(0x01);
        s.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Command::decode(&s), Err(CommandError::Wire(WireError::Truncated { what: "kv key" }))));
        assert_eq!(Command::decode(&[0x00, 0x02]), Err(CommandError::Version(2)));
        assert_eq!(Command::decode(&[0x02, 0x01]), Err(CommandError::Opcode(2)));
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                proptest::collection::vec(any::<u8>(), 0..40),
                proptest::collection::vec(any::<u8>(), 0..80),
                any::<u64>()
            )
                .prop_map(|(key, value, expire_at_ms)| Op::Put { key, value, expire_at_ms }),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|key| Op::Delete { key }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip_and_every_prefix_or_extension_fails(ts in any::<u64>(), ops in proptest::collection::vec(op(), 1..6), extra in any::<u8>()) {
            let c = Command { ts, ops };
            let bytes = c.encode().unwrap();
            prop_assert_eq!(Command::decode(&bytes).unwrap(), c);
            for n in 0..bytes.len() {
                prop_assert!(Command::decode(&bytes[..n]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(extra);
            prop_assert!(Command::decode(&longer).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Command::decode(&bytes);
        }
    }
}
