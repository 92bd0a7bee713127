//! The Raft log in fjall: keyspace `raft_log` (big-endian index → bincode entry) and
//! `raft_state` (vote, committed, last purged), in the store's own database.
//!
//! Sharing the database means sharing the journal: the synced batch of a log append also makes
//! every earlier (buffered) apply batch durable, so the state machine never pays for its own
//! fsync (spec 04). Every mutation here is one batch committed with `SyncData` before it is
//! acknowledged: append before `log_io_completed`, the vote before `save_vote` returns, and
//! truncate and purge as one atomic batch each.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::types::{Entry, LogId, StorageError, TypeConfig};

const LOG: &str = "raft_log";
const STATE: &str = "raft_state";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"last_purged";

/// The log store. Cheap to clone: readers share the keyspaces.
#[derive(Clone)]
pub struct LogStore {
    db: Database,
    log: Keyspace,
    state: Keyspace,
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
        // Raft payloads are ciphertext after the cutover; block compression would only cost CPU.
        let log = db.keyspace(LOG, || {
            KeyspaceCreateOptions::default().data_block_compression_policy(fjall::config::CompressionPolicy::disabled())
        })?;
        let state = db.keyspace(STATE, KeyspaceCreateOptions::default)?;
        Ok(LogStore { db: db.clone(), log, state })
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
        let mut b = self.db.batch();
        b.insert(&self.log, entry.log_id.index.to_be_bytes(), encode(entry)?);
        b.durability(Some(PersistMode::SyncData)).commit().map_err(write_err)
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

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = bound_start(range.start_bound());
        let Some(end) = bound_end(range.end_bound()) else { return Ok(Vec::new()) };
        if start > end {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for guard in self.log.range(start.to_be_bytes()..=end.to_be_bytes()) {
            let (_, v) = guard.into_inner().map_err(read_err)?;
            out.push(decode(&v)?);
        }
        Ok(out)
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
        for e in entries {
            b.insert(&self.log, e.log_id.index.to_be_bytes(), encode(&e)?);
        }
        let res = b.durability(Some(PersistMode::SyncData)).commit();
        match res {
            Ok(()) => {
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
        self.remove_range(log_id.index, u64::MAX, None)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let v = encode(&log_id)?;
        self.remove_range(0, log_id.index, Some((PURGED, v)))
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
