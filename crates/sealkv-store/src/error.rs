//! Errors of the store. Integrity failures are one variant with a reason, so callers can halt on
//! them and label the decrypt-failure metric without matching every case.

use crate::compress::DecompressError;
use crate::key::KeyError;
use crate::snapshot::SnapshotError;
use crate::value::HeaderError;

/// Anything the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// fjall failed (I/O, poisoned database after a failed persist: restart the process).
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    /// A key the caller passed cannot be stored.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A stored version failed a check; nothing from it is returned.
    #[error("integrity check failed for {} at ts {ts}: {reason}", .key.escape_ascii())]
    Integrity {
        /// The user key (keys are stored in cleartext, so naming them leaks nothing new).
        key: Vec<u8>,
        /// The version's commit timestamp.
        ts: u64,
        /// What failed.
        reason: IntegrityReason,
    },
    /// A value larger than [`crate::MAX_VALUE_LEN`].
    #[error("value of {len} bytes exceeds the {max}-byte limit", max = crate::MAX_VALUE_LEN)]
    ValueTooLarge {
        /// Its length.
        len: usize,
    },
    /// Commit timestamp 0 is reserved (the rebadge guard's "encrypted from birth" mark).
    #[error("commit timestamp 0 is reserved")]
    ZeroTimestamp,
    /// The storage envelope is active but this node has no storage DEK to seal with. Halting is
    /// the only safe answer: writing cleartext would break the at-rest guarantee.
    #[error(
        "the storage envelope is active but no storage DEK is loaded for sealing; check the sidecar and KEK (docs/runbook.md, 'halts')"
    )]
    NoSealingKey,
    /// Sealing failed (nonce space exhausted, wrong key purpose).
    #[error("sealing a value: {0}")]
    Seal(#[from] sealkv_crypto::envelope::SealError),
    /// A store metadata record does not decode.
    #[error("store metadata record {name:?} is corrupt")]
    CorruptMeta {
        /// The record.
        name: &'static str,
    },
    /// A writer-registry row does not decode.
    #[error("writer registry row is corrupt: {0}")]
    CorruptRegistry(#[from] sealkv_crypto::wire::WireError),
    /// A snapshot stream failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The last step of a snapshot install (the caller's, e.g. installing the snapshot's key
    /// state) failed; the partial install was wiped.
    #[error("snapshot install could not finish: {0}")]
    InstallFinish(String),
    /// The operation needs an empty store.
    #[error("the store is not empty; a snapshot installs only into an empty store (call wipe first)")]
    NotEmpty,
    /// A rewrite needs the storage envelope active and a sealing key.
    #[error("rewrite needs the storage envelope to be active (run `sealkv admin encryption enable-storage-envelope`)")]
    EnvelopeInactive,
    /// A flush ([`crate::Store::flush`]) sealed memtables that were still not written out after
    /// `secs` seconds: the engine's flush is failing (disk full or failing; see the node's log).
    #[error(
        "memtables were not written out within {secs} s; check the node's log and its disk (docs/runbook.md, 'SAVE')"
    )]
    FlushTimeout {
        /// How long it waited.
        secs: u64,
    },
}

impl StoreError {
    /// Whether this is a write the store refuses for its size: a key whose encoding is too long,
    /// or a value over [`crate::MAX_VALUE_LEN`]. Such a refusal depends only on the write itself,
    /// so every replica refuses the same write, and the refused write changed nothing in the
    /// batch; the caller may answer it as an error instead of halting, after taking back
    /// whatever else its operation wrote ([`crate::ApplyBatch::savepoint`]).
    pub fn is_refusal(&self) -> bool {
        matches!(self, StoreError::Key(KeyError::TooLong { .. }) | StoreError::ValueTooLarge { .. })
    }

    /// The reason of an integrity failure, if this is one.
    pub fn integrity(&self) -> Option<&IntegrityReason> {
        match self {
            StoreError::Integrity { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Why a stored version failed its integrity check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityReason {
    /// The MVCC key itself is malformed.
    #[error("malformed key: {0}")]
    Key(#[from] KeyError),
    /// The 9-byte value header is invalid.
    #[error("value header: {0}")]
    Header(#[from] HeaderError),
    /// The storage envelope did not open.
    #[error("storage envelope: {0}")]
    Envelope(#[from] sealkv_crypto::IntegrityError),
    /// A version newer than the storage envelope's activation claims to be cleartext: an attacker
    /// flipped its encryption state to make the envelope bytes read as a value.
    #[error("cleartext version at ts {ts} is newer than the storage envelope's activation at ts {since}")]
    Rebadged {
        /// The version's timestamp.
        ts: u64,
        /// The activation timestamp.
        since: u64,
    },
    /// The authenticated, compressed plaintext does not decompress.
    #[error("compressed body: {0}")]
    Decompress(#[from] DecompressError),
}

impl IntegrityReason {
    /// The `reason` label of the decrypt-failure metric.
    pub fn label(&self) -> &'static str {
        match self {
            IntegrityReason::Envelope(e) => e.reason().as_str(),
            IntegrityReason::Key(_) => "BadKey",
            IntegrityReason::Header(_) => "BadHeader",
            IntegrityReason::Rebadged { .. } => "Rebadged",
            IntegrityReason::Decompress(_) => "Decompress",
        }
    }
}
