//! Opening the store and reading it: point reads and ordered scans at a read timestamp.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fjall::config::CompressionPolicy;
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};
use sealkv_crypto::registry::{Row, RowKey};
use sealkv_crypto::{Keystore, Sealer};

use crate::error::StoreError;
use crate::key::{self, KeyRange};
use crate::latest;
use crate::meta::{self, Applied};
use crate::row_cache::{Cached, CachedRow, Lookup, RowCache, RowCacheStats};
use crate::seal::{Crypto, Opened, integrity_error, split_stored_key};

const DATA: &str = "data";
const META: &str = "meta";
const REGISTRY: &str = "registry";

/// The row cache's default budget: about 200,000 hot 1 KiB values per node.
pub const DEFAULT_ROW_CACHE_BYTES: u64 = 256 << 20;

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Keys to open sealed values with. Shared with the applier, which installs DEKs into it.
    pub keystore: Arc<Keystore>,
    /// The node runs with encryption enabled: a data keyspace created now gets no block
    /// compression (ciphertext does not compress; values are compressed before sealing instead).
    pub encryption_enabled: bool,
    /// fjall block cache size in bytes.
    pub cache_bytes: u64,
    /// Memtable size of the data keyspace in bytes (bounds memory during snapshot installs).
    pub memtable_bytes: u64,
    /// Row cache budget in bytes (`row_cache.rs`); 0 turns the cache off.
    pub row_cache_bytes: u64,
    /// The row cache keeps versions as stored (sealed) and opens every hit, instead of keeping
    /// them opened: no plaintext is held between requests, at the cost of a decrypt per hit.
    pub row_cache_sealed: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            keystore: Arc::new(Keystore::new()),
            encryption_enabled: false,
            cache_bytes: 64 << 20,
            memtable_bytes: 32 << 20,
            row_cache_bytes: DEFAULT_ROW_CACHE_BYTES,
            row_cache_sealed: false,
        }
    }
}

/// The MVCC store: user versions, store metadata and writer-registry rows in one fjall database,
/// so an apply batch covers all three atomically.
pub struct Store {
    pub(crate) db: Database,
    pub(crate) data: Keyspace,
    pub(crate) meta: Keyspace,
    pub(crate) registry: Keyspace,
    /// Newest commit ts per key (`latest.rs`), so point reads need no range seek.
    pub(crate) latest: Keyspace,
    /// The newest version of hot keys, so a point read skips both LSM lookups (`row_cache.rs`).
    pub(crate) rows: RowCache,
    /// The row cache keeps stored bytes rather than opened values ([`StoreOptions::row_cache_sealed`]).
    pub(crate) rows_sealed: bool,
    pub(crate) crypto: Crypto,
    pub(crate) max_ts: AtomicU64,
    /// Serializes GC, rewrite and snapshot install, which must not interleave on the same versions
    /// (a rewrite must never write back a version GC just removed).
    pub(crate) maintenance: Mutex<()>,
    block_compression: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("envelope_since", &self.crypto.since())
            .field("max_ts", &self.max_ts.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// fjall's background workers: four, whatever the core count (fjall's default is `min(cores, 4)`).
///
/// Why: fjall's worker 0 never compacts while another worker exists; it re-queues every
/// compaction request it receives, and takes it straight back off the queue while every other
/// worker is busy: a busy loop. A flush queues one request per worker. With two workers (the
/// default on a 2-core machine) it spun whenever worker 1 compacted; three cut fjall workers' CPU
/// under SET by about a fifth, but an encrypted store, whose three keyspaces (data, index, Raft
/// log) often compact at once, still spent 5.4% of all its CPU in that loop under LPUSH after a
/// mixed load (cleartext 1.0%). With four it spent 1.1%. One worker is no cure: flushes would
/// then wait behind compactions, and memtables would pile up in memory.
const WORKER_THREADS: usize = 4;

impl Store {
    /// Opens (or creates) the store in `path`. A snapshot install that did not finish is wiped, so
    /// the store is empty and the replication layer fetches a snapshot again.
    pub fn open(path: impl AsRef<Path>, opts: StoreOptions) -> Result<Store, StoreError> {
        let db = Database::builder(path.as_ref())
            .cache_size(opts.cache_bytes)
            .manual_journal_persist(true)
            .worker_threads(WORKER_THREADS)
            .open()?;
        let meta_ks = db.keyspace(META, KeyspaceCreateOptions::default)?;
        let fresh = !db.keyspace_exists(DATA);
        let memtable = opts.memtable_bytes;
        // Values of 1 KiB and more live in blob files (fjall key-value separation), so compaction
        // rewrites keys and pointers, not values. Why: sealed values are unique ciphertext, which
        // block compression cannot shrink, so without separation an encrypted store compacts
        // several times the bytes a cleartext one does whenever values repeat (measured: SET at
        // -P 16 after a mixed load cost 99 µs of CPU per request encrypted against 68 cleartext;
        // with separation 69 against 63). Blobs of an encrypted keyspace are not compressed
        // either (values are compressed before sealing). Applies to keyspaces created from now
        // on; an existing keyspace keeps the layout it was created with.
        let data = db.keyspace(DATA, || {
            let o = KeyspaceCreateOptions::default().max_memtable_size(memtable);
            if opts.encryption_enabled {
                o.data_block_compression_policy(CompressionPolicy::disabled())
                    .index_block_compression_policy(CompressionPolicy::disabled())
                    .with_kv_separation(Some(KvSeparationOptions::default().compression(CompressionType::None)))
            } else {
                o.with_kv_separation(Some(KvSeparationOptions::default()))
            }
        })?;
        let registry = db.keyspace(REGISTRY, KeyspaceCreateOptions::default)?;
        // Index entries are tiny and fjall's memtable accounting undercounts their heap (skiplist
        // nodes), so the index gets an eighth of the data memtable to stay as bounded in memory.
        let latest = db.keyspace(latest::KEYSPACE, || {
            KeyspaceCreateOptions::default().max_memtable_size((memtable / 8).max(64 << 10))
        })?;
        if fresh {
            let flag = u8::from(!opts.encryption_enabled);
            meta_ks.insert(meta::BLOCK_COMPRESSION, [flag])?;
        }
        let block_compression = meta_ks.get(meta::BLOCK_COMPRESSION)?.is_none_or(|v| v.as_ref() != [0]);
        if opts.encryption_enabled && block_compression {
            tracing::warn!(
                "data keyspace was created without encryption and keeps fjall block compression on its lower levels; \
                 this costs compaction CPU only (see docs/runbook.md, 'block compression')"
            );
        }
        let since = meta_ks.get(meta::ENVELOPE_SINCE)?.map(|v| meta::decode_u64(&v, "envelope_since")).transpose()?;
        let max_ts = meta_ks.get(meta::MAX_TS)?.map(|v| meta::decode_u64(&v, "max_ts")).transpose()?.unwrap_or(0);
        let store = Store {
            crypto: Crypto::new(opts.keystore, since),
            db,
            data,
            meta: meta_ks,
            registry,
            latest,
            rows: RowCache::new(opts.row_cache_bytes),
            rows_sealed: opts.row_cache_sealed,
            max_ts: AtomicU64::new(max_ts),
            maintenance: Mutex::new(()),
            block_compression,
        };
        if store.meta.get(meta::INSTALLING)?.is_some() {
            tracing::warn!("an interrupted snapshot install left a partial store; wiping it");
            store.wipe()?;
        }
        store.ensure_latest_index()?;
        Ok(store)
    }

    /// The fjall database, so the replication layer can keep its log in the same journal (a synced
    /// log append then also makes earlier apply batches durable).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The keystore reads open sealed values with.
    pub fn keystore(&self) -> &Arc<Keystore> {
        self.crypto.keystore()
    }

    /// Installs (or clears) the sealer new values are sealed with. Called by the applier whenever
    /// the active storage DEK or this load's nonce factory changes.
    pub fn set_sealer(&self, sealer: Option<Arc<Sealer>>) {
        self.crypto.set_sealer(sealer);
    }

    /// The sealer in use, if any.
    pub fn sealer(&self) -> Option<Arc<Sealer>> {
        self.crypto.sealer()
    }

    /// The commit timestamp from which cleartext versions are refused: `None` while the storage
    /// envelope is off, `Some(0)` once every version is sealed (or for a store encrypted from birth).
    pub fn storage_envelope_since(&self) -> Option<u64> {
        self.crypto.since()
    }

    /// Whether the data keyspace compresses blocks (fixed when the store was created).
    pub fn block_compression(&self) -> bool {
        self.block_compression
    }

    /// The highest commit timestamp applied.
    pub fn max_committed_ts(&self) -> u64 {
        self.max_ts.load(Ordering::Acquire)
    }

    /// The last applied Raft entry, if any.
    pub fn applied(&self) -> Result<Option<Applied>, StoreError> {
        self.meta.get(meta::APPLIED)?.map(|v| Applied::decode(&v)).transpose()
    }

    /// The HLC ceiling of the last applied lease, if any.
    pub fn hlc_ceiling(&self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .meta
            .get(meta::HLC_CEILING)?
            .map(|v| meta::decode_u64(&v, "hlc_ceiling"))
            .transpose()?
            .map(|v| v as i64))
    }

    /// Makes everything committed so far durable (fsync of the journal).
    pub fn persist(&self) -> Result<(), StoreError> {
        Ok(self.db.persist(PersistMode::SyncAll)?)
    }

    /// The value of `key` as of `read_ts`: `None` if it never existed, was deleted, or expired at
    /// `now_ms`. A version that fails any integrity check is an error, never `None`.
    pub fn get(&self, user_key: &[u8], read_ts: u64, now_ms: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(match self.version(user_key, read_ts)? {
            Some(Version { value: Some((value, expire_at_ms)), .. }) if live_at(expire_at_ms, now_ms) => Some(value),
            _ => None,
        })
    }

    /// The newest version of `key` at or below `read_ts`, tombstones and expired values included:
    /// what apply-time evaluation and TTL reads need (the caller decides what expiry means).
    pub fn version(&self, user_key: &[u8], read_ts: u64) -> Result<Option<Version>, StoreError> {
        let mut start = key::encode(user_key, read_ts)?;
        let prefix_len = start.len() - 8;
        let ticket = match self.rows.get(version_prefix(&start, prefix_len)) {
            Lookup::Hit(Cached::Absent) => return Ok(None),
            Lookup::Hit(Cached::Newest { ts, row }) if ts <= read_ts => {
                return match row {
                    CachedRow::Open(value) => Ok(Some(Version { ts, value: value.map(|(v, e)| (v.to_vec(), e)) })),
                    CachedRow::Stored(stored) => {
                        key::set_ts(&mut start, ts);
                        self.opened_version(&start, ts, &stored).map(Some)
                    }
                };
            }
            // The newest version is after `read_ts`: an older one is wanted, which the range finds.
            Lookup::Hit(Cached::Newest { .. }) => None,
            Lookup::Miss(ticket) => Some(ticket),
        };
        // The index answers most reads with exact-key lookups; see latest.rs for when it cannot.
        if let Some(ticket) = ticket {
            match self.indexed_ts(version_prefix(&start, prefix_len))? {
                None => {
                    self.rows.fill(version_prefix(&start, prefix_len), ticket, Cached::Absent);
                    return Ok(None);
                }
                Some(ts) if ts <= read_ts => {
                    key::set_ts(&mut start, ts);
                    if let Some(stored) = self.data.get(&start)? {
                        let version = self.opened_version(&start, ts, &stored)?;
                        // A copy of `stored`: it may share a table block, which the cache must not pin.
                        let row = self.cache_row(
                            prefix_len,
                            || version.value.as_ref().map(|(v, e)| (&v[..], *e)),
                            stored.len(),
                            || fjall::Slice::from(&stored[..]),
                        );
                        if let Some(row) = row {
                            self.rows.fill(version_prefix(&start, prefix_len), ticket, Cached::Newest { ts, row });
                        }
                        return Ok(Some(version));
                    }
                    key::set_ts(&mut start, read_ts);
                }
                Some(_) => {}
            }
        }
        let mut end = start.clone();
        key::set_ts(&mut end, 0);
        let Some(guard) = self.data.range(start..=end).next() else {
            return Ok(None);
        };
        let (mvcc_key, stored) = guard.into_inner()?;
        let (_, ts) = split_stored_key(&mvcc_key)?;
        self.opened_version(&mvcc_key, ts, &stored).map(Some)
    }

    /// The row cache's hit and miss counts and its size, for metrics.
    pub fn row_cache_stats(&self) -> RowCacheStats {
        self.rows.stats()
    }

    /// Whether the row cache keeps versions sealed (`row_cache_sealed`) rather than opened, so an
    /// operator can check which memory posture a node runs with.
    pub fn row_cache_sealed(&self) -> bool {
        self.rows_sealed
    }

    /// What the row cache keeps of a version under a `prefix_len`-byte prefix: a copy of the
    /// opened value (`None` for a tombstone), or the `stored_len` stored bytes when the cache is
    /// sealed. Only the one it keeps is built, and nothing when the cache would refuse it (off, or
    /// too big): then `None`, and a writer drops what was cached under the key instead.
    pub(crate) fn cache_row<'v>(
        &self,
        prefix_len: usize,
        opened: impl FnOnce() -> Option<(&'v [u8], u64)>,
        stored_len: usize,
        stored: impl FnOnce() -> fjall::Slice,
    ) -> Option<CachedRow> {
        if self.rows_sealed {
            return self.rows.admits(prefix_len, stored_len).then(|| CachedRow::Stored(stored()));
        }
        match opened() {
            Some((v, _)) if !self.rows.admits(prefix_len, v.len()) => None,
            None if !self.rows.admits(prefix_len, 0) => None,
            value => Some(CachedRow::Open(value.map(|(v, e)| (fjall::Slice::from(v), e)))),
        }
    }

    fn opened_version(&self, mvcc_key: &[u8], ts: u64, stored: &[u8]) -> Result<Version, StoreError> {
        Ok(match self.open_version(mvcc_key, ts, stored)? {
            Opened::Tombstone => Version { ts, value: None },
            Opened::Live { expire_at_ms, value } => Version { ts, value: Some((value, expire_at_ms)) },
        })
    }

    pub(crate) fn open_version(&self, mvcc_key: &[u8], ts: u64, stored: &[u8]) -> Result<Opened, StoreError> {
        self.crypto.open(mvcc_key, ts, stored).map_err(|reason| integrity_error(mvcc_key, ts, reason))
    }

    /// Streams the newest visible version of every key in `range` as of `read_ts`, in key order
    /// (or reverse), reading one stored version ahead at most.
    pub fn scan(&self, range: &KeyRange, read_ts: u64, now_ms: u64, direction: Direction) -> Scan<'_> {
        Scan {
            store: self,
            inner: self.data.range(range.mvcc_bounds()),
            read_ts,
            now_ms,
            direction,
            decided: None,
            pending: None,
            done: false,
        }
    }

    /// Every writer-registry row, ordered by key.
    pub fn registry_rows(&self) -> Result<Vec<(RowKey, Row)>, StoreError> {
        self.registry
            .iter()
            .map(|g| {
                let (k, v) = g.into_inner()?;
                Ok((RowKey::decode(&k)?, Row::decode(&v)?))
            })
            .collect()
    }

    /// Whether the store holds no versions, registry rows or applied position.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.data.is_empty()? && self.registry.is_empty()? && self.meta.get(meta::APPLIED)?.is_none())
    }

    /// Removes every version, registry row and replicated metadata record (before installing a
    /// snapshot over a diverged or partial store). Durable when it returns.
    pub fn wipe(&self) -> Result<(), StoreError> {
        let removed = self.remove_everything();
        // Cleared even when the wipe failed part-way: whatever was removed must not be served.
        self.rows.clear();
        removed?;
        self.crypto.set_since(None);
        self.max_ts.store(0, Ordering::Release);
        Ok(())
    }

    fn remove_everything(&self) -> Result<(), StoreError> {
        for ks in [&self.data, &self.latest, &self.registry, &self.meta] {
            let mut batch = self.db.batch();
            let mut n = 0usize;
            for g in ks.iter() {
                let key = g.key()?;
                if ks.name() == self.meta.name() && meta::KEPT_BY_WIPE.contains(&key.as_ref()) {
                    continue;
                }
                batch.remove(ks, key);
                n += 1;
                if n % 4096 == 0 {
                    std::mem::replace(&mut batch, self.db.batch()).commit()?;
                }
            }
            batch.commit()?;
        }
        Ok(self.db.persist(PersistMode::SyncAll)?)
    }
}

/// The version prefix (user key and terminator) of an encoded MVCC key whose prefix is `len` long.
fn version_prefix(mvcc_key: &[u8], len: usize) -> &[u8] {
    mvcc_key.get(..len).unwrap_or_default()
}

/// One version of a key, as [`Store::version`] and [`crate::ApplyBatch::latest`] return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Its commit timestamp.
    pub ts: u64,
    /// The value and its expiry in Unix ms (0 = none); `None` for a tombstone.
    pub value: Option<(Vec<u8>, u64)>,
}

/// Scan order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Reverse,
}

/// Whether a value with expiry `expire_at_ms` (0 = never) is still live at `now_ms`: the one
/// expiry rule of point reads and scans.
pub fn live_at(expire_at_ms: u64, now_ms: u64) -> bool {
    expire_at_ms == 0 || expire_at_ms > now_ms
}

fn visible(opened: Opened, now_ms: u64) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(match opened {
        Opened::Live { expire_at_ms, value } if live_at(expire_at_ms, now_ms) => Some(value),
        _ => None,
    })
}

/// A user key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);
/// What a [`Scan`] yields.
pub type ScanItem = Result<KeyValue, StoreError>;

/// An ordered scan at a read timestamp; see [`Store::scan`].
pub struct Scan<'s> {
    store: &'s Store,
    inner: fjall::Iter,
    read_ts: u64,
    now_ms: u64,
    direction: Direction,
    /// Forward: the version prefix already decided (its newer versions skipped, older ones pending skip).
    decided: Option<fjall::Slice>,
    /// Reverse: the newest version ≤ read_ts seen so far for the key being walked.
    pending: Option<(fjall::Slice, u64, fjall::Slice)>,
    done: bool,
}

impl Scan<'_> {
    fn emit(&self, mvcc_key: &[u8], ts: u64, stored: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let opened = self.store.open_version(mvcc_key, ts, stored)?;
        let Some(value) = visible(opened, self.now_ms)? else { return Ok(None) };
        let (user_key, _) = key::decode(mvcc_key).map_err(|e| integrity_error(mvcc_key, ts, e.into()))?;
        Ok(Some((user_key, value)))
    }

    fn next_forward(&mut self) -> Option<ScanItem> {
        while let Some(guard) = self.inner.next() {
            let (mvcc_key, stored) = match guard.into_inner() {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            let (prefix, ts) = match split_stored_key(&mvcc_key) {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            if self.decided.as_deref() == Some(prefix) || ts > self.read_ts {
                continue;
            }
            self.decided = Some(fjall::Slice::from(prefix));
            match self.emit(&mvcc_key, ts, &stored) {
                Ok(Some(kv)) => return Some(Ok(kv)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }

    fn next_reverse(&mut self) -> Option<ScanItem> {
        loop {
            let next = match self.inner.next_back() {
                None => None,
                Some(guard) => match guard.into_inner() {
                    Ok(kv) => Some(kv),
                    Err(e) => return Some(Err(e.into())),
                },
            };
            let Some((mvcc_key, stored)) = next else {
                // End of range: decide the last key walked.
                let (k, ts, v) = self.pending.take()?;
                return match self.emit(&k, ts, &v) {
                    Ok(Some(kv)) => Some(Ok(kv)),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                };
            };
            let (prefix, ts) = match split_stored_key(&mvcc_key) {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            let same_key =
                self.pending.as_ref().is_some_and(|(k, _, _)| k.starts_with(prefix) && k.len() == mvcc_key.len());
            if !same_key && let Some((k, pts, v)) = self.pending.take() {
                // Walking backwards reached another key: the pending version is the one to show.
                let out = self.emit(&k, pts, &v);
                if ts <= self.read_ts {
                    self.pending = Some((mvcc_key, ts, stored));
                }
                match out {
                    Ok(Some(kv)) => return Some(Ok(kv)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            if ts <= self.read_ts {
                // Versions of one key arrive oldest first; keep the newest visible one.
                self.pending = Some((mvcc_key, ts, stored));
            }
        }
    }
}

impl Iterator for Scan<'_> {
    type Item = ScanItem;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.direction {
            Direction::Forward => self.next_forward(),
            Direction::Reverse => self.next_reverse(),
        };
        // An error ends the scan: the caller must not see anything after a failed version.
        if matches!(item, None | Some(Err(_))) {
            self.done = true;
        }
        item
    }
}
