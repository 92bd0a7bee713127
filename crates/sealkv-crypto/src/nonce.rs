//! Deterministic AES-GCM nonces. Never random: a random 96-bit nonce under one DEK collides after
//! about 2^32 seals, and sealkv seals far more than that over a key's life.
//!
//! ```text
//! | node16 2B | local_epoch 2B | write_count 8B |      (big-endian)
//! ```
//!
//! * `node16` is the low 16 bits of the node's full id ([`full_node_id`]); the writer registry
//!   guarantees no two nodes that ever wrote under a DEK share it.
//! * `local_epoch` is the per-(node, DEK) process-load counter from the sidecar, bumped and
//!   fsync'd before the first seal of a load; 0xFFFF means exhausted.
//! * `write_count` is pre-incremented (the first nonce of a load has count 1); when it would wrap
//!   the factory latches into [`NonceError::Exhausted`] forever.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A local_epoch of this value is exhausted: the DEK must be rotated before this node seals again.
pub const EPOCH_EXHAUSTED: u16 = 0xFFFF;
/// Above this local_epoch, startup warns that rotation is due.
pub const EPOCH_WARN: u16 = 0xFF00;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of the `--node-id` string: the node's full id. The empty string maps to 0 ("no
/// id"); a non-empty id whose hash is 0 maps to 1, so 0 only ever means "unset".
pub fn full_node_id(node_id: &str) -> u64 {
    if node_id.is_empty() {
        return 0;
    }
    let h = node_id.bytes().fold(FNV_OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME));
    if h == 0 { 1 } else { h }
}

/// The nonce node id: the low 16 bits of the full id.
pub fn node16(full_node_id: u64) -> u16 {
    (full_node_id & 0xFFFF) as u16
}

/// Why no nonce could be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceError {
    /// The write counter would wrap; this factory never produces a nonce again.
    #[error("nonce space exhausted for this process load; rotate the DEK and restart")]
    Exhausted,
    /// The local epoch is 0xFFFF.
    #[error("local_epoch is exhausted (0xFFFF); rotate the DEK before sealing under it")]
    EpochExhausted,
}

/// Hands out unique nonces for one (node, DEK, process load). Shared by all sealing threads.
///
/// # Examples
///
/// ```
/// use sealkv_crypto::{NonceFactory, full_node_id, node16};
///
/// let f = NonceFactory::new(node16(full_node_id("n1")), 3)?;
/// let n = f.next()?;
/// assert_eq!(&n[2..], &[0, 3, 0, 0, 0, 0, 0, 0, 0, 1]); // epoch 3, first count is 1
/// # Ok::<(), sealkv_crypto::nonce::NonceError>(())
/// ```
#[derive(Debug)]
pub struct NonceFactory {
    node16: u16,
    epoch: u16,
    count: AtomicU64,
    exhausted: AtomicBool,
}

impl NonceFactory {
    /// A factory at the start of a load (the first nonce has count 1).
    pub fn new(node16: u16, local_epoch: u16) -> Result<Self, NonceError> {
        Self::resume(node16, local_epoch, 0)
    }

    /// A factory whose last issued count is `last_count` (tests and exhaustion drills).
    pub fn resume(node16: u16, local_epoch: u16, last_count: u64) -> Result<Self, NonceError> {
        if local_epoch == EPOCH_EXHAUSTED {
            return Err(NonceError::EpochExhausted);
        }
        Ok(NonceFactory {
            node16,
            epoch: local_epoch,
            count: AtomicU64::new(last_count),
            exhausted: AtomicBool::new(false),
        })
    }

    /// The next nonce, or a permanent error once the counter would wrap.
    pub fn next(&self) -> Result<[u8; 12], NonceError> {
        if self.exhausted.load(Ordering::Acquire) {
            return Err(NonceError::Exhausted);
        }
        match self.count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_add(1)) {
            Ok(prev) => Ok(encode(self.node16, self.epoch, prev.wrapping_add(1))),
            Err(_) => {
                self.exhausted.store(true, Ordering::Release);
                Err(NonceError::Exhausted)
            }
        }
    }

    /// How many nonces this load has issued (drives the auto-rotation metric).
    pub fn issued(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// The epoch this factory stamps into every nonce.
    pub fn epoch(&self) -> u16 {
        self.epoch
    }
}

/// Lays out a nonce.
pub fn encode(node16: u16, local_epoch: u16, write_count: u64) -> [u8; 12] {
    let [a, b] = node16.to_be_bytes();
    let [c, d] = local_epoch.to_be_bytes();
    let [e, f, g, h, i, j, k, l] = write_count.to_be_bytes();
    [a, b, c, d, e, f, g, h, i, j, k, l]
}

/// Splits a nonce into `(node16, local_epoch, write_count)`.
pub fn decode(nonce: &[u8; 12]) -> (u16, u16, u64) {
    let [a, b, c, d, rest @ ..] = *nonce;
    (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]), u64::from_be_bytes(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Reference values of FNV-1a 64 (Fowler/Noll/Vo test suite).
        assert_eq!(full_node_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(full_node_id("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(full_node_id(""), 0);
        assert_eq!(node16(full_node_id("a")), 0xec8c);
    }

    #[test]
    fn nonce_layout_pin() {
        let f = NonceFactory::new(0xABCD, 7).unwrap();
        assert_eq!(
            f.next().unwrap(),
            [0xAB, 0xCD, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0, 1],
            "first nonce of a load has count 1"
        );
        assert_eq!(f.next().unwrap()[11], 2);
        assert_eq!(decode(&encode(1, 2, 3)), (1, 2, 3));
    }

    #[test]
    fn counter_exhaustion_latches_forever() {
        let f = NonceFactory::resume(1, 1, u64::MAX - 1).unwrap();
        assert_eq!(decode(&f.next().unwrap()).2, u64::MAX);
        assert_eq!(f.next(), Err(NonceError::Exhausted));
        assert_eq!(f.next(), Err(NonceError::Exhausted));
        assert_eq!(f.issued(), u64::MAX);
    }

    #[test]
    fn exhausted_epoch_is_refused() {
        assert_eq!(NonceFactory::new(1, EPOCH_EXHAUSTED).unwrap_err(), NonceError::EpochExhausted);
        assert!(NonceFactory::new(1, EPOCH_EXHAUSTED - 1).is_ok());
    }

    #[test]
    fn concurrent_nonces_are_unique() {
        let f = std::sync::Arc::new(NonceFactory::new(9, 9).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let f = f.clone();
                std::thread::spawn(move || (0..10_000).map(|_| f.next().unwrap()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<[u8; 12]> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 40_000);
    }
}
