//! Records of the metadata keyspace: what the store has applied and the state that must move
//! atomically with it. Every decoder is total and names the record it failed on.

use crate::error::StoreError;

/// The applied Raft position, written in the same batch as the data it covers.
pub(crate) const APPLIED: &[u8] = b"applied";
/// The highest commit timestamp ever applied (the storage envelope's activation point).
pub(crate) const MAX_TS: &[u8] = b"max_ts";
/// Commit timestamp at which the storage envelope became active; absent = never.
pub(crate) const ENVELOPE_SINCE: &[u8] = b"envelope_since";
/// The HLC ceiling (ms) granted by the last applied lease.
pub(crate) const HLC_CEILING: &[u8] = b"hlc_ceiling";
/// Where a rewrite stopped: target ‖ last MVCC key done.
pub(crate) const REWRITE_CURSOR: &[u8] = b"rewrite_cursor";
/// Present while a snapshot install is incomplete.
pub(crate) const INSTALLING: &[u8] = b"installing";
/// Whether the data keyspace was created with fjall block compression (1) or without (0).
pub(crate) const BLOCK_COMPRESSION: &[u8] = b"block_compression";
/// Present once the newest-version index (`latest.rs`) covers every stored key. Node-local, like
/// the index itself, and kept across a wipe (the wipe empties the index too).
pub(crate) const LATEST_INDEX: &[u8] = b"latest_index";

/// Node-local records a wipe keeps: they describe how this node's keyspaces were created, which a
/// wipe does not change.
pub(crate) const KEPT_BY_WIPE: [&[u8]; 2] = [BLOCK_COMPRESSION, LATEST_INDEX];

/// Records a snapshot carries, because they describe the data it carries. Rewrite cursors and
/// install markers are node-local and never travel.
pub(crate) const REPLICATED: [&[u8]; 3] = [APPLIED, MAX_TS, ENVELOPE_SINCE];

/// Longest opaque log id accepted in [`Applied`].
pub const MAX_LOG_ID_LEN: usize = 1024;

/// The last applied Raft entry: its index and the replication layer's encoding of its log id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The log index.
    pub index: u64,
    /// Opaque log id bytes (at most [`MAX_LOG_ID_LEN`]), so the store does not depend on Raft types.
    pub log_id: Vec<u8>,
}

impl Applied {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + self.log_id.len());
        v.extend_from_slice(&self.index.to_be_bytes());
        v.extend_from_slice(&self.log_id);
        v
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = StoreError::CorruptMeta { name: "applied" };
        let (index, log_id) = bytes.split_first_chunk::<8>().ok_or(corrupt)?;
        if log_id.len() > MAX_LOG_ID_LEN {
            return Err(StoreError::CorruptMeta { name: "applied" });
        }
        Ok(Applied { index: u64::from_be_bytes(*index), log_id: log_id.to_vec() })
    }
}

pub(crate) fn decode_u64(bytes: &[u8], name: &'static str) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes).map(u64::from_be_bytes).map_err(|_| StoreError::CorruptMeta { name })
}

/// Which versions a rewrite targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteTarget {
    /// Cleartext versions and versions under one DEK.
    KeyId(u32),
    /// Cleartext versions and versions under any DEK other than the active one.
    AllButActive,
}

impl RewriteTarget {
    pub(crate) fn encode(self) -> [u8; 5] {
        match self {
            RewriteTarget::AllButActive => [0, 0, 0, 0, 0],
            RewriteTarget::KeyId(id) => {
                let [a, b, c, d] = id.to_be_bytes();
                [1, a, b, c, d]
            }
        }
    }

    pub(crate) fn decode_cursor(bytes: &[u8]) -> Result<(Self, Vec<u8>), StoreError> {
        let corrupt = || StoreError::CorruptMeta { name: "rewrite_cursor" };
        let (head, key) = bytes.split_first_chunk::<5>().ok_or_else(corrupt)?;
        let [tag, a, b, c, d] = *head;
        let target = match tag {
            0 => RewriteTarget::AllButActive,
            1 => RewriteTarget::KeyId(u32::from_be_bytes([a, b, c, d])),
            _ => return Err(corrupt()),
        };
        Ok((target, key.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_pins_and_total_decoders() {
        let a = Applied { index: 0x0102, log_id: b"t1".to_vec() };
        assert_eq!(a.encode(), b"\0\0\0\0\0\0\x01\x02t1");
        assert_eq!(Applied::decode(&a.encode()).unwrap(), a);
        assert!(Applied::decode(&[0; 7]).is_err());
        assert!(Applied::decode(&vec![0; 8 + MAX_LOG_ID_LEN + 1]).is_err());
        assert!(decode_u64(&[0; 9], "max_ts").is_err());
        assert_eq!(RewriteTarget::KeyId(0x0A0B0C0D).encode(), [1, 10, 11, 12, 13]);
        let mut c = RewriteTarget::KeyId(7).encode().to_vec();
        c.extend_from_slice(b"k");
        assert_eq!(RewriteTarget::decode_cursor(&c).unwrap(), (RewriteTarget::KeyId(7), b"k".to_vec()));
        assert!(RewriteTarget::decode_cursor(&[2, 0, 0, 0, 0]).is_err());
        assert!(RewriteTarget::decode_cursor(&[0, 0]).is_err());
    }
}
