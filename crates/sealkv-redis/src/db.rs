//! What commands run against: the apply batch during apply (reads see the batch's own earlier
//! writes; writes are sealed by the store at the entry's timestamp), or a read-only view of the
//! applied store on the leader after a read barrier.

use std::cell::RefCell;
use std::ops::Bound;

use sealkv_store::{ApplyBatch, Direction, KeyRange, Savepoint, Store, StoreError, Version};

use crate::layout::{self, CountDelta, Counts};

/// A failure of the store underneath a command: during apply it halts; on a read it is an error
/// reply. Never a wrong answer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The store failed (an integrity error among them).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A meta record did not decode.
    #[error(transparent)]
    Meta(#[from] crate::layout::CorruptMeta),
    /// A write reached a read-only view (a command table bug, refused rather than dropped).
    #[error("write through a read-only view")]
    ReadOnly,
}

/// A live value and its expiry (0 = none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The value.
    pub value: Vec<u8>,
    /// Unix ms at which it expires, 0 for never.
    pub expire_at_ms: u64,
}

/// Scan results.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), DbError>> + 'a>;

/// The store as commands see it.
pub trait Db {
    /// The time expiry is judged against: the entry's timestamp during apply (the same on every
    /// replica), the wall clock on a read.
    fn now_ms(&self) -> u64;
    /// A seed for commands that pick at random (SPOP): derived from the entry during apply, so
    /// every replica picks the same members.
    fn seed(&self) -> u64;
    /// The newest live value of a store key, expired or not; `None` if absent or deleted.
    fn get(&self, key: &[u8]) -> Result<Option<Stored>, DbError>;
    /// What WATCH records and EXEC compares for a store key: the commit timestamp of its newest
    /// version (deletes included, so a SET then DEL of a watched absent key still counts), 0 if
    /// it has none or if that version has expired at [`Db::now_ms`]. So a key whose TTL runs out
    /// between WATCH and EXEC aborts EXEC, as in Redis, and one expired at WATCH does not.
    fn version(&self, key: &[u8]) -> Result<u64, DbError>;
    /// Live store keys in a range, in order or reverse.
    fn scan(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, reverse: bool) -> ScanIter<'_>;
    /// Writes a value.
    fn put(&mut self, key: &[u8], value: &[u8], expire_at_ms: u64) -> Result<(), DbError>;
    /// Deletes a value.
    fn delete(&mut self, key: &[u8]) -> Result<(), DbError>;
    /// Removes every record of the Redis keyspace and leaves the counts at zero (FLUSHALL): one
    /// pass over the store keys, none of them looked up or counted on its way out.
    fn clear(&mut self) -> Result<(), DbError>;
    /// Whether writes are allowed (false on a read view).
    fn writable(&self) -> bool;
    /// The keyspace counts as this view sees them (see [`Counts`]): the record, during apply
    /// moved by the entry's writes so far; a count of the meta records if there is no record.
    fn counts(&self) -> Result<Counts, DbError>;
    /// Marks where a command's writes begin. Why: a command whose later write the store refuses
    /// ([`StoreError::is_refusal`]) must leave nothing of its earlier writes, on every replica.
    fn mark(&mut self) -> Mark;
    /// Takes back every write made since `mark`.
    fn undo(&mut self, mark: Mark);
    /// Keeps the writes made since `mark`.
    fn keep(&mut self, mark: Mark);
}

/// Where a command's writes began ([`Db::mark`]): the batch's savepoint and the counts then.
/// Empty on a read view, which writes nothing.
#[must_use = "a mark is closed by Db::undo or Db::keep"]
pub struct Mark(Option<(Savepoint, CountDelta)>);

impl Mark {
    /// No mark: the command's writes cannot be taken back.
    pub const NONE: Mark = Mark(None);
}

fn stored(v: Option<Version>) -> Option<Stored> {
    v.and_then(|v| v.value).map(|(value, expire_at_ms)| Stored { value, expire_at_ms })
}

fn watch_version(v: Option<Version>, now_ms: u64) -> u64 {
    match v {
        Some(Version { value: Some((_, expire_at_ms)), .. }) if !sealkv_store::live_at(expire_at_ms, now_ms) => 0,
        Some(v) => v.ts,
        None => 0,
    }
}

fn direction(reverse: bool) -> Direction {
    if reverse { Direction::Reverse } else { Direction::Forward }
}

/// Commands applied inside one Raft entry.
///
/// Every write of a meta record passes through here, so this is where the keyspace counts
/// ([`Counts`]) are kept: each put or delete of a meta record adds its change to the entry's
/// [`CountDelta`], and [`settle_counts`] writes the new counts once per entry.
pub struct BatchDb<'a, 'b> {
    batch: &'a mut ApplyBatch<'b>,
    ts: u64,
    seed: u64,
    delta: &'a mut CountDelta,
    /// The last meta record read or written, so the write that follows a command's lookup of the
    /// same key counts without a second read.
    last_meta: RefCell<LastMeta>,
}

impl<'a, 'b> BatchDb<'a, 'b> {
    /// Writes at commit timestamp `ts` (HLC: its upper 48 bits are the entry's ms); `seed` feeds
    /// random picks and must be derived from the entry alone. Meta writes are counted in `delta`.
    pub fn new(batch: &'a mut ApplyBatch<'b>, ts: u64, seed: u64, delta: &'a mut CountDelta) -> Self {
        BatchDb { batch, ts, seed, delta, last_meta: RefCell::new(LastMeta::default()) }
    }

    /// Counts a meta record's change to `after` (`None`: deleted, else its expiry).
    fn count_meta(&mut self, key: &[u8], after: Option<u64>) -> Result<(), DbError> {
        let before = match self.last_meta.get_mut().state_of(key) {
            Some(state) => state,
            None => presence(self.batch.latest(key)?),
        };
        self.delta.record(before, after);
        self.last_meta.get_mut().set(key, after);
        Ok(())
    }
}

/// One meta record's state: its store key (the buffer is reused, so noting costs no allocation)
/// and `None` if absent, else its expiry. Empty until the first note.
#[derive(Default)]
struct LastMeta {
    key: Vec<u8>,
    state: Option<Option<u64>>,
}

impl LastMeta {
    fn set(&mut self, key: &[u8], state: Option<u64>) {
        self.key.clear();
        self.key.extend_from_slice(key);
        self.state = Some(state);
    }

    /// The noted state if `key` is the noted key.
    fn state_of(&self, key: &[u8]) -> Option<Option<u64>> {
        self.state.filter(|_| self.key == key)
    }
}

/// `None` if a version is absent or a tombstone, else its expiry.
fn presence(v: Option<Version>) -> Option<u64> {
    v.and_then(|v| v.value).map(|(_, expire_at_ms)| expire_at_ms)
}

/// Writes the keyspace counts an entry's writes moved by `delta`, once per entry (nothing when
/// they did not move). A store without the record (written before counts were kept, or after
/// FLUSHALL removed it) counts its meta records once, this entry's writes included. Counts that
/// do not decode or would become impossible halt the apply, like any corrupt record.
pub fn settle_counts(batch: &mut ApplyBatch<'_>, ts: u64, delta: CountDelta) -> Result<(), DbError> {
    if delta.is_zero() {
        return Ok(());
    }
    let mut delta = delta;
    let counts = BatchDb::new(batch, ts, 0, &mut delta).counts()?;
    batch.put(&layout::counts_key(), ts, &counts.encode(), 0)?;
    Ok(())
}

/// The counts record if the store has one.
fn counts_record(db: &dyn Db) -> Result<Option<Counts>, DbError> {
    Ok(db.get(&layout::counts_key())?.map(|s| Counts::decode(&s.value)).transpose()?)
}

/// Counts the meta records `db` shows, and the expiry index entries from `from_ms` on that match
/// their key's expiry (an entry a later write left stale is not counted): a scan of the keys and
/// point reads of the volatile ones only.
fn count_by_scan(db: &dyn Db, from_ms: u64) -> Result<Counts, DbError> {
    let (lo, hi) = layout::meta_range(b"");
    let mut c = Counts::default();
    for r in db.scan(lo, hi, false) {
        r?;
        c.keys += 1;
    }
    let lo = Bound::Included(layout::expiry_key(from_ms, b""));
    let (_, hi) = layout::expiry_due(u64::MAX - 1);
    for r in db.scan(lo, hi, false) {
        let (k, _) = r?;
        if let Some((at, key)) = layout::split_expiry(&k)
            && db.get(&layout::meta_key(key))?.is_some_and(|s| s.expire_at_ms == at)
        {
            c.expires += 1;
        }
    }
    Ok(c)
}

impl Db for BatchDb<'_, '_> {
    fn now_ms(&self) -> u64 {
        self.ts >> 16
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn get(&self, key: &[u8]) -> Result<Option<Stored>, DbError> {
        let s = stored(self.batch.latest(key)?);
        if layout::is_meta(key) {
            self.last_meta.borrow_mut().set(key, s.as_ref().map(|s| s.expire_at_ms));
        }
        Ok(s)
    }

    fn version(&self, key: &[u8]) -> Result<u64, DbError> {
        Ok(watch_version(self.batch.latest(key)?, self.now_ms()))
    }

    fn scan(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, reverse: bool) -> ScanIter<'_> {
        Box::new(self.batch.scan_latest(lo, hi, direction(reverse)).map(|r| r.map_err(DbError::from)))
    }

    fn put(&mut self, key: &[u8], value: &[u8], expire_at_ms: u64) -> Result<(), DbError> {
        if layout::is_meta(key) {
            self.count_meta(key, Some(expire_at_ms))?;
        }
        Ok(self.batch.put(key, self.ts, value, expire_at_ms)?)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), DbError> {
        if layout::is_meta(key) {
            self.count_meta(key, None)?;
        }
        Ok(self.batch.delete(key, self.ts)?)
    }

    fn clear(&mut self) -> Result<(), DbError> {
        let (lo, hi) = layout::everything();
        let keys: Vec<Vec<u8>> =
            self.batch.scan_latest(lo, hi, Direction::Forward).map(|r| r.map(|(k, _)| k)).collect::<Result<_, _>>()?;
        self.batch.reserve(keys.len());
        for k in keys {
            self.batch.delete(&k, self.ts)?;
        }
        // Whatever the entry wrote before is gone too, so its counts restart from an explicit zero
        // record; without one, the entry's settling (and every later read) would count the keys by
        // a scan past every tombstone just written.
        *self.delta = CountDelta::default();
        *self.last_meta.get_mut() = LastMeta::default();
        self.batch.put(&layout::counts_key(), self.ts, &Counts::default().encode(), 0)?;
        Ok(())
    }

    fn writable(&self) -> bool {
        true
    }

    fn counts(&self) -> Result<Counts, DbError> {
        match counts_record(self)? {
            Some(c) => Ok(c.shifted(*self.delta).ok_or(layout::CorruptMeta("counts out of range"))?),
            // A scan of the batch already shows the entry's own writes, and expired keys.
            None => count_by_scan(self, 0),
        }
    }

    fn mark(&mut self) -> Mark {
        Mark(Some((self.batch.savepoint(), *self.delta)))
    }

    fn undo(&mut self, mark: Mark) {
        if let Mark(Some((sp, delta))) = mark {
            self.batch.rollback_to(sp);
            *self.delta = delta;
            // It may name a state the undone writes left; the next lookup reads it again.
            *self.last_meta.get_mut() = LastMeta::default();
        }
    }

    fn keep(&mut self, mark: Mark) {
        if let Mark(Some((sp, _))) = mark {
            self.batch.release(sp);
        }
    }
}

/// A read-only view of the applied store at one timestamp, so a multi-key read sees one cut.
pub struct ReadDb<'a> {
    store: &'a Store,
    read_ts: u64,
    now_ms: u64,
    seed: u64,
}

impl<'a> ReadDb<'a> {
    /// A view of everything applied so far, judged at `now_ms`.
    pub fn new(store: &'a Store, now_ms: u64, seed: u64) -> Self {
        ReadDb { store, read_ts: store.max_committed_ts(), now_ms, seed }
    }
}

impl Db for ReadDb<'_> {
    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn get(&self, key: &[u8]) -> Result<Option<Stored>, DbError> {
        Ok(stored(self.store.version(key, self.read_ts)?))
    }

    fn version(&self, key: &[u8]) -> Result<u64, DbError> {
        Ok(watch_version(self.store.version(key, self.read_ts)?, self.now_ms))
    }

    fn scan(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, reverse: bool) -> ScanIter<'_> {
        let range = KeyRange::Bounds(lo, hi);
        // The store hides values expired at `now_ms`: expired keys never show in a read scan.
        Box::new(
            self.store.scan(&range, self.read_ts, self.now_ms, direction(reverse)).map(|r| r.map_err(DbError::from)),
        )
    }

    fn put(&mut self, _: &[u8], _: &[u8], _: u64) -> Result<(), DbError> {
        Err(DbError::ReadOnly)
    }

    fn delete(&mut self, _: &[u8]) -> Result<(), DbError> {
        Err(DbError::ReadOnly)
    }

    fn clear(&mut self) -> Result<(), DbError> {
        Err(DbError::ReadOnly)
    }

    fn writable(&self) -> bool {
        false
    }

    fn counts(&self) -> Result<Counts, DbError> {
        // Without a record the scan hides expired keys, so only expiries still ahead count: only a
        // store that has not had a write since counts were kept reads this way.
        counts_record(self)?.map_or_else(|| count_by_scan(self, self.now_ms.saturating_add(1)), Ok)
    }

    fn mark(&mut self) -> Mark {
        Mark::NONE
    }

    fn undo(&mut self, _: Mark) {}

    fn keep(&mut self, _: Mark) {}
}
