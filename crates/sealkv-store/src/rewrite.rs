//! The rewrite primitive: re-seal retained versions under the active storage DEK, in place.
//!
//! Each chunk re-seals versions at the SAME MVCC key (no new version, so readers at any timestamp
//! see the same value) and saves the cursor in the same batch, so a killed rewrite resumes where
//! it stopped and never redoes or skips a committed chunk.

use std::ops::Bound;
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::meta::{self, RewriteTarget};
use crate::seal::{Protection, integrity_error, protection, split_stored_key};
use crate::store::Store;

/// How to run a rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewriteOptions {
    /// Which versions to re-seal (cleartext versions are always included).
    pub target: RewriteTarget,
    /// Upper bound on stored bytes read per second; `None` = unlimited.
    pub bytes_per_sec: Option<u64>,
    /// Versions examined per committed chunk.
    pub chunk_versions: usize,
}

impl RewriteOptions {
    /// A rewrite of `target` with no rate limit and 1024-version chunks.
    pub fn new(target: RewriteTarget) -> Self {
        RewriteOptions { target, bytes_per_sec: None, chunk_versions: 1024 }
    }
}

/// Progress, reported after every committed chunk and once at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteProgress {
    /// Versions examined in this run.
    pub versions_scanned: u64,
    /// Versions re-sealed in this run.
    pub versions_resealed: u64,
    /// Stored bytes examined in this run.
    pub bytes_scanned: u64,
    /// Whether this run resumed from a saved cursor.
    pub resumed: bool,
    /// Whether the pass reached the end of the store.
    pub finished: bool,
}

impl Store {
    /// Re-seals every retained version that is cleartext or sealed under the target DEK(s) with
    /// the active sealer. Resumes from a saved cursor for the same target. When a pass finishes,
    /// no cleartext version remains, so the rebadge guard tightens to "no cleartext at all".
    pub fn rewrite(
        &self,
        opts: RewriteOptions,
        mut progress: impl FnMut(&RewriteProgress),
    ) -> Result<RewriteProgress, StoreError> {
        if self.crypto.since().is_none() || self.crypto.sealer().is_none() {
            return Err(StoreError::EnvelopeInactive);
        }
        let targeted = |p: Protection, active: u32| match (p, opts.target) {
            (Protection::Tombstone, _) => false,
            (Protection::Cleartext, _) => true,
            (Protection::Sealed { key_id }, RewriteTarget::KeyId(x)) => key_id == x && key_id != active,
            (Protection::Sealed { key_id }, RewriteTarget::AllButActive) => key_id != active,
        };
        let mut cursor: Option<Vec<u8>> = match self.meta.get(meta::REWRITE_CURSOR)? {
            Some(v) => match RewriteTarget::decode_cursor(&v)? {
                (t, k) if t == opts.target => Some(k),
                _ => None,
            },
            None => None,
        };
        let mut report = RewriteProgress { resumed: cursor.is_some(), ..RewriteProgress::default() };
        let started = Instant::now();
        let chunk = opts.chunk_versions.max(1);
        loop {
            let _guard = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
            // Reloaded per chunk: a rotation mid-rewrite moves the rest of the pass to the new key.
            let sealer = self.crypto.sealer().ok_or(StoreError::EnvelopeInactive)?;
            let active = sealer.key_id();
            let start = cursor.clone().map_or(Bound::Unbounded, Bound::Excluded);
            let mut batch = self.db.batch();
            let mut last = None;
            let mut examined = 0usize;
            let mut resealed_keys = Vec::new();
            for guard in self.data.range::<Vec<u8>, _>((start, Bound::Unbounded)).take(chunk) {
                let (mvcc_key, stored) = guard.into_inner()?;
                examined += 1;
                report.versions_scanned += 1;
                report.bytes_scanned += stored.len() as u64;
                let (prefix, ts) = split_stored_key(&mvcc_key)?;
                let p = protection(&stored).map_err(|e| integrity_error(&mvcc_key, ts, e))?;
                if targeted(p, active) {
                    let resealed = self.crypto.reseal(&sealer, &mvcc_key, ts, &stored)?;
                    batch.insert(&self.data, mvcc_key.clone(), resealed);
                    if resealed_keys.last().is_none_or(|p: &fjall::Slice| p.as_ref() != prefix) {
                        resealed_keys.push(fjall::Slice::from(prefix));
                    }
                    report.versions_resealed += 1;
                }
                last = Some(mvcc_key);
            }
            let Some(last) = last else { break };
            let mut c = opts.target.encode().to_vec();
            c.extend_from_slice(&last);
            batch.insert(&self.meta, meta::REWRITE_CURSOR, c);
            sealkv_crypto::failpoint::hit("rewrite.before_chunk_commit");
            batch.durability(Some(fjall::PersistMode::Buffer)).commit()?;
            // A cached version sealed under the old key would stop opening once it is retired.
            self.invalidate_rows(&mut resealed_keys);
            drop(_guard);
            cursor = Some(last.to_vec());
            progress(&report);
            if examined < chunk {
                break;
            }
            throttle(opts.bytes_per_sec, report.bytes_scanned, started);
        }
        // Pass complete: nothing cleartext is left, so no version may claim cleartext any more.
        let mut done = self.db.batch();
        done.remove(&self.meta, meta::REWRITE_CURSOR);
        done.insert(&self.meta, meta::ENVELOPE_SINCE, 0u64.to_be_bytes());
        done.durability(Some(fjall::PersistMode::SyncData)).commit()?;
        self.crypto.set_since(Some(0));
        report.finished = true;
        progress(&report);
        Ok(report)
    }
}

/// Sleeps until `bytes` at `bytes_per_sec` would have taken the time elapsed since `started`.
fn throttle(bytes_per_sec: Option<u64>, bytes: u64, started: Instant) {
    let Some(rate) = bytes_per_sec.filter(|r| *r > 0) else { return };
    let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        std::thread::sleep(wait);
    }
}
