//! The storage envelope, applied here and only here: sealing new values and opening stored ones.
//!
//! Whether a write is sealed is decided at apply time from the store's persisted activation
//! timestamp (`envelope_since`), so every replica makes the same decision at the same log index.
//! Reads dispatch on the header's encryption state only, and refuse cleartext versions newer than
//! the activation (the rebadge guard).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use sealkv_crypto::envelope::{self, Header};
use sealkv_crypto::{Keystore, Purpose, Sealer};

use crate::compress;
use crate::error::{IntegrityReason, StoreError};
use crate::value::{EncryptionState, ValueHeader};

/// `envelope_since` value meaning "never activated".
const INACTIVE: u64 = u64::MAX;

/// What a stored version says once checked and opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Opened {
    /// A delete.
    Tombstone,
    /// A value with its expiry (0 = none).
    Live { expire_at_ms: u64, value: Vec<u8> },
}

/// How a stored version's body is protected, read from headers only (no decryption).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protection {
    Tombstone,
    Cleartext,
    Sealed { key_id: u32 },
}

/// Keys and activation state shared by the write and read paths.
#[derive(Debug)]
pub(crate) struct Crypto {
    keystore: Arc<Keystore>,
    sealer: ArcSwapOption<Sealer>,
    since: AtomicU64,
}

impl Crypto {
    pub(crate) fn new(keystore: Arc<Keystore>, since: Option<u64>) -> Self {
        Crypto { keystore, sealer: ArcSwapOption::empty(), since: AtomicU64::new(since.unwrap_or(INACTIVE)) }
    }

    pub(crate) fn keystore(&self) -> &Arc<Keystore> {
        &self.keystore
    }

    pub(crate) fn set_sealer(&self, sealer: Option<Arc<Sealer>>) {
        self.sealer.store(sealer);
    }

    pub(crate) fn sealer(&self) -> Option<Arc<Sealer>> {
        self.sealer.load_full()
    }

    /// Whether a sealing key is loaded, so a batch can refuse a write it could never seal.
    pub(crate) fn can_seal(&self) -> bool {
        self.sealer.load().is_some()
    }

    pub(crate) fn since(&self) -> Option<u64> {
        match self.since.load(Ordering::Acquire) {
            INACTIVE => None,
            s => Some(s),
        }
    }

    pub(crate) fn set_since(&self, since: Option<u64>) {
        self.since.store(since.unwrap_or(INACTIVE), Ordering::Release);
    }

    /// Builds the stored bytes of a live value: sealed (compressed first when that helps) if the
    /// envelope is active for this write, cleartext otherwise.
    pub(crate) fn encode_live(
        &self,
        seal: bool,
        mvcc_key: &[u8],
        value: &[u8],
        expire_at_ms: u64,
    ) -> Result<Vec<u8>, StoreError> {
        if !seal {
            let header = ValueHeader::live(EncryptionState::Cleartext, expire_at_ms).encode();
            let mut out = Vec::with_capacity(header.len() + value.len());
            out.extend_from_slice(&header);
            out.extend_from_slice(value);
            return Ok(out);
        }
        let sealer = self.sealer.load();
        let sealer = sealer.as_deref().ok_or(StoreError::NoSealingKey)?;
        seal_value(sealer, mvcc_key, value, expire_at_ms)
    }

    /// Refuses a cleartext version newer than the storage envelope's activation (rebadge guard).
    fn check_cleartext(&self, ts: u64) -> Result<(), IntegrityReason> {
        match self.since() {
            Some(since) if ts > since => Err(IntegrityReason::Rebadged { ts, since }),
            _ => Ok(()),
        }
    }

    /// Checks and opens one stored version. Never returns bytes that did not pass every check.
    pub(crate) fn open(&self, mvcc_key: &[u8], ts: u64, stored: &[u8]) -> Result<Opened, IntegrityReason> {
        let (header, raw, body) = ValueHeader::split(stored)?;
        if header.tombstone {
            return Ok(Opened::Tombstone);
        }
        let value = match header.state {
            EncryptionState::Cleartext => {
                self.check_cleartext(ts)?;
                body.to_vec()
            }
            EncryptionState::Envelope => {
                let opened = envelope::open_storage(&self.keystore, raw, mvcc_key, body)?;
                if opened.compressed {
                    compress::decompress(&opened.plaintext, crate::MAX_VALUE_LEN)?
                } else {
                    opened.plaintext
                }
            }
        };
        Ok(Opened::Live { expire_at_ms: header.expire_at_ms, value })
    }

    /// Opens a sealed version and seals its (still compressed, if it was) plaintext again under the
    /// active key, at the same MVCC key with the same expiry. Cleartext versions are compressed and
    /// sealed as a new write would be.
    pub(crate) fn reseal(
        &self,
        sealer: &Sealer,
        mvcc_key: &[u8],
        ts: u64,
        stored: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let integrity = |reason: IntegrityReason| integrity_error(mvcc_key, ts, reason);
        let (header, raw, body) = ValueHeader::split(stored).map_err(|e| integrity(e.into()))?;
        match header.state {
            EncryptionState::Envelope => {
                let opened =
                    envelope::open_storage(&self.keystore, raw, mvcc_key, body).map_err(|e| integrity(e.into()))?;
                seal_with(sealer, opened.compressed, mvcc_key, &opened.plaintext, header.expire_at_ms)
            }
            EncryptionState::Cleartext => {
                // Cleartext is only trusted where the rebadge guard trusts it.
                self.check_cleartext(ts).map_err(integrity)?;
                seal_value(sealer, mvcc_key, body, header.expire_at_ms)
            }
        }
    }
}

/// Seals a new value: compressed first when that makes it smaller (attempts are sampled while
/// they keep failing, see [`compress::compress_sampled`]).
fn seal_value(sealer: &Sealer, mvcc_key: &[u8], value: &[u8], expire_at_ms: u64) -> Result<Vec<u8>, StoreError> {
    let compressed = compress::compress_sampled(value);
    let plaintext = compressed.as_deref().unwrap_or(value);
    seal_with(sealer, compressed.is_some(), mvcc_key, plaintext, expire_at_ms)
}

fn seal_with(
    sealer: &Sealer,
    compressed: bool,
    mvcc_key: &[u8],
    plaintext: &[u8],
    expire_at_ms: u64,
) -> Result<Vec<u8>, StoreError> {
    let header = ValueHeader::live(EncryptionState::Envelope, expire_at_ms).encode();
    let mut out = Vec::with_capacity(header.len() + envelope::OVERHEAD + plaintext.len());
    out.extend_from_slice(&header);
    sealer.seal_storage_into(&mut out, compressed, &header, mvcc_key, plaintext)?;
    Ok(out)
}

/// Reads how a stored version is protected from its headers alone.
pub(crate) fn protection(stored: &[u8]) -> Result<Protection, IntegrityReason> {
    let (header, _, body) = ValueHeader::split(stored)?;
    Ok(match (header.tombstone, header.state) {
        (true, _) => Protection::Tombstone,
        (false, EncryptionState::Cleartext) => Protection::Cleartext,
        (false, EncryptionState::Envelope) => {
            Protection::Sealed { key_id: Header::parse(body, Purpose::Storage)?.key_id }
        }
    })
}

/// Splits a stored MVCC key into its version prefix and timestamp; a malformed key is an
/// integrity error (it can only come from outside sealkv).
pub(crate) fn split_stored_key(mvcc_key: &[u8]) -> Result<(&[u8], u64), StoreError> {
    crate::key::split(mvcc_key).map_err(|e| integrity_error(mvcc_key, 0, e.into()))
}

/// Builds an integrity error naming the user key of `mvcc_key` (or its raw bytes if malformed).
pub(crate) fn integrity_error(mvcc_key: &[u8], ts: u64, reason: IntegrityReason) -> StoreError {
    let key = crate::key::decode(mvcc_key).map(|(k, _)| k).unwrap_or_else(|_| mvcc_key.to_vec());
    StoreError::Integrity { key, ts, reason }
}
