//! The apply batch: every write of one Raft entry (data versions, registry rows, store metadata)
//! plus the new applied position, committed as ONE atomic fjall batch.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::Ordering;

use fjall::{OwnedWriteBatch, PersistMode, Slice};
use sealkv_crypto::registry::{RegistryStore, Row, RowKey, StoreError as RegistryError};

use crate::error::StoreError;
use crate::key::{self, KeyRange};
use crate::latest;
use crate::meta::{self, Applied, MAX_LOG_ID_LEN};
use crate::row_cache::{Cached, CachedRow};
use crate::seal::split_stored_key;
use crate::store::{Direction, Scan, ScanItem, Store, Version};
use crate::value::ValueHeader;

/// How far a commit goes before returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Into the journal's in-process buffer. Enough for apply batches: the next synced Raft log
    /// append flushes and syncs the shared journal, and a lost apply batch is re-applied from the log.
    Buffered,
    /// Handed to the OS (survives a process kill, not a power loss).
    Flushed,
    /// fsync'd (survives a power loss).
    Synced,
}

impl Durability {
    fn mode(self) -> Option<PersistMode> {
        match self {
            Durability::Buffered => None,
            Durability::Flushed => Some(PersistMode::Buffer),
            Durability::Synced => Some(PersistMode::SyncData),
        }
    }
}

/// The writes of one apply. Nothing is visible until [`ApplyBatch::commit`]; dropping the batch
/// discards it (how a halted apply leaves the store untouched).
pub struct ApplyBatch<'s> {
    store: &'s Store,
    inner: OwnedWriteBatch,
    since: Option<u64>,
    activated: bool,
    max_ts: u64,
    hlc_ceiling: Option<i64>,
    rows: BTreeMap<RowKey, Option<Row>>,
    removed_deks: BTreeSet<u32>,
    /// Every data write of this batch by user key, so reads during apply see the batch's own
    /// earlier writes (one entry's INCR after another's in the same apply call).
    pending: BTreeMap<Vec<u8>, Pending>,
    /// Every version this batch writes, by MVCC key, encoded and handed to fjall at commit. A key
    /// written twice at one timestamp (a Redis collection's metadata, rewritten by every command
    /// of an entry that touches it) goes into the memtable once: skiplist inserts were the largest
    /// cost of applying pipelined ZADD, HSET and LPUSH on one key. It is sealed once too: values
    /// stay plaintext here until commit, so the writes a later one replaces are never sealed
    /// (sealing every write of a ZADD -P 16 entry's metadata was 212 seals to keep one).
    versions: BTreeMap<Vec<u8>, Write>,
    /// The newest version's commit ts this batch wrote per version prefix, for the newest-version
    /// index and, once committed, the row cache.
    newest: HashMap<Vec<u8>, u64>,
    /// While a savepoint is open, what each data write replaced, oldest first.
    undo: Option<Vec<Undo>>,
    /// How many savepoints are open.
    savepoints: usize,
}

/// A point in a batch's data writes that [`ApplyBatch::rollback_to`] can return to.
#[derive(Debug)]
#[must_use = "a savepoint is closed by rollback_to or release"]
pub struct Savepoint {
    undo_len: usize,
    max_ts: u64,
}

/// What one put or delete replaced in the batch's maps (`None`: the entry was absent).
struct Undo {
    user_key: Vec<u8>,
    pending: Option<Pending>,
    mvcc_key: Vec<u8>,
    version: Option<Write>,
    /// The version prefix and its former newest ts, if the write moved it.
    newest: Option<NewestBefore>,
}

/// A version prefix and the newest ts the batch had for it before a write moved it.
type NewestBefore = (Vec<u8>, Option<u64>);

/// The newest write of a user key in a batch: its commit ts, and its value and expiry (`None` for
/// a delete). The value shares its bytes with the version in `versions`: one copy per put.
struct Pending {
    ts: u64,
    value: Option<(Slice, u64)>,
}

/// A version waiting in the batch for commit to encode it.
enum Write {
    /// A value; `seal` is whether the storage envelope was active at this point of the apply
    /// stream (decided at the write, so a batch that activates the envelope seals only what
    /// follows the activation).
    Live { seal: bool, value: Slice, expire_at_ms: u64 },
    /// A delete.
    Tombstone,
}

/// A key's newest version as a batch leaves it, for the row cache once the batch is committed:
/// what the cache keeps of it, or `None` when it would not keep it (then what was cached under
/// the key is dropped, being stale).
struct NewestRow {
    prefix: Vec<u8>,
    ts: u64,
    row: Option<CachedRow>,
}

impl std::fmt::Debug for ApplyBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyBatch").field("versions", &self.versions.len()).field("max_ts", &self.max_ts).finish()
    }
}

impl Store {
    /// Starts the batch of one apply.
    pub fn batch(&self) -> ApplyBatch<'_> {
        ApplyBatch {
            store: self,
            inner: self.db.batch(),
            since: self.crypto.since(),
            activated: false,
            max_ts: self.max_ts.load(Ordering::Acquire),
            hlc_ceiling: None,
            rows: BTreeMap::new(),
            removed_deks: BTreeSet::new(),
            pending: BTreeMap::new(),
            versions: BTreeMap::new(),
            newest: HashMap::new(),
            undo: None,
            savepoints: 0,
        }
    }
}

impl ApplyBatch<'_> {
    /// Writes a version of `user_key` at `commit_ts`. Sealed if the storage envelope is active at
    /// this point of the apply stream. `expire_at_ms` 0 means no expiry.
    pub fn put(&mut self, user_key: &[u8], commit_ts: u64, value: &[u8], expire_at_ms: u64) -> Result<(), StoreError> {
        if value.len() > crate::MAX_VALUE_LEN {
            return Err(StoreError::ValueTooLarge { len: value.len() });
        }
        let seal = self.since.is_some();
        // Sealing waits for commit, but a write that could never be sealed is refused here, where
        // the caller sees which write it was.
        if seal && !self.store.crypto.can_seal() {
            return Err(StoreError::NoSealingKey);
        }
        let mvcc_key = self.version_key(user_key, commit_ts)?;
        let newest = self.index_newest(&mvcc_key, commit_ts)?;
        // One copy of the value serves the pending read and the commit.
        let value = Slice::from(value);
        let pending = Pending { ts: commit_ts, value: Some((value.clone(), expire_at_ms)) };
        self.record(user_key, pending, mvcc_key, Write::Live { seal, value, expire_at_ms }, newest);
        Ok(())
    }

    /// Writes a tombstone for `user_key` at `commit_ts`.
    pub fn delete(&mut self, user_key: &[u8], commit_ts: u64) -> Result<(), StoreError> {
        let mvcc_key = self.version_key(user_key, commit_ts)?;
        let newest = self.index_newest(&mvcc_key, commit_ts)?;
        self.record(user_key, Pending { ts: commit_ts, value: None }, mvcc_key, Write::Tombstone, newest);
        Ok(())
    }

    /// Enters a write into the batch's maps, and into the undo log while a savepoint is open.
    /// Every check of the write has passed by now, so a refused write leaves no trace.
    fn record(
        &mut self,
        user_key: &[u8],
        pending: Pending,
        mvcc_key: Vec<u8>,
        write: Write,
        newest: Option<NewestBefore>,
    ) {
        let pending = self.pending.insert(user_key.to_vec(), pending);
        match &mut self.undo {
            Some(undo) => {
                let version = self.versions.insert(mvcc_key.clone(), write);
                undo.push(Undo { user_key: user_key.to_vec(), pending, mvcc_key, version, newest });
            }
            None => {
                self.versions.insert(mvcc_key, write);
            }
        }
    }

    /// Marks this point of the batch's data writes. Why: an operation that makes several writes
    /// (one Redis command) and has a later one refused ([`StoreError::is_refusal`]) takes back
    /// its earlier ones with [`Self::rollback_to`], so it leaves nothing half done, and the
    /// refusal is an answer instead of a halt. Savepoints nest; close each with `rollback_to` or
    /// [`Self::release`], innermost first. They cover puts and deletes, the only writes an
    /// operation between them makes.
    pub fn savepoint(&mut self) -> Savepoint {
        self.savepoints += 1;
        let undo_len = self.undo.get_or_insert_with(Vec::new).len();
        Savepoint { undo_len, max_ts: self.max_ts }
    }

    /// Takes back every put and delete made since `sp`, and closes it.
    pub fn rollback_to(&mut self, sp: Savepoint) {
        let Some(undo) = &mut self.undo else { return };
        for u in undo.drain(sp.undo_len..).rev() {
            match u.version {
                Some(w) => self.versions.insert(u.mvcc_key, w),
                None => self.versions.remove(&u.mvcc_key),
            };
            match u.pending {
                Some(p) => self.pending.insert(u.user_key, p),
                None => self.pending.remove(&u.user_key),
            };
            if let Some((prefix, before)) = u.newest {
                match before {
                    Some(ts) => self.newest.insert(prefix, ts),
                    None => self.newest.remove(&prefix),
                };
            }
        }
        self.max_ts = sp.max_ts;
        self.close();
    }

    /// Keeps the writes made since `sp`, and closes it. Closing the outermost savepoint stops the
    /// undo log, so a batch pays for it only around the operations that open one.
    pub fn release(&mut self, _sp: Savepoint) {
        self.close();
    }

    fn close(&mut self) {
        self.savepoints = self.savepoints.saturating_sub(1);
        if self.savepoints == 0 {
            self.undo = None;
        }
    }

    /// Makes room for `additional` more keys written by this batch, so a batch that deletes a
    /// whole keyspace (FLUSHALL) does not rehash its newest-version map over and over on the way.
    pub fn reserve(&mut self, additional: usize) {
        self.newest.reserve(additional);
    }

    /// The newest version of `user_key` as this batch leaves it (its own writes first, then the
    /// store), expired values and tombstones included.
    pub fn latest(&self, user_key: &[u8]) -> Result<Option<Version>, StoreError> {
        match self.pending.get(user_key) {
            Some(p) => Ok(Some(Version { ts: p.ts, value: p.value.as_ref().map(|(v, e)| (v.to_vec(), *e)) })),
            None => self.store.version(user_key, u64::MAX),
        }
    }

    /// The live keys between `lo` and `hi` as this batch leaves them, expired values included
    /// (apply-time evaluation decides expiry itself), in key order or reverse.
    pub fn scan_latest(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, direction: Direction) -> MergedScan<'_> {
        // BTreeMap::range panics on inverted bounds; such a range is simply empty.
        let empty = match (&lo, &hi) {
            (Bound::Included(a), Bound::Included(b)) => a > b,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => a >= b,
            _ => false,
        };
        let overlay: VecDeque<(Vec<u8>, Option<Vec<u8>>)> = if empty {
            VecDeque::new()
        } else {
            let range = self.pending.range::<Vec<u8>, _>((lo.as_ref(), hi.as_ref()));
            let entry = |(k, p): (&Vec<u8>, &Pending)| (k.clone(), p.value.as_ref().map(|(b, _)| b.to_vec()));
            match direction {
                Direction::Forward => range.map(entry).collect(),
                Direction::Reverse => range.rev().map(entry).collect(),
            }
        };
        MergedScan {
            store: self.store.scan(&KeyRange::Bounds(lo, hi), u64::MAX, 0, direction).peekable(),
            overlay,
            direction,
        }
    }

    fn version_key(&mut self, user_key: &[u8], commit_ts: u64) -> Result<Vec<u8>, StoreError> {
        if commit_ts == 0 {
            return Err(StoreError::ZeroTimestamp);
        }
        let k = key::encode(user_key, commit_ts)?;
        self.max_ts = self.max_ts.max(commit_ts);
        Ok(k)
    }

    /// Points the newest-version index at this write unless the key already has a newer version
    /// (entries can carry timestamps out of log order). A write at or above every timestamp the
    /// store has seen needs no lookup; only such an older-timestamp write reads the index.
    /// Must run after [`Self::version_key`] has raised `max_ts` to cover `commit_ts`.
    /// Returns, while a savepoint is open, the prefix and its former entry if this moved it.
    fn index_newest(&mut self, mvcc_key: &[u8], commit_ts: u64) -> Result<Option<NewestBefore>, StoreError> {
        let prefix = mvcc_key.get(..mvcc_key.len().saturating_sub(8)).unwrap_or_default();
        let newest = match self.newest.get(prefix) {
            Some(&ts) => Some(ts),
            None if commit_ts >= self.max_ts => None,
            None => self.store.indexed_ts(prefix)?,
        };
        if newest.is_none_or(|ts| commit_ts >= ts) {
            // The index entry and the row cache row are made at commit, once per prefix.
            let before = self.newest.insert(prefix.to_vec(), commit_ts);
            return Ok(self.undo.is_some().then(|| (prefix.to_vec(), before)));
        }
        Ok(None)
    }

    /// The stored bytes of a pending write (sealed here if it is to be) and, when it is its key's
    /// newest version, what the row cache will keep of it.
    fn encode(&self, mvcc_key: &[u8], write: &Write) -> Result<(Slice, Option<NewestRow>), StoreError> {
        let stored = Slice::from(match write {
            Write::Live { seal, value, expire_at_ms } => {
                self.store.crypto.encode_live(*seal, mvcc_key, value, *expire_at_ms)?
            }
            Write::Tombstone => ValueHeader::TOMBSTONE.encode().to_vec(),
        });
        let (prefix, ts) = split_stored_key(mvcc_key)?;
        if self.newest.get(prefix) != Some(&ts) {
            return Ok((stored, None));
        }
        let opened = || match write {
            Write::Live { value, expire_at_ms, .. } => Some((value.as_ref(), *expire_at_ms)),
            Write::Tombstone => None,
        };
        let row = self.store.cache_row(prefix.len(), opened, stored.len(), || stored.clone());
        Ok((stored, Some(NewestRow { prefix: prefix.to_vec(), ts, row })))
    }

    /// Turns the storage envelope on from this point of the apply stream: this batch's later writes
    /// and every later batch seal. Records the highest timestamp applied so far as the activation
    /// point of the rebadge guard (0 for a store encrypted from birth). A no-op if already active.
    pub fn enable_storage_envelope(&mut self) {
        if self.since.is_none() {
            self.since = Some(self.max_ts);
            self.activated = true;
        }
    }

    /// Records the HLC ceiling granted by a lease entry.
    pub fn set_hlc_ceiling(&mut self, ceiling_ms: i64) {
        self.hlc_ceiling = Some(ceiling_ms);
    }

    /// Commits everything with the applied position, atomically.
    pub fn commit(mut self, applied: &Applied, durability: Durability) -> Result<(), StoreError> {
        if applied.log_id.len() > MAX_LOG_ID_LEN {
            return Err(StoreError::CorruptMeta { name: "applied" });
        }
        let mut rows = Vec::with_capacity(self.newest.len());
        for (mvcc_key, write) in std::mem::take(&mut self.versions) {
            let (stored, newest) = self.encode(&mvcc_key, &write)?;
            rows.extend(newest);
            self.inner.insert(&self.store.data, mvcc_key, stored);
        }
        for (prefix, ts) in &self.newest {
            self.inner.insert(&self.store.latest, prefix.as_slice(), latest::encode_ts(*ts));
        }
        let meta = &self.store.meta;
        self.inner.insert(meta, meta::APPLIED, applied.encode());
        self.inner.insert(meta, meta::MAX_TS, self.max_ts.to_be_bytes());
        if self.activated
            && let Some(since) = self.since
        {
            self.inner.insert(meta, meta::ENVELOPE_SINCE, since.to_be_bytes());
        }
        if let Some(ms) = self.hlc_ceiling {
            self.inner.insert(meta, meta::HLC_CEILING, ms.to_be_bytes());
        }
        sealkv_crypto::failpoint::hit("store.before_apply_commit");
        self.inner.durability(durability.mode()).commit()?;
        // Visible now: the next apply's metadata read and the next GET find these in the cache.
        for NewestRow { prefix, ts, row } in rows {
            match row {
                Some(row) => self.store.rows.put(&prefix, Cached::Newest { ts, row }),
                // Not kept: what was cached under the key is stale now.
                None => self.store.rows.invalidate(&prefix),
            }
        }
        self.store.max_ts.fetch_max(self.max_ts, Ordering::AcqRel);
        if self.activated {
            self.store.crypto.set_since(self.since);
        }
        Ok(())
    }

    fn stored_row(&self, key: RowKey) -> Result<Option<Row>, StoreError> {
        if let Some(pending) = self.rows.get(&key) {
            return Ok(*pending);
        }
        if self.removed_deks.contains(&key.dek_id) {
            return Ok(None);
        }
        self.store.registry.get(key.encode())?.map(|v| Row::decode(&v).map_err(StoreError::from)).transpose()
    }
}

/// A store scan with an apply batch's pending writes laid over it; see [`ApplyBatch::scan_latest`].
pub struct MergedScan<'s> {
    store: std::iter::Peekable<Scan<'s>>,
    overlay: VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
    direction: Direction,
}

impl Iterator for MergedScan<'_> {
    type Item = ScanItem;

    fn next(&mut self) -> Option<ScanItem> {
        loop {
            let take_overlay = match (self.store.peek(), self.overlay.front()) {
                (_, None) => return self.store.next(),
                (None, Some(_)) => true,
                (Some(Err(_)), Some(_)) => return self.store.next(),
                (Some(Ok((sk, _))), Some((ok, _))) => {
                    let overlay_first = match self.direction {
                        Direction::Forward => ok <= sk,
                        Direction::Reverse => ok >= sk,
                    };
                    if ok == sk {
                        // The batch's write shadows the stored version of the same key.
                        self.store.next();
                    }
                    overlay_first
                }
            };
            if take_overlay {
                let (k, v) = self.overlay.pop_front()?;
                match v {
                    Some(v) => return Some(Ok((k, v))),
                    None => continue,
                }
            }
            return self.store.next();
        }
    }
}

fn registry_err(e: StoreError) -> RegistryError {
    RegistryError(Box::new(e))
}

/// The registry as this batch will leave it: reads see the batch's own earlier writes.
impl RegistryStore for ApplyBatch<'_> {
    fn get(&self, key: RowKey) -> Result<Option<Row>, RegistryError> {
        self.stored_row(key).map_err(registry_err)
    }

    fn put(&mut self, key: RowKey, row: Row) -> Result<(), RegistryError> {
        self.inner.insert(&self.store.registry, key.encode(), row.encode());
        self.rows.insert(key, Some(row));
        Ok(())
    }

    fn remove_dek(&mut self, dek_id: u32) -> Result<(), RegistryError> {
        for g in self.store.registry.prefix(RowKey::dek_prefix(dek_id)) {
            let k = g.key().map_err(|e| registry_err(e.into()))?;
            self.inner.remove(&self.store.registry, k);
        }
        let pending: Vec<RowKey> = self.rows.keys().filter(|k| k.dek_id == dek_id).copied().collect();
        for k in pending {
            self.inner.remove(&self.store.registry, k.encode());
            self.rows.insert(k, None);
        }
        self.removed_deks.insert(dek_id);
        Ok(())
    }

    fn rows(&self) -> Result<Vec<(RowKey, Row)>, RegistryError> {
        let mut all: BTreeMap<RowKey, Row> = self
            .store
            .registry_rows()
            .map_err(registry_err)?
            .into_iter()
            .filter(|(k, _)| !self.removed_deks.contains(&k.dek_id))
            .collect();
        for (k, row) in &self.rows {
            match row {
                Some(r) => all.insert(*k, *r),
                None => all.remove(k),
            };
        }
        Ok(all.into_iter().collect())
    }
}
