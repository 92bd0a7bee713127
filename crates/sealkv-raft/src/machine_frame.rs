//! The framing of a command-batch payload (opcode 0x08): the commit timestamp and the body the
//! node's [`crate::Machine`] evaluates, compressed when that makes it smaller.
//!
//! ```text
//! 0x08 ‖ 0x01 ‖ ts 8 ‖ body                       body as is
//! 0x08 ‖ 0x02 ‖ ts 8 ‖ len 4 ‖ lz4 block(body)    body compressed (the store's LZ4 format)
//! ```
//!
//! Why compress here: with encryption on, the payload is sealed by the raft envelope before it
//! reaches the log, and ciphertext does not compress, so fjall's journal compression (which does
//! shrink cleartext entries) gains nothing and the log, the journal and AppendEntries carry every
//! byte. Compressing before sealing (as the storage envelope does for values) gives encrypted and
//! cleartext clusters the same small entries. The raft envelope itself is unchanged (spec 02 §1,
//! flag 0x00): this is the payload's own format, inside it.
//!
//! A body is compressed only if it is at least [`COMPRESS_FROM`] bytes, at most [`MAX_BODY`]
//! bytes, and the result is smaller; the decoder refuses to inflate past [`MAX_BODY`], so every
//! frame an encoder writes decodes on every replica, and no frame can make one allocate more.

use sealkv_store::DecompressError;
use sealkv_store::compress::{compress, decompress_into};

/// Opcode of a command-batch entry.
pub const OP_MACHINE: u8 = 0x08;
/// The body follows as is.
pub const VERSION_RAW: u8 = 0x01;
/// The body follows LZ4-compressed (`len 4 ‖ block`).
pub const VERSION_LZ4: u8 = 0x02;
/// Bodies shorter than this are framed as is: too small for LZ4 to pay for itself.
pub const COMPRESS_FROM: usize = 512;
/// The largest body that is compressed, and the most a compressed frame may inflate to.
pub const MAX_BODY: usize = 64 << 20;

/// Why a command-batch payload does not decode (the entry halts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than `0x08 ‖ ver ‖ ts`.
    #[error("command batch truncated")]
    Truncated,
    /// A version byte this node does not know.
    #[error("unknown command batch version {0:#04x}")]
    Version(u8),
    /// The compressed body does not inflate.
    #[error("command batch body: {0}")]
    Body(#[from] DecompressError),
}

/// Frames a command-batch payload, compressing the body when that helps.
pub fn encode(ts: u64, body: &[u8]) -> Vec<u8> {
    let packed = (COMPRESS_FROM..=MAX_BODY).contains(&body.len()).then(|| compress(body)).flatten();
    let (version, rest) = match &packed {
        Some(c) => (VERSION_LZ4, c.as_slice()),
        None => (VERSION_RAW, body),
    };
    let mut out = Vec::with_capacity(10 + rest.len());
    out.extend_from_slice(&[OP_MACHINE, version]);
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(rest);
    out
}

/// The commit timestamp and body of a payload whose first byte is [`OP_MACHINE`]; total.
///
/// A compressed body is inflated into `scratch` (its old contents replaced) and borrowed from
/// there, so the apply loop reuses one buffer for every batch ([`decompress_into`] says why).
pub fn decode<'a>(payload: &'a [u8], scratch: &'a mut Vec<u8>) -> Result<(u64, &'a [u8]), FrameError> {
    let [_, version, t0, t1, t2, t3, t4, t5, t6, t7, rest @ ..] = payload else {
        return Err(FrameError::Truncated);
    };
    let ts = u64::from_be_bytes([*t0, *t1, *t2, *t3, *t4, *t5, *t6, *t7]);
    match *version {
        VERSION_RAW => Ok((ts, rest)),
        VERSION_LZ4 => {
            decompress_into(rest, MAX_BODY, scratch)?;
            Ok((ts, scratch.as_slice()))
        }
        v => Err(FrameError::Version(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn raw_frame_layout_is_pinned() {
        assert_eq!(encode(0x0102_0304_0506_0708, b"abc"), b"\x08\x01\x01\x02\x03\x04\x05\x06\x07\x08abc".to_vec());
        let mut scratch = Vec::new();
        let (ts, body) = decode(b"\x08\x01\x00\x00\x00\x00\x00\x00\x00\x09xyz", &mut scratch).unwrap();
        assert_eq!((ts, body), (9, b"xyz".as_slice()));
    }

    #[test]
    fn compressed_frame_layout_is_pinned() {
        let body = vec![b'x'; 1024];
        let frame = encode(7, &body);
        // 0x08 ‖ 0x02 ‖ ts ‖ len 1024 ‖ LZ4 block: token 0x1f (1 literal, long match), 'x',
        // offset 1, match length 15+255+255+255+233 (+4 = 1017), then token 0x60 and the last 6
        // bytes as literals (LZ4 ends every block with literals).
        let want =
            b"\x08\x02\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x04\x00\x1f\x78\x01\x00\xff\xff\xff\xe9\x60xxxxxx";
        assert_eq!(frame, want.to_vec());
        assert!(frame.len() < 40, "1 KiB of one byte framed in {} bytes", frame.len());
        let mut scratch = Vec::new();
        let (ts, got) = decode(&frame, &mut scratch).unwrap();
        assert_eq!((ts, got), (7, body.as_slice()));
    }

    #[test]
    fn a_reused_scratch_holds_only_the_latest_body() {
        let mut scratch = Vec::new();
        let long = encode(1, &[b'x'; 8192]);
        let short = encode(2, &[b'y'; 1024]);
        assert_eq!(long[1], VERSION_LZ4);
        assert_eq!(short[1], VERSION_LZ4);
        assert_eq!(decode(&long, &mut scratch).unwrap(), (1, [b'x'; 8192].as_slice()));
        assert_eq!(decode(&short, &mut scratch).unwrap(), (2, [b'y'; 1024].as_slice()));
        // A frame that fails to inflate leaves nothing of the last body behind.
        let mut bad = long.clone();
        bad[10..14].copy_from_slice(&8191u32.to_be_bytes());
        assert!(matches!(decode(&bad, &mut scratch), Err(FrameError::Body(_))));
        assert!(scratch.is_empty());
    }

    #[test]
    fn small_and_incompressible_bodies_stay_raw() {
        assert_eq!(encode(1, &[b'x'; COMPRESS_FROM - 1])[1], VERSION_RAW);
        let noise = sealkv_testkit::incompressible(0, 4096);
        assert_eq!(encode(1, &noise)[1], VERSION_RAW);
    }

    #[test]
    fn damaged_frames_are_typed_errors() {
        assert_eq!(decode(b"\x08\x01\x00", &mut Vec::new()), Err(FrameError::Truncated));
        assert_eq!(
            decode(b"\x08\x03\x00\x00\x00\x00\x00\x00\x00\x00", &mut Vec::new()),
            Err(FrameError::Version(0x03))
        );
        let mut frame = encode(7, &[b'x'; 4096]);
        // A length the block cannot produce, then one above the limit.
        frame[10..14].copy_from_slice(&4095u32.to_be_bytes());
        assert!(matches!(decode(&frame, &mut Vec::new()), Err(FrameError::Body(_))));
        frame[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&frame, &mut Vec::new()), Err(FrameError::Body(DecompressError::BadLength { .. }))));
        let cut = encode(7, &[b'x'; 4096]);
        assert!(decode(&cut[..cut.len() - 1], &mut Vec::new()).is_err());
    }

    proptest! {
        #[test]
        fn frames_round_trip(ts in any::<u64>(), body in proptest::collection::vec(prop_oneof![Just(b'a'), any::<u8>()], 0..4096)) {
            let frame = encode(ts, &body);
            let mut scratch = Vec::new();
            let (t, b) = decode(&frame, &mut scratch).unwrap();
            prop_assert_eq!(t, ts);
            prop_assert_eq!(b, body.as_slice());
        }

        /// The apply loop decodes every batch through one scratch buffer: what an earlier, longer
        /// body left there must never show through a later one.
        #[test]
        fn one_scratch_serves_frame_after_frame(
            bodies in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![3 => Just(b'a'), 1 => any::<u8>()], 0..4096), 1..6)
        ) {
            let mut scratch = Vec::new();
            for (i, body) in bodies.iter().enumerate() {
                let frame = encode(i as u64, body);
                let (t, b) = decode(&frame, &mut scratch).unwrap();
                prop_assert_eq!((t, b), (i as u64, body.as_slice()));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut payload = vec![OP_MACHINE];
            payload.extend_from_slice(&bytes);
            if let Ok((_, body)) = decode(&payload, &mut Vec::new()) {
                // An inflated body is bounded by what its compressed form can produce.
                prop_assert!(body.len() <= payload.len().saturating_mul(255));
            }
        }
    }
}
