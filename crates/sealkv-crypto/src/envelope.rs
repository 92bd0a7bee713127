//! The two AES-256-GCM envelopes: storage (values in the MVCC store) and raft (FSM payloads in
//! the Raft log). One layout, two AADs:
//!
//! ```text
//! | ver 1B = 0x01 | flag 1B | key_id 4B | nonce 12B | ciphertext N | tag 16B |
//!   header = 18 bytes, overhead = 34 bytes
//!
//! flag bit 0: plaintext was compressed before sealing (storage only); bits 1..7 must be 0.
//!
//! storage AAD = ver ‖ flag ‖ key_id ‖ value_header(9, as stored) ‖ mvcc_key
//! raft AAD    = 0x52 'R' ‖ ver ‖ key_id
//! ```
//!
//! Binding the value header and the MVCC key into the storage AAD is what makes a blob useless
//! anywhere but where it was written: moving it to another key or version, editing its TTL or
//! tombstone bit, re-tagging its key id or flipping the compression bit all fail to open. The
//! raft AAD starts with a byte no storage AAD can start with (`ver` is 0x01), so neither layer
//! can be fed the other's envelope.
//!
//! Every open failure is an [`IntegrityError`]; its [`reason`](IntegrityError::reason) is the
//! label of the decrypt-failure metric. Nothing here ever returns bytes that did not verify.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cipher::{CryptoError, Dek, NONCE_LEN, Purpose, TAG_LEN};
use crate::keystore::Keystore;
use crate::nonce::{NonceError, NonceFactory};

/// The only envelope version this build writes or reads.
pub const VERSION: u8 = 0x01;
/// Header length: ver, flag, key_id, nonce.
pub const HEADER_LEN: usize = 18;
/// Header plus tag.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Flag bit 0: the plaintext was compressed before sealing.
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Length of the value header bound into the storage AAD.
pub const VALUE_HEADER_LEN: usize = 9;
const RAFT_AAD_TAG: u8 = b'R';
/// Storage AADs up to this size are built on the stack.
const INLINE_AAD: usize = 256;

/// Why an envelope did not open. Each variant is an integrity failure; nothing is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// Shorter than the 34-byte overhead (spec name: `EnvelopeShort`).
    #[error("integrity: envelope is {len} bytes, shorter than the {OVERHEAD}-byte minimum")]
    Truncated {
        /// The length seen.
        len: usize,
    },
    /// A version other than 0x01 (spec name: `EnvelopeVersion`).
    #[error("integrity: unsupported envelope version {0:#04x}")]
    BadVersion(u8),
    /// Reserved flag bits set, or any flag on a raft envelope (spec name: `EnvelopeFlag`).
    #[error("integrity: invalid envelope flag {0:#04x}")]
    BadFlag(u8),
    /// No loaded key of the right purpose has this id (0 never names a key).
    #[error("integrity: no {purpose} key with id {key_id} is loaded")]
    UnknownKeyId {
        /// The id the envelope names.
        key_id: u32,
        /// The purpose the caller opened for.
        purpose: Purpose,
    },
    /// The tag did not verify: tampered bytes, wrong place, or wrong key.
    #[error("integrity: authentication tag mismatch under key id {key_id}")]
    TagMismatch {
        /// The id the envelope names.
        key_id: u32,
    },
}

/// The metric-label form of an [`IntegrityError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecryptReason {
    /// See [`IntegrityError::TagMismatch`].
    TagMismatch,
    /// See [`IntegrityError::UnknownKeyId`].
    UnknownKeyId,
    /// See [`IntegrityError::Truncated`].
    Truncated,
    /// See [`IntegrityError::BadVersion`].
    BadVersion,
    /// See [`IntegrityError::BadFlag`].
    BadFlag,
}

/// Process-wide counts of refused opens by reason (`sealkv_encryption_decrypt_failures_total`):
/// a rising count is tampering, a missing key or corruption, and an operator must see it even when
/// the read that hit it only returned an error to one client.
static FAILURES: [AtomicU64; DecryptReason::ALL.len()] = [const { AtomicU64::new(0) }; DecryptReason::ALL.len()];

/// Every envelope this process refused to open so far, per reason (storage and raft together).
pub fn decrypt_failures() -> [(DecryptReason, u64); DecryptReason::ALL.len()] {
    DecryptReason::ALL.map(|r| (r, r.failures().load(Ordering::Relaxed)))
}

fn counted<T>(r: Result<T, IntegrityError>) -> Result<T, IntegrityError> {
    if let Err(e) = &r {
        e.reason().failures().fetch_add(1, Ordering::Relaxed);
    }
    r
}

impl DecryptReason {
    /// Every reason, in label order.
    pub const ALL: [DecryptReason; 5] = [
        DecryptReason::TagMismatch,
        DecryptReason::UnknownKeyId,
        DecryptReason::Truncated,
        DecryptReason::BadVersion,
        DecryptReason::BadFlag,
    ];

    fn failures(self) -> &'static AtomicU64 {
        let [tag, unknown, truncated, version, flag] = &FAILURES;
        match self {
            DecryptReason::TagMismatch => tag,
            DecryptReason::UnknownKeyId => unknown,
            DecryptReason::Truncated => truncated,
            DecryptReason::BadVersion => version,
            DecryptReason::BadFlag => flag,
        }
    }

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DecryptReason::TagMismatch => "TagMismatch",
            DecryptReason::UnknownKeyId => "UnknownKeyId",
            DecryptReason::Truncated => "Truncated",
            DecryptReason::BadVersion => "BadVersion",
            DecryptReason::BadFlag => "BadFlag",
        }
    }
}

impl IntegrityError {
    /// The metric reason.
    pub fn reason(&self) -> DecryptReason {
        match self {
            IntegrityError::Truncated { .. } => DecryptReason::Truncated,
            IntegrityError::BadVersion(_) => DecryptReason::BadVersion,
            IntegrityError::BadFlag(_) => DecryptReason::BadFlag,
            IntegrityError::UnknownKeyId { .. } => DecryptReason::UnknownKeyId,
            IntegrityError::TagMismatch { .. } => DecryptReason::TagMismatch,
        }
    }

    /// The key id the envelope named, when the header got that far.
    pub fn key_id(&self) -> Option<u32> {
        match self {
            IntegrityError::UnknownKeyId { key_id, .. } | IntegrityError::TagMismatch { key_id } => Some(*key_id),
            _ => None,
        }
    }
}

/// Why a seal failed. Sealing never falls back to cleartext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The nonce factory is exhausted.
    #[error(transparent)]
    Nonce(#[from] NonceError),
    /// The AEAD refused.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The DEK's purpose does not match the envelope kind.
    #[error("key {key_id} is a {actual} key, not a {expected} key")]
    WrongPurpose {
        /// The key's id.
        key_id: u32,
        /// The purpose the envelope needs.
        expected: Purpose,
        /// The key's purpose.
        actual: Purpose,
    },
}

/// A parsed envelope header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The flag byte (bit 0 = compressed).
    pub flag: u8,
    /// The DEK id (never 0 once parsed).
    pub key_id: u32,
    /// The deterministic nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl Header {
    /// Parses and checks the header of `envelope` (length, version, reserved flag bits, key id 0).
    pub fn parse(envelope: &[u8], purpose: Purpose) -> Result<Header, IntegrityError> {
        let Some((head, _)) = envelope.split_first_chunk::<HEADER_LEN>() else {
            return Err(IntegrityError::Truncated { len: envelope.len() });
        };
        if envelope.len() < OVERHEAD {
            return Err(IntegrityError::Truncated { len: envelope.len() });
        }
        let [ver, flag, k0, k1, k2, k3, nonce @ ..] = *head;
        if ver != VERSION {
            return Err(IntegrityError::BadVersion(ver));
        }
        let allowed = match purpose {
            Purpose::Storage => FLAG_COMPRESSED,
            Purpose::Raft => 0,
        };
        if flag & !allowed != 0 {
            return Err(IntegrityError::BadFlag(flag));
        }
        let key_id = u32::from_be_bytes([k0, k1, k2, k3]);
        if key_id == 0 {
            return Err(IntegrityError::UnknownKeyId { key_id, purpose });
        }
        Ok(Header { flag, key_id, nonce })
    }

    /// Whether the plaintext was compressed before sealing.
    pub fn compressed(&self) -> bool {
        self.flag & FLAG_COMPRESSED != 0
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let [k0, k1, k2, k3] = self.key_id.to_be_bytes();
        let mut out = [0u8; HEADER_LEN];
        let (fixed, nonce) = out.split_at_mut(6);
        fixed.copy_from_slice(&[VERSION, self.flag, k0, k1, k2, k3]);
        nonce.copy_from_slice(&self.nonce);
        out
    }
}

/// Runs `f` over `ver ‖ flag ‖ key_id ‖ value_header ‖ mvcc_key`, built on the stack when small.
fn with_storage_aad<R>(
    header: &[u8; HEADER_LEN],
    value_header: &[u8; VALUE_HEADER_LEN],
    mvcc_key: &[u8],
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    let fixed = header.first_chunk::<6>().map_or(&[][..], |c| &c[..]);
    let len = fixed.len() + VALUE_HEADER_LEN + mvcc_key.len();
    if len <= INLINE_AAD {
        let mut buf = [0u8; INLINE_AAD];
        let mut w = Writer { buf: &mut buf, at: 0 };
        w.put(fixed);
        w.put(value_header);
        w.put(mvcc_key);
        let at = w.at;
        f(buf.get(..at).unwrap_or_default())
    } else {
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(fixed);
        v.extend_from_slice(value_header);
        v.extend_from_slice(mvcc_key);
        f(&v)
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.at += bytes.len();
        }
    }
}

fn raft_aad(key_id: u32) -> [u8; 6] {
    let [k0, k1, k2, k3] = key_id.to_be_bytes();
    [RAFT_AAD_TAG, VERSION, k0, k1, k2, k3]
}

fn check_purpose(dek: &Dek, expected: Purpose) -> Result<(), SealError> {
    if dek.purpose() != expected {
        return Err(SealError::WrongPurpose { key_id: dek.id(), expected, actual: dek.purpose() });
    }
    Ok(())
}

/// Seals `plaintext` (already compressed if `compressed`) as a storage envelope with an explicit
/// nonce. Production code goes through [`Sealer`], which draws the nonce; this is for tests and
/// layout pins.
pub fn seal_storage_with_nonce(
    dek: &Dek,
    nonce: [u8; NONCE_LEN],
    compressed: bool,
    value_header: &[u8; VALUE_HEADER_LEN],
    mvcc_key: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    seal_storage_into(&mut out, dek, nonce, compressed, value_header, mvcc_key, plaintext)?;
    Ok(out)
}

/// Appends the storage envelope of `plaintext` to `out`, so a store can build
/// `value_header ‖ envelope` in one buffer without a second copy. On error `out` is unchanged.
pub fn seal_storage_into(
    out: &mut Vec<u8>,
    dek: &Dek,
    nonce: [u8; NONCE_LEN],
    compressed: bool,
    value_header: &[u8; VALUE_HEADER_LEN],
    mvcc_key: &[u8],
    plaintext: &[u8],
) -> Result<(), SealError> {
    check_purpose(dek, Purpose::Storage)?;
    let flag = if compressed { FLAG_COMPRESSED } else { 0 };
    let header = Header { flag, key_id: dek.id(), nonce }.encode();
    let start = out.len();
    out.reserve(OVERHEAD + plaintext.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(plaintext);
    let sealed = with_storage_aad(&header, value_header, mvcc_key, |aad| {
        dek.seal_in_place(nonce, aad, out.get_mut(start + HEADER_LEN..).unwrap_or_default())
    });
    match sealed {
        Ok(tag) => {
            out.extend_from_slice(tag.as_ref());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e.into())
        }
    }
}

/// Seals an FSM payload as a raft envelope with an explicit nonce (see [`Sealer`]).
pub fn wrap_raft_with_nonce(dek: &Dek, nonce: [u8; NONCE_LEN], payload: &[u8]) -> Result<Vec<u8>, SealError> {
    check_purpose(dek, Purpose::Raft)?;
    let header = Header { flag: 0, key_id: dek.id(), nonce }.encode();
    let mut out = Vec::with_capacity(OVERHEAD + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    let tag = dek.seal_in_place(nonce, &raft_aad(dek.id()), out.get_mut(HEADER_LEN..).unwrap_or_default())?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// An opened storage envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// The key that sealed it.
    pub key_id: u32,
    /// Whether `plaintext` must be decompressed before use.
    pub compressed: bool,
    /// The verified (possibly compressed) plaintext.
    pub plaintext: Vec<u8>,
}

/// Copies the ciphertext ‖ tag out of a (read-only, stored) envelope into a buffer to open in
/// place.
fn body(envelope: &[u8]) -> Vec<u8> {
    envelope.get(HEADER_LEN..).unwrap_or_default().to_vec()
}

/// Opens `buf` (ciphertext ‖ tag) in place under the key the header names, checking its purpose.
fn open_with(
    keys: &Keystore,
    h: &Header,
    purpose: Purpose,
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), IntegrityError> {
    let n = keys
        .with_key(h.key_id, |dek| (dek.purpose() == purpose).then(|| dek.open_in_place(h.nonce, aad, buf)))
        .flatten()
        .ok_or(IntegrityError::UnknownKeyId { key_id: h.key_id, purpose })?
        .ok_or(IntegrityError::TagMismatch { key_id: h.key_id })?;
    buf.truncate(n);
    Ok(())
}

/// Opens a storage envelope read at `mvcc_key` with `value_header` exactly as stored.
pub fn open_storage(
    keys: &Keystore,
    value_header: &[u8; VALUE_HEADER_LEN],
    mvcc_key: &[u8],
    envelope: &[u8],
) -> Result<Opened, IntegrityError> {
    counted(open_storage_uncounted(keys, value_header, mvcc_key, envelope))
}

fn open_storage_uncounted(
    keys: &Keystore,
    value_header: &[u8; VALUE_HEADER_LEN],
    mvcc_key: &[u8],
    envelope: &[u8],
) -> Result<Opened, IntegrityError> {
    let h = Header::parse(envelope, Purpose::Storage)?;
    let head = envelope.first_chunk::<HEADER_LEN>().ok_or(IntegrityError::Truncated { len: envelope.len() })?;
    let mut buf = body(envelope);
    with_storage_aad(head, value_header, mvcc_key, |aad| open_with(keys, &h, Purpose::Storage, aad, &mut buf))?;
    Ok(Opened { key_id: h.key_id, compressed: h.compressed(), plaintext: buf })
}

/// Unwraps a raft envelope into the FSM payload; returns the key id with it.
pub fn unwrap_raft(keys: &Keystore, envelope: &[u8]) -> Result<(u32, Vec<u8>), IntegrityError> {
    counted(unwrap_raft_uncounted(keys, envelope))
}

fn unwrap_raft_uncounted(keys: &Keystore, envelope: &[u8]) -> Result<(u32, Vec<u8>), IntegrityError> {
    let h = Header::parse(envelope, Purpose::Raft)?;
    let mut buf = body(envelope);
    open_with(keys, &h, Purpose::Raft, &raft_aad(h.key_id), &mut buf)?;
    Ok((h.key_id, buf))
}

/// The active key of one purpose on this node with its nonce factory: the only way production
/// code seals. Replace the whole `Sealer` on rotation; never reuse a factory across DEKs.
///
/// # Examples
///
/// ```
/// use sealkv_crypto::{envelope, Keystore, NonceFactory, Purpose, Sealer};
///
/// let keys = Keystore::new();
/// keys.install(7, Purpose::Storage, &[0x42; 32])?;
/// let sealer = Sealer::new(keys.get(7).expect("installed"), NonceFactory::new(0x0001, 1)?);
///
/// let value_header = [0b010, 0, 0, 0, 0, 0, 0, 0, 0]; // encryption_state = storage envelope
/// let mvcc_key = b"user:1\xff\xff\xff\xff\xff\xff\xff\xfe";
/// let stored = sealer.seal_storage(false, &value_header, mvcc_key, b"hello")?;
/// assert_eq!(stored.len(), envelope::OVERHEAD + 5);
///
/// let opened = envelope::open_storage(&keys, &value_header, mvcc_key, &stored)?;
/// assert_eq!(opened.plaintext, b"hello");
/// // The same bytes under another key (or another TTL, or another version) do not open.
/// assert!(envelope::open_storage(&keys, &value_header, b"user:2", &stored).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Sealer {
    dek: Arc<Dek>,
    nonces: NonceFactory,
}

impl Sealer {
    /// Pairs a DEK with the nonce factory of this node's current load for it.
    pub fn new(dek: Arc<Dek>, nonces: NonceFactory) -> Self {
        Sealer { dek, nonces }
    }

    /// The key id new envelopes carry.
    pub fn key_id(&self) -> u32 {
        self.dek.id()
    }

    /// The nonce factory (for the writes metric).
    pub fn nonces(&self) -> &NonceFactory {
        &self.nonces
    }

    /// Seals a store value. `value_header` must be the header that will be stored with it.
    pub fn seal_storage(
        &self,
        compressed: bool,
        value_header: &[u8; VALUE_HEADER_LEN],
        mvcc_key: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        // The purpose is checked once, inside seal_storage_with_nonce.
        seal_storage_with_nonce(&self.dek, self.nonces.next()?, compressed, value_header, mvcc_key, plaintext)
    }

    /// Appends a sealed store value to `out` (see [`seal_storage_into`]).
    pub fn seal_storage_into(
        &self,
        out: &mut Vec<u8>,
        compressed: bool,
        value_header: &[u8; VALUE_HEADER_LEN],
        mvcc_key: &[u8],
        plaintext: &[u8],
    ) -> Result<(), SealError> {
        seal_storage_into(out, &self.dek, self.nonces.next()?, compressed, value_header, mvcc_key, plaintext)
    }

    /// Wraps an FSM payload for the Raft log.
    pub fn wrap_raft(&self, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        wrap_raft_with_nonce(&self.dek, self.nonces.next()?, payload)
    }
}
