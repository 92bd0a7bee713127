//! AES-256-GCM key material: data-encryption keys, their purposes, and the CSPRNG.
//!
//! A [`Dek`] keeps the aws-lc key schedule built once (key setup is not free on the hot path) next
//! to the raw bytes, which are kept only so that set-once and rewrap checks can compare them in
//! constant time and a KEK can wrap them. Both are wiped when the last reference drops.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::Zeroizing;

/// Length of a DEK in bytes.
pub const DEK_LEN: usize = 32;
/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;

/// What a DEK protects. Storage and Raft keys never share an id, a nonce factory or an AAD.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Purpose {
    /// Values in the MVCC store.
    Storage,
    /// FSM payloads in the Raft log (after the raft-envelope cutover).
    Raft,
}

impl Purpose {
    /// Both purposes, in wire order.
    pub const ALL: [Purpose; 2] = [Purpose::Storage, Purpose::Raft];

    /// The wire byte (spec 02 §4): 1 = storage, 2 = raft.
    pub fn to_wire(self) -> u8 {
        match self {
            Purpose::Storage => 1,
            Purpose::Raft => 2,
        }
    }

    /// Parses the wire byte; anything but 1 or 2 is `None` (the caller's `Malformed`).
    pub fn from_wire(b: u8) -> Option<Self> {
        match b {
            1 => Some(Purpose::Storage),
            2 => Some(Purpose::Raft),
            _ => None,
        }
    }

    /// The sidecar and CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Storage => "storage",
            Purpose::Raft => "raft",
        }
    }

    /// The purpose spelled `name` (the inverse of [`Purpose::as_str`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Index into per-purpose arrays.
    pub(crate) fn slot(self) -> usize {
        match self {
            Purpose::Storage => 0,
            Purpose::Raft => 1,
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Failures of the AEAD primitive itself (not of authentication, which is an integrity error).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// aws-lc refused to build a key schedule.
    #[error("AES-256-GCM key setup failed")]
    KeySetup,
    /// aws-lc refused to seal (input beyond the AEAD's limits).
    #[error("AES-256-GCM seal failed (input too large)")]
    Seal,
    /// The system CSPRNG failed.
    #[error("the system random number generator failed")]
    Random,
    /// A DEK id 0 was offered; 0 means "no key" everywhere.
    #[error("key id 0 is reserved and never names a key")]
    ZeroKeyId,
}

/// A 32-byte data-encryption key with its id and purpose, ready to seal and open.
pub struct Dek {
    id: u32,
    purpose: Purpose,
    bytes: Zeroizing<[u8; DEK_LEN]>,
    key: LessSafeKey,
}

impl Dek {
    /// Builds the key schedule for `bytes`. The caller's buffer is its own to wipe; pass a
    /// `Zeroizing` one.
    pub fn new(id: u32, purpose: Purpose, bytes: &[u8; DEK_LEN]) -> Result<Self, CryptoError> {
        if id == 0 {
            return Err(CryptoError::ZeroKeyId);
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| CryptoError::KeySetup)?;
        Ok(Dek { id, purpose, bytes: Zeroizing::new(*bytes), key: LessSafeKey::new(unbound) })
    }

    /// The key id (never 0).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// What this key protects.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// The raw key bytes, for KEK wrapping only. Never log or copy them into a non-zeroizing
    /// buffer.
    pub fn expose_secret(&self) -> &[u8; DEK_LEN] {
        &self.bytes
    }

    /// Constant-time comparison with other key bytes (set-once and rewrap checks).
    pub fn same_bytes(&self, other: &[u8; DEK_LEN]) -> bool {
        ct_eq(self.bytes.as_slice(), other)
    }

    /// Seals `in_out` in place and returns the tag.
    pub(crate) fn seal_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<Tag, CryptoError> {
        self.key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| CryptoError::Seal)
    }

    /// Opens `ciphertext ‖ tag` in place; returns the plaintext length, or `None` if the tag does
    /// not verify.
    pub(crate) fn open_in_place(&self, nonce: [u8; NONCE_LEN], aad: &[u8], in_out: &mut [u8]) -> Option<usize> {
        self.key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out).ok().map(|pt| pt.len())
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dek {{ id: {}, purpose: {}, key: <{DEK_LEN} bytes redacted> }}", self.id, self.purpose)
    }
}

/// Constant-time equality of two byte strings of equal length (false if lengths differ).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Fills `buf` from the system CSPRNG (aws-lc). Used for DEKs, key ids and KEK-wrap nonces, never
/// for envelope nonces (those are deterministic, see [`crate::nonce`]).
pub fn random_fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| CryptoError::Random)
}

/// Generates fresh DEK bytes.
pub fn generate_dek_bytes() -> Result<Zeroizing<[u8; DEK_LEN]>, CryptoError> {
    let mut bytes = Zeroizing::new([0u8; DEK_LEN]);
    random_fill(bytes.as_mut_slice())?;
    Ok(bytes)
}

/// Draws a random non-zero key id that is not in `taken`.
pub fn random_key_id(taken: &[u32]) -> Result<u32, CryptoError> {
    loop {
        let mut b = [0u8; 4];
        random_fill(&mut b)?;
        let id = u32::from_be_bytes(b);
        if id != 0 && !taken.contains(&id) {
            return Ok(id);
        }
    }
}
