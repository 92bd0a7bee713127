//! The newest-version index: `version prefix → BE64(newest commit_ts)` for every user key that has
//! a stored version.
//!
//! Why it exists: finding the newest version of a key in the MVCC keyspace is a range read, and an
//! LSM range read seeks every memtable and every table (no bloom filter can skip one). Every Redis
//! write reads its key's metadata first and every GET is a point read, so that seek was the largest
//! cost on every replica. With the index, a point read is two exact-key lookups the LSM's bloom
//! filters answer cheaply — and a key that was never written costs one filtered miss. The row
//! cache (`row_cache.rs`) answers hot keys before either lookup.
//!
//! It is derived data: written in the same atomic batch as the versions it describes, rebuilt
//! from the data keyspace when a store opens without it, and never trusted for a read it cannot
//! confirm. [`Store::version`] falls back to the range read when the indexed version is gone (GC
//! removed a dead key) or newer than the read timestamp, so a stale entry costs time, never a
//! wrong answer. It holds the same key bytes as the data keyspace and no values.

use fjall::PersistMode;

use crate::error::StoreError;
use crate::key;
use crate::meta;
use crate::seal::split_stored_key;
use crate::snapshot::SnapshotError;
use crate::store::Store;

/// The index keyspace's name.
pub(crate) const KEYSPACE: &str = "latest";

/// Index entries written per batch while rebuilding.
const BUILD_BATCH: usize = 4096;

/// The index value for a newest version at `ts`.
pub(crate) fn encode_ts(ts: u64) -> [u8; 8] {
    ts.to_be_bytes()
}

/// Total decoder of an index value.
pub(crate) fn decode_ts(bytes: &[u8]) -> Result<u64, StoreError> {
    meta::decode_u64(bytes, "latest index entry")
}

impl Store {
    /// The indexed newest commit timestamp under a version prefix; `None` if the key was never
    /// written.
    pub(crate) fn indexed_ts(&self, prefix: &[u8]) -> Result<Option<u64>, StoreError> {
        self.latest.get(prefix)?.map(|v| decode_ts(&v)).transpose()
    }

    /// Builds the index from the data keyspace if this store does not have one yet (a store
    /// written before the index existed), then records that it has one. Idempotent: a crash
    /// mid-build rebuilds from the start at the next open.
    pub(crate) fn ensure_latest_index(&self) -> Result<(), StoreError> {
        if self.meta.get(meta::LATEST_INDEX)?.is_some() {
            return Ok(());
        }
        let mut batch = self.db.batch();
        let mut pending = 0usize;
        let mut built = 0u64;
        let mut first_versions = FirstVersions::default();
        for guard in self.data.iter() {
            let mvcc_key = guard.key()?;
            let Some((prefix, ts)) = first_versions.observe(&mvcc_key)? else {
                continue;
            };
            batch.insert(&self.latest, prefix, encode_ts(ts));
            pending += 1;
            built += 1;
            if pending >= BUILD_BATCH {
                std::mem::replace(&mut batch, self.db.batch()).commit()?;
                pending = 0;
            }
        }
        batch.insert(&self.meta, meta::LATEST_INDEX, [1]);
        batch.commit()?;
        self.db.persist(PersistMode::SyncAll)?;
        if built > 0 {
            tracing::info!(keys = built, "built the newest-version index for a store that had none");
        }
        Ok(())
    }
}

/// Tracks version prefixes of an ordered stream of MVCC keys (the data keyspace, a snapshot
/// install), yielding each key's first — newest — version: versions of one key are contiguous,
/// newest first. Refuses a stream that is not strictly ascending, since the index would then name
/// the wrong version.
#[derive(Default)]
pub(crate) struct FirstVersions {
    last_key: Option<Vec<u8>>,
}

impl FirstVersions {
    /// `Some((prefix, ts))` if `mvcc_key` is the first version of its key in the stream.
    pub(crate) fn observe<'k>(&mut self, mvcc_key: &'k [u8]) -> Result<Option<(&'k [u8], u64)>, StoreError> {
        let (prefix, ts) = split_stored_key(mvcc_key)?;
        let first = match &self.last_key {
            Some(last) if mvcc_key <= last.as_slice() => return Err(SnapshotError::OutOfOrder.into()),
            Some(last) => key::split(last).map(|(p, _)| p) != Ok(prefix),
            None => true,
        };
        let last = self.last_key.get_or_insert_with(Vec::new);
        last.clear();
        last.extend_from_slice(mvcc_key);
        Ok(first.then_some((prefix, ts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_versions_picks_each_keys_newest_and_refuses_disorder() {
        let a9 = key::encode(b"a", 9).unwrap();
        let a5 = key::encode(b"a", 5).unwrap();
        let b7 = key::encode(b"b", 7).unwrap();
        let mut f = FirstVersions::default();
        assert_eq!(f.observe(&a9).unwrap(), Some((&b"a\x00\x01"[..], 9)));
        assert_eq!(f.observe(&a5).unwrap(), None);
        assert_eq!(f.observe(&b7).unwrap(), Some((&b"b\x00\x01"[..], 7)));
        let out_of_order = |r| matches!(r, Err(StoreError::Snapshot(SnapshotError::OutOfOrder)));
        assert!(out_of_order(f.observe(&b7)), "a repeated key");
        assert!(out_of_order(f.observe(&a9)), "a key going backwards");
        assert!(matches!(FirstVersions::default().observe(b"short"), Err(StoreError::Integrity { .. })));
    }

    #[test]
    fn index_values_decode_only_at_eight_bytes() {
        assert_eq!(decode_ts(&encode_ts(0x0102_0304_0506_0708)).unwrap(), 0x0102_0304_0506_0708);
        assert_eq!(encode_ts(1), [0, 0, 0, 0, 0, 0, 0, 1]);
        for bad in [&[][..], &[1; 7], &[1; 9]] {
            assert!(matches!(decode_ts(bad), Err(StoreError::CorruptMeta { .. })));
        }
    }
}
