//! Garbage collection of old versions, and the per-DEK count of stored values.

use std::collections::BTreeMap;

use fjall::{Readable, Slice};
use sealkv_crypto::Purpose;
use sealkv_crypto::cipher::TAG_LEN;
use sealkv_crypto::envelope::Header;

use crate::error::StoreError;
use crate::seal::{Protection, integrity_error, protection, split_stored_key};
use crate::store::Store;
use crate::value::ValueHeader;

/// Versions removed per batch (a key's versions are never split across batches).
const GC_BATCH: usize = 4096;

/// What a GC pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Stored versions examined.
    pub versions_scanned: u64,
    /// Versions removed.
    pub versions_removed: u64,
}

/// Stored (non-tombstone) versions by protection, read from headers only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueCounts {
    /// Cleartext values.
    pub cleartext: u64,
    /// Tombstones (always cleartext, no body).
    pub tombstones: u64,
    /// Sealed values per DEK id.
    pub by_key_id: BTreeMap<u32, u64>,
}

/// `(key_id, nonce, tag)` of one sealed stored version.
pub type SealedVersion = (u32, [u8; 12], Vec<u8>);

impl Store {
    /// Drops every version that no read at a timestamp ≥ `horizon_ts` (and a clock ≥ `now_ms`) can
    /// see. Per key, the newest version at or below the horizon is kept unless it is a tombstone
    /// or has expired at `now_ms`; everything older than it goes. Callers pass a `now_ms` no
    /// later than any clock future reads will use.
    pub fn gc(&self, horizon_ts: u64, now_ms: u64) -> Result<GcReport, StoreError> {
        self.gc_pass(horizon_ts, Some(now_ms))
    }

    /// Drops only superseded versions: per key, everything older than the newest version at or
    /// below the horizon. That anchor stays even when it is a tombstone or expired, so every key's
    /// newest version — what an apply reads, [`Store::version`] at `u64::MAX` — is the same whether
    /// or not this node has run a pass. Replicas run it on their own schedules, so this is the GC
    /// a replicated state machine can run without making apply outcomes differ between replicas.
    pub fn gc_superseded(&self, horizon_ts: u64) -> Result<GcReport, StoreError> {
        self.gc_pass(horizon_ts, None)
    }

    /// One pass; `dead_at_ms` set also drops anchors that are tombstones or expired at that time.
    fn gc_pass(&self, horizon_ts: u64, dead_at_ms: Option<u64>) -> Result<GcReport, StoreError> {
        let _guard = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = GcReport::default();
        let mut batch = self.db.batch();
        let mut pending = 0usize;
        // The version prefix whose anchor (newest version ≤ horizon) has been seen.
        let mut anchored: Option<Slice> = None;
        // Keys whose newest version this batch drops: their row cache entries go after its commit.
        let mut dropped: Vec<Slice> = Vec::new();
        for guard in self.data.iter() {
            // Only a would-be anchor's header is ever read, and only when dead anchors go: the
            // value of any other version (a blob read, with key-value separation) stays unloaded.
            let (mvcc_key, stored) = guard.into_inner_if(|k| {
                dead_at_ms.is_some()
                    && split_stored_key(k).is_ok_and(|(p, ts)| ts <= horizon_ts && anchored.as_deref() != Some(p))
            })?;
            report.versions_scanned += 1;
            let (prefix, ts) = split_stored_key(&mvcc_key)?;
            if anchored.as_deref() != Some(prefix) {
                if pending >= GC_BATCH {
                    std::mem::replace(&mut batch, self.db.batch()).commit()?;
                    self.invalidate_rows(&mut dropped);
                    pending = 0;
                }
                if ts > horizon_ts {
                    continue;
                }
                anchored = Some(Slice::from(prefix));
                // Headers only: an invalid header keeps the version (reads will report it).
                let drop_anchor = match (dead_at_ms, stored.as_deref().map(ValueHeader::split)) {
                    (Some(now_ms), Some(Ok((h, _, _)))) => h.tombstone || h.expired_at(now_ms),
                    _ => false,
                };
                if !drop_anchor {
                    continue;
                }
                dropped.extend(anchored.clone());
            }
            batch.remove(&self.data, mvcc_key);
            pending += 1;
            report.versions_removed += 1;
        }
        batch.commit()?;
        self.invalidate_rows(&mut dropped);
        Ok(report)
    }

    /// Counts stored versions by how they are protected (for retire-dek and the values-per-DEK
    /// metric). Headers only; nothing is decrypted.
    pub fn value_counts(&self) -> Result<ValueCounts, StoreError> {
        let mut counts = ValueCounts::default();
        self.each_version(|p, _| match p {
            Protection::Tombstone => counts.tombstones += 1,
            Protection::Cleartext => counts.cleartext += 1,
            Protection::Sealed { key_id } => *counts.by_key_id.entry(key_id).or_default() += 1,
        })?;
        Ok(counts)
    }

    /// `(key_id, nonce, tag)` of every sealed stored version, for nonce-reuse audits: two entries
    /// with the same key id and nonce but different tags would be a reused nonce. Headers only.
    pub fn envelopes(&self) -> Result<Vec<SealedVersion>, StoreError> {
        let mut out = Vec::new();
        self.each_version(|p, body| {
            if let Protection::Sealed { .. } = p
                && let Ok(h) = Header::parse(body, Purpose::Storage)
            {
                let tag = body.get(body.len().saturating_sub(TAG_LEN)..).unwrap_or_default();
                out.push((h.key_id, h.nonce, tag.to_vec()));
            }
        })?;
        Ok(out)
    }

    /// Visits every stored version of one consistent view with its protection and body; a
    /// malformed key or header is an integrity error.
    fn each_version(&self, mut visit: impl FnMut(Protection, &[u8])) -> Result<(), StoreError> {
        for guard in self.db.snapshot().iter(&self.data) {
            let (mvcc_key, stored) = guard.into_inner()?;
            let (_, ts) = split_stored_key(&mvcc_key)?;
            let p = protection(&stored).map_err(|e| integrity_error(&mvcc_key, ts, e))?;
            let body = stored.get(crate::value::HEADER_LEN..).unwrap_or_default();
            visit(p, body);
        }
        Ok(())
    }
}
