//! The Raft log in fjall: keyspace `raft_log` (big-endian index → bincode entry) and
//! `raft_state` (vote, committed, last purged), in the store's own database.
//!
//! Sharing the database means sharing the journal: the synced batch of a log append also makes
//! every earlier (buffered) apply batch durable, so the state machine never pays for its own
//! fsync (spec 04). Every mutation here is one batch committed with `SyncData` before it is
//! acknowledged: append before `log_io_completed`, the vote before `save_vote` returns, and
//! truncate and purge as one atomic batch each.
//!
//! The store also keeps every present entry's encoded size in memory ([`LogSizes`]), so the
//! server can bound the log in bytes as well as in entries: a command-batch entry carries up to
//! 8 MiB, so an entry count alone lets the log grow without a useful bound.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::progress::FlushProgress;
use crate::timing::Timing;
use crate::types::{Entry, LogId, StorageError, TypeConfig};

const LOG: &str = "raft_log";
const STATE: &str = "raft_state";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"last_purged";

/// The log store. Cheap to clone: readers share the keyspaces and the size index.
#[derive(Clone)]
pub struct LogStore {
    db: Database,
    log: Keyspace,
    state: Keyspace,
    sizes: Arc<Mutex<LogSizes>>,
    appends: Arc<Timing>,
    progress: FlushProgress,
}

/// The encoded size of every entry present in the log, in index order. Updated only after the
/// batch that changes the log has committed, so it never counts an entry the disk lacks for
/// longer than the commit takes.
#[derive(Debug, Default)]
pub struct LogSizes {
    entries: VecDeque<(u64, u64)>,
    bytes: u64,
}

impl LogSizes {
    fn push(&mut self, index: u64, bytes: u64) {
        self.entries.push_back((index, bytes));
        self.bytes += bytes;
    }

    /// Forgets entries at `from` and above (a truncate).
    fn truncate(&mut self, from: u64) {
        while let Some(&(i, b)) = self.entries.back()
            && i >= from
        {
            self.entries.pop_back();
            self.bytes -= b;
        }
    }

    /// Forgets entries at `upto` and below (a purge).
    fn purge(&mut self, upto: u64) {
        while let Some(&(i, b)) = self.entries.front()
            && i <= upto
        {
            self.entries.pop_front();
            self.bytes -= b;
        }
    }

    /// Entries and bytes in the log.
    pub fn usage(&self) -> LogUsage {
        LogUsage { entries: self.entries.len() as u64, bytes: self.bytes }
    }

    /// Bytes of the entries above `index`: what a snapshot at `index` would not cover.
    pub fn bytes_after(&self, index: u64) -> u64 {
        self.entries.iter().rev().take_while(|(i, _)| *i > index).map(|(_, b)| b).sum()
    }

    /// The highest index to purge so that the entries kept at or below `snapshot` (the ones a
    /// lagging follower can still catch up from without a snapshot) stay within `keep_bytes`;
    /// `None` when they already do.
    pub fn purge_point(&self, snapshot: u64, keep_bytes: u64) -> Option<u64> {
        let mut kept = 0u64;
        for &(i, b) in self.entries.iter().rev().skip_while(|(i, _)| *i > snapshot) {
            kept = kept.saturating_add(b);
            if kept > keep_bytes {
                return Some(i);
            }
        }
        None
    }
}

/// How much log a node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogUsage {
    /// Entries present (purged and truncated ones excluded).
    pub entries: u64,
    /// Their encoded bytes, as stored (raft envelopes included).
    pub bytes: u64,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

fn io(verb: ErrorVerb, subject: ErrorSubject<u64>, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    io(ErrorVerb::Read, ErrorSubject::Logs, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    io(ErrorVerb::Write, ErrorSubject::Logs, e)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    codec::decode(bytes)
        .map_err(|s| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, s.message().to_owned())))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    codec::encode(v).map_err(|s| write_err(std::io::Error::other(s.message().to_owned())))
}

impl LogStore {
    /// Opens (or creates) the log keyspaces in `db`.
    pub fn open(db: &Database) -> Result<Self, fjall::Error> {
        // Raft payloads are ciphertext after the cutover (and compressed before sealing, see
        // `machine_frame`); block compression would only cost CPU. Entries of 1 KiB and more go
        // to blob files, so compacting the log before a purge does not rewrite them.
        let log = db.keyspace(LOG, || {
            KeyspaceCreateOptions::default()
                .data_block_compression_policy(fjall::config::CompressionPolicy::disabled())
                .with_kv_separation(Some(
                    fjall::KvSeparationOptions::default().compression(fjall::CompressionType::None),
                ))
        })?;
        let state = db.keyspace(STATE, KeyspaceCreateOptions::default)?;
        // One pass over the log at startup; the byte budget keeps the log, and this pass, bounded.
        let mut sizes = LogSizes::default();
        for guard in log.iter() {
            let (k, v) = guard.into_inner()?;
            // A key that is not 8 bytes is not ours; `entry()` and the readers refuse it later.
            if let Ok(k) = <[u8; 8]>::try_from(k.as_ref()) {
                sizes.push(u64::from_be_bytes(k), v.len() as u64);
            }
        }
        Ok(LogStore {
            db: db.clone(),
            log,
            state,
            sizes: Arc::new(Mutex::new(sizes)),
            appends: Arc::default(),
            progress: FlushProgress::default(),
        })
    }

    /// Runs `f` on the size index (a poisoned lock is recovered: the index is updated by whole
    /// operations only, so it is never left half-changed).
    pub fn sizes<R>(&self, f: impl FnOnce(&LogSizes) -> R) -> R {
        f(&self.sizes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// How long appends took: the journal write and its fsync, until the entries count as
    /// stored (failed appends included).
    pub fn append_timing(&self) -> &Timing {
        &self.appends
    }

    /// How far appends have got (started, fsynced), for whoever paces proposals by the disk.
    pub fn flush_progress(&self) -> FlushProgress {
        self.progress.clone()
    }

    fn sizes_mut(&self) -> std::sync::MutexGuard<'_, LogSizes> {
        self.sizes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get_state<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.state.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    fn put_state_synced<T: Serialize>(&self, key: &[u8], v: &T) -> Result<(), StorageError> {
        let mut b = self.db.batch();
        b.insert(&self.state, key, encode(v)?);
        b.durability(Some(PersistMode::SyncData)).commit().map_err(write_err)
    }

    /// The entry at `index`, if present.
    pub fn entry(&self, index: u64) -> Result<Option<Entry>, StorageError> {
        match self.log.get(index.to_be_bytes()).map_err(read_err)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Replaces the entry at `index` (synced). Only for fault-injection tools and tests: a
    /// running node never rewrites its log in place.
    pub fn overwrite(&self, entry: &Entry) -> Result<(), StorageError> {
        let v = encode(entry)?;
        let len = v.len() as u64;
        let mut b = self.db.batch();
        b.insert(&self.log, entry.log_id.index.to_be_bytes(), v);
        b.durability(Some(PersistMode::SyncData)).commit().map_err(write_err)?;
        let mut sizes = self.sizes_mut();
        if let Some(slot) = sizes.entries.iter_mut().find(|(i, _)| *i == entry.log_id.index) {
            let old = std::mem::replace(&mut slot.1, len);
            sizes.bytes = sizes.bytes - old + len;
        }
        Ok(())
    }

    /// Calls `visit` on each entry with `after < index <= upto` until it returns false.
    pub fn scan(&self, after: u64, upto: u64, visit: &mut dyn FnMut(&Entry) -> bool) -> Result<(), StorageError> {
        if after >= upto {
            return Ok(());
        }
        for guard in self.log.range((after + 1).to_be_bytes()..=upto.to_be_bytes()) {
            let (_, v) = guard.into_inner().map_err(read_err)?;
            let e: Entry = decode(&v)?;
            if !visit(&e) {
                break;
            }
        }
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.log.last_key_value() {
            Some(guard) => {
                let (_, v) = guard.into_inner().map_err(read_err)?;
                let e: Entry = decode(&v)?;
                Ok(Some(e.log_id))
            }
            None => Ok(None),
        }
    }

    fn remove_range(&self, from: u64, to_inclusive: u64, extra: Option<(&[u8], Vec<u8>)>) -> Result<(), StorageError> {
        let mut b = self.db.batch();
        for guard in self.log.range(from.to_be_bytes()..=to_inclusive.to_be_bytes()) {
            let k = guard.key().map_err(read_err)?;
            b.remove(&self.log, k);
        }
        if let Some((k, v)) = extra {
            b.insert(&self.state, k, v);
        }
        b.durability(Some(PersistMode::SyncData)).commit().map_err(write_err)
    }
}

fn bound_start(b: Bound<&u64>) -> u64 {
    match b {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    }
}

fn bound_end(b: Bound<&u64>) -> Option<u64> {
    match b {
        Bound::Included(x) => Some(*x),
        Bound::Excluded(0) => None,
        Bound::Excluded(x) => Some(x - 1),
        Bound::Unbounded => Some(u64::MAX),
    }
}

impl LogStore {
    /// Entries `start..=last` in order, stopping before the one that would take the total past
    /// `max_bytes` (the first entry always comes, however large).
    fn read_range(&self, start: u64, last: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        if start > last {
            return Ok(out);
        }
        let mut bytes = 0u64;
        for guard in self.log.range(start.to_be_bytes()..=last.to_be_bytes()) {
            let (_, v) = guard.into_inner().map_err(read_err)?;
            bytes = bytes.saturating_add(v.len() as u64);
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = bound_start(range.start_bound());
        let Some(last) = bound_end(range.end_bound()) else { return Ok(Vec::new()) };
        self.read_range(start, last, u64::MAX)
    }

    /// Replication's read: at most [`crate::MAX_APPEND_BYTES`] of entries (at least one), so
    /// an AppendEntries never outgrows the message limit or the RPC timeout.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let Some(last) = end.checked_sub(1) else { return Ok(Vec::new()) };
        self.read_range(start, last, crate::MAX_APPEND_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_state(PURGED)?;
        let last = self.last_entry_id()?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.put_state_synced(VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.get_state(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced on its own: it rides on the next synced append. A committed index that
        // lags after a crash only means openraft re-learns it from the leader.
        let mut b = self.db.batch();
        b.insert(&self.state, COMMITTED, encode(&committed)?);
        b.commit().map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_state::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut b = self.db.batch();
        let mut added = Vec::new();
        for e in entries {
            let v = encode(&e)?;
            added.push((e.log_id.index, v.len() as u64));
            b.insert(&self.log, e.log_id.index.to_be_bytes(), v);
        }
        let last = added.last().map(|&(i, _)| i);
        if let Some(last) = last {
            self.progress.started(last);
        }
        let started = Instant::now();
        let res = b.durability(Some(PersistMode::SyncData)).commit();
        self.appends.observe(started);
        match res {
            Ok(()) => {
                if let Some(last) = last {
                    self.progress.flushed_to(last);
                }
                {
                    let mut sizes = self.sizes_mut();
                    for (i, n) in added {
                        // openraft truncates before it appends over a conflict; this keeps the
                        // index right even if an append ever rewrote entries in place.
                        sizes.truncate(i);
                        sizes.push(i, n);
                    }
                }
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(msg)));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(log_id.index, u64::MAX, None)?;
        self.sizes_mut().truncate(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let v = encode(&log_id)?;
        self.remove_range(0, log_id.index, Some((PURGED, v)))?;
        self.sizes_mut().purge(log_id.index);
        Ok(())
    }
}

impl sealkv_crypto::guards::LogScanner for LogStore {
    fn scan(&self, after: u64, upto: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), String> {
        LogStore::scan(self, after, upto, &mut |e| match &e.payload {
            openraft::EntryPayload::Normal(p) => visit(e.log_id.index, &p.0),
            _ => true,
        })
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn sizes(entries: &[(u64, u64)]) -> LogSizes {
        let mut s = LogSizes::default();
        for &(i, b) in entries {
            s.push(i, b);
        }
        s
    }

    #[test]
    fn bytes_after_counts_only_what_a_snapshot_would_not_cover() {
        let s = sizes(&[(5, 10), (6, 20), (7, 40)]);
        assert_eq!(s.bytes_after(0), 70);
        assert_eq!(s.bytes_after(5), 60);
        assert_eq!(s.bytes_after(7), 0);
        assert_eq!(s.usage(), LogUsage { entries: 3, bytes: 70 });
    }

    #[test]
    fn the_purge_point_keeps_at_most_the_budget_below_the_snapshot() {
        let s = sizes(&[(1, 100), (2, 100), (3, 100), (4, 100), (5, 100)]);
        // Snapshot at 4: entries 4, 3 (200 bytes) fit in 250; 2 would not, so purge up to 2.
        assert_eq!(s.purge_point(4, 250), Some(2));
        assert_eq!(s.purge_point(4, 200), Some(2));
        assert_eq!(s.purge_point(4, 199), Some(3));
        // Everything at or below the snapshot fits: nothing to purge.
        assert_eq!(s.purge_point(4, 400), None);
        // A budget of 0 purges up to the snapshot itself, never past it.
        assert_eq!(s.purge_point(4, 0), Some(4));
        assert_eq!(s.purge_point(0, 0), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<u64>),
        Truncate(u64),
        Purge(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            prop::collection::vec(0u64..1000, 1..5).prop_map(Op::Append),
            (0u64..40).prop_map(Op::Truncate),
            (0u64..40).prop_map(Op::Purge),
        ]
    }

    proptest! {
        /// The index matches a plain map of what the log holds after any mix of appends,
        /// truncates and purges, as openraft issues them (appends continue at the next index).
        #[test]
        fn the_size_index_matches_a_model(ops in prop::collection::vec(op(), 1..40), snap in 0u64..40, keep in 0u64..3000) {
            let mut s = LogSizes::default();
            let mut model = BTreeMap::new();
            let mut next = 1u64;
            let mut purged = 0u64;
            for op in ops {
                match op {
                    Op::Append(lens) => {
                        for b in lens {
                            s.push(next, b);
                            model.insert(next, b);
                            next += 1;
                        }
                    }
                    Op::Truncate(from) => {
                        // openraft never truncates purged entries.
                        let from = from.max(purged + 1);
                        s.truncate(from);
                        model.retain(|i, _| *i < from);
                        next = next.min(from);
                    }
                    Op::Purge(upto) => {
                        s.purge(upto);
                        model.retain(|i, _| *i > upto);
                        purged = purged.max(upto);
                        next = next.max(upto + 1);
                    }
                }
            }
            let bytes: u64 = model.values().sum();
            prop_assert_eq!(s.usage(), LogUsage { entries: model.len() as u64, bytes });
            prop_assert_eq!(s.bytes_after(snap), model.range(snap + 1..).map(|(_, b)| b).sum::<u64>());
            // The purge point keeps within the budget, and keeping one more entry would not.
            match s.purge_point(snap, keep) {
                Some(p) => {
                    prop_assert!(p <= snap);
                    let kept: u64 = model.range(p + 1..).take_while(|(i, _)| **i <= snap).map(|(_, b)| b).sum();
                    prop_assert!(kept <= keep);
                    prop_assert!(kept + model[&p] > keep);
                }
                None => prop_assert!(model.range(..=snap).map(|(_, b)| b).sum::<u64>() <= keep),
            }
        }
    }

    fn entry(index: u64, len: usize) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Normal(crate::types::Payload(vec![7; len])),
        }
    }

    #[tokio::test]
    async fn replication_reads_at_most_the_append_budget_and_never_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let mut log = LogStore::open(&db).unwrap();
        for index in 1..=6 {
            log.overwrite(&entry(index, 1 << 20)).unwrap();
        }
        log.overwrite(&entry(7, 10 << 20)).unwrap();
        let got = |v: Vec<Entry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        // 1 MiB entries: three fit in 4 MiB with their framing, a fourth would not.
        assert_eq!(got(log.limited_get_log_entries(1, 8).await.unwrap()), vec![1, 2, 3]);
        assert_eq!(got(log.limited_get_log_entries(5, 8).await.unwrap()), vec![5, 6]);
        // An entry over the budget still goes, alone.
        assert_eq!(got(log.limited_get_log_entries(7, 8).await.unwrap()), vec![7]);
        assert!(log.limited_get_log_entries(3, 3).await.unwrap().is_empty());
        assert!(log.limited_get_log_entries(0, 0).await.unwrap().is_empty());
        // The unlimited read is untouched.
        assert_eq!(got(log.try_get_log_entries(1..8).await.unwrap()).len(), 7);
    }

    #[test]
    fn reopening_rebuilds_the_index_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let log = LogStore::open(&db).unwrap();
        for index in 1..=3u64 {
            log.overwrite(&entry(index, 100 * index as usize)).unwrap();
        }
        let before = log.sizes(|s| s.usage());
        assert_eq!(before.entries, 0, "overwrite only resizes entries it already indexes");
        drop(log);
        let log = LogStore::open(&db).unwrap();
        let usage = log.sizes(|s| s.usage());
        assert_eq!(usage.entries, 3);
        assert!(usage.bytes >= 600, "{usage:?}");
        let third = log.sizes(|s| s.bytes_after(2));
        assert!((300..400).contains(&third), "entry 3 carries 300 payload bytes: {third}");
    }
}
