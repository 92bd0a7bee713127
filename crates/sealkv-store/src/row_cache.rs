//! The row cache: each recently read or written key's newest version, or the fact that the key
//! has no version at all.
//!
//! Why it exists: a point read is two LSM lookups (the newest-version index, then the version),
//! and each walks memtable skiplists, bloom filters and table index blocks. On a read-heavy
//! leader those lookups were ~75% of all CPU; serving a hot key from here skips both. Writes
//! gain as well: an apply reads its key's metadata first (a list's length before LPUSH, a
//! counter before INCR), and the write it just committed is what the next one reads.
//!
//! What it holds ([`CachedRow`]): by default the opened value, so a hit is a copy and no decrypt.
//! Why: on an encrypted store, opening 1 KiB on every hit cost a hot GET about a fifth more CPU
//! than a cleartext one, while the process that answers already holds the DEKs that open every
//! byte on disk; the plaintext lives in memory only, like the block caches of the stores whose
//! at-rest encryption works below the cache (docs/storage.md, Row cache). An operator who wants
//! no plaintext kept between requests sets `row_cache_sealed`: the cache then holds the stored
//! bytes, and every hit is opened by the same [`crate::seal::Crypto::open`] as a read from disk.
//! Either way a hit answers exactly what the LSM would: an opened row was verified when it was
//! read, or is what this node's apply just wrote.
//!
//! Why it is never stale: it caches only the newest version overall, and every writer of the
//! data keyspace updates or drops a key's entry after its commit. A reader that missed may fill
//! the entry only if no writer touched the key's shard since the miss ([`Ticket`]): otherwise it
//! might store what it read just before a commit, over the writer's update.
//!
//! Bounded: entries are charged their key, value and bookkeeping bytes against a budget split
//! across shards, evicted in CLOCK order (a read or an overwrite marks an entry; eviction spares
//! a marked entry once).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fjall::Slice;

/// Shards: enough that readers on different keys rarely share a lock, and that a write only
/// blocks fills of a sixteenth of the keys.
const SHARDS: usize = 16;
/// Bookkeeping bytes charged per map entry (hash slot, slot struct, key Arc header).
const ENTRY_OVERHEAD: usize = 96;
/// Bookkeeping bytes charged per eviction-queue entry (queue slot, key Arc reference).
const QUEUE_OVERHEAD: usize = 32;

/// What the cache knows about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cached {
    /// The key has no version at all (never written, or every version collected).
    Absent,
    /// The newest version: its commit timestamp and its row.
    Newest {
        /// Commit timestamp.
        ts: u64,
        /// The version, opened or as stored.
        row: CachedRow,
    },
}

/// A newest version as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CachedRow {
    /// Opened: the value and its expiry (unix ms, 0 for none), or `None` for a tombstone.
    Open(Option<(Slice, u64)>),
    /// Exactly what the data keyspace holds (sealed when the envelope is on); opened on every hit.
    Stored(Slice),
}

impl Cached {
    fn cost(&self) -> usize {
        match self {
            Cached::Absent | Cached::Newest { row: CachedRow::Open(None), .. } => 0,
            Cached::Newest { row: CachedRow::Open(Some((value, _))), .. } => value.len(),
            Cached::Newest { row: CachedRow::Stored(stored), .. } => stored.len(),
        }
    }
}

/// A miss's permission to fill: valid while no writer touched the key's shard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    shard: usize,
    generation: u64,
}

/// A lookup's answer.
pub(crate) enum Lookup {
    Hit(Cached),
    Miss(Ticket),
}

/// Hit and miss counts since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to the LSM.
    pub misses: u64,
    /// Bytes charged to live entries and the eviction queue.
    pub bytes: u64,
}

pub(crate) struct RowCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    shard_budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Shard {
    /// Bumped by every writer; a fill with an older ticket is refused.
    generation: u64,
    map: HashMap<Arc<[u8]>, Slot>,
    /// CLOCK order: `(key, slot id)`; an id no longer in the map is a dropped entry's leftover.
    queue: VecDeque<(Arc<[u8]>, u64)>,
    next_id: u64,
    bytes: usize,
}

struct Slot {
    value: Cached,
    id: u64,
    referenced: bool,
}

impl RowCache {
    /// A cache of at most about `budget_bytes`; 0 disables it (every lookup misses, nothing fills).
    pub(crate) fn new(budget_bytes: u64) -> RowCache {
        let shards = if budget_bytes == 0 { 0 } else { SHARDS };
        RowCache {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            shard_budget: usize::try_from(budget_bytes).unwrap_or(usize::MAX) / SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The shard of `prefix`, locked. `None` when the cache is disabled.
    fn shard(&self, prefix: &[u8]) -> Option<(usize, MutexGuard<'_, Shard>)> {
        if self.shards.is_empty() {
            return None;
        }
        let i = (self.hasher.hash_one(prefix) as usize) % self.shards.len();
        // A panic while holding a shard leaves at worst a half-updated CLOCK queue (the map is
        // updated in single statements), which is still a valid cache.
        let shard = self.shards.get(i)?.lock().unwrap_or_else(|p| p.into_inner());
        Some((i, shard))
    }

    /// Looks `prefix` up; a miss carries the ticket a later [`RowCache::fill`] needs.
    pub(crate) fn get(&self, prefix: &[u8]) -> Lookup {
        let Some((i, mut shard)) = self.shard(prefix) else {
            return Lookup::Miss(Ticket { shard: usize::MAX, generation: 0 });
        };
        if let Some(slot) = shard.map.get_mut(prefix) {
            slot.referenced = true;
            let value = slot.value.clone();
            drop(shard);
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Hit(value);
        }
        let generation = shard.generation;
        drop(shard);
        self.misses.fetch_add(1, Ordering::Relaxed);
        Lookup::Miss(Ticket { shard: i, generation })
    }

    /// Stores what a reader found after `ticket`'s miss, unless a writer touched the shard since:
    /// then the read may predate a commit, and the writer's own update must stand.
    pub(crate) fn fill(&self, prefix: &[u8], ticket: Ticket, value: Cached) {
        let Some((i, mut shard)) = self.shard(prefix) else { return };
        if i == ticket.shard && shard.generation == ticket.generation {
            shard.insert(prefix, value, self.shard_budget);
        }
    }

    /// A writer's update after its commit: `value` is now the key's newest version.
    pub(crate) fn put(&self, prefix: &[u8], value: Cached) {
        let Some((_, mut shard)) = self.shard(prefix) else { return };
        shard.generation += 1;
        shard.insert(prefix, value, self.shard_budget);
    }

    /// Whether an entry of this size would be kept, so a caller can skip building one that would
    /// be refused (the cache is off, or the value is too big for its shard).
    pub(crate) fn admits(&self, prefix_len: usize, value_len: usize) -> bool {
        !self.shards.is_empty() && fits(prefix_len, value_len, self.shard_budget)
    }

    /// A writer's drop after its commit, when it cannot say what the newest version now is.
    pub(crate) fn invalidate(&self, prefix: &[u8]) {
        let Some((_, mut shard)) = self.shard(prefix) else { return };
        shard.generation += 1;
        shard.remove(prefix);
    }

    /// Drops everything (after a wipe or a snapshot install replaced the whole keyspace).
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let generation = shard.generation + 1;
            *shard = Shard { generation, next_id: shard.next_id, ..Shard::default() };
        }
    }

    pub(crate) fn stats(&self) -> RowCacheStats {
        let bytes = self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).bytes as u64).sum();
        RowCacheStats { hits: self.hits.load(Ordering::Relaxed), misses: self.misses.load(Ordering::Relaxed), bytes }
    }
}

impl crate::store::Store {
    /// Drops the row cache entries of keys whose newest version a committed batch removed or
    /// changed (GC, rewrite).
    pub(crate) fn invalidate_rows(&self, prefixes: &mut Vec<Slice>) {
        for prefix in prefixes.drain(..) {
            self.rows.invalidate(&prefix);
        }
    }
}

/// Whether an entry fits its shard: one entry may take at most a quarter of it, so a big value
/// never evicts most of what is hot.
fn fits(prefix_len: usize, value_len: usize, budget: usize) -> bool {
    ENTRY_OVERHEAD + QUEUE_OVERHEAD + 2 * prefix_len + value_len <= budget / 4
}

impl Shard {
    fn insert(&mut self, prefix: &[u8], value: Cached, budget: usize) {
        let cost = ENTRY_OVERHEAD + prefix.len() + value.cost();
        let queued = QUEUE_OVERHEAD + prefix.len();
        if !fits(prefix.len(), value.cost(), budget) {
            // Too big to be worth what it would evict; what was cached under the key is stale now.
            self.remove(prefix);
            return;
        }
        if let Some(slot) = self.map.get_mut(prefix) {
            // An overwrite keeps the key's place in the CLOCK queue, marked as a read marks it,
            // instead of queueing the key again. Why: every write of a cached key used to leave a
            // leftover queue entry and its own copy of the key, charged to the budget until a
            // sweep reached it, so a write-heavy load on cached keys spent budget that live
            // entries could have held, and allocated a key on every write.
            self.bytes = self.bytes - slot.value.cost() + value.cost();
            slot.value = value;
            slot.referenced = true;
            self.evict(budget);
            return;
        }
        let key: Arc<[u8]> = Arc::from(prefix);
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back((key.clone(), id));
        self.map.insert(key, Slot { value, id, referenced: false });
        self.bytes += cost + queued;
        self.evict(budget);
    }

    fn remove(&mut self, prefix: &[u8]) {
        if let Some(slot) = self.map.remove(prefix) {
            // Its queue entry stays (and stays charged) until eviction reaches it.
            self.bytes -= ENTRY_OVERHEAD + prefix.len() + slot.value.cost();
        }
    }

    /// CLOCK: pops the queue's front until the shard fits; a referenced entry goes to the back
    /// once, unmarked.
    fn evict(&mut self, budget: usize) {
        while self.bytes > budget {
            let Some((key, id)) = self.queue.pop_front() else { return };
            match self.map.get_mut(&key) {
                Some(slot) if slot.id == id && slot.referenced => {
                    slot.referenced = false;
                    self.queue.push_back((key, id));
                }
                Some(slot) if slot.id == id => {
                    self.bytes -= QUEUE_OVERHEAD + key.len();
                    self.remove(&key);
                }
                _ => self.bytes -= QUEUE_OVERHEAD + key.len(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newest(ts: u64, bytes: &[u8]) -> Cached {
        Cached::Newest { ts, row: CachedRow::Open(Some((Slice::from(bytes), 0))) }
    }

    fn hit(c: &RowCache, k: &[u8]) -> Option<Cached> {
        match c.get(k) {
            Lookup::Hit(v) => Some(v),
            Lookup::Miss(_) => None,
        }
    }

    fn ticket(c: &RowCache, k: &[u8]) -> Ticket {
        match c.get(k) {
            Lookup::Miss(t) => t,
            Lookup::Hit(_) => panic!("expected a miss"),
        }
    }

    #[test]
    fn fill_after_miss_then_hit() {
        let c = RowCache::new(1 << 20);
        let t = ticket(&c, b"k");
        c.fill(b"k", t, newest(5, b"v"));
        assert_eq!(hit(&c, b"k"), Some(newest(5, b"v")));
        let t = ticket(&c, b"gone");
        c.fill(b"gone", t, Cached::Absent);
        assert_eq!(hit(&c, b"gone"), Some(Cached::Absent));
        assert_eq!(c.stats().hits, 2);
        assert_eq!(c.stats().misses, 2);
    }

    #[test]
    fn a_write_after_the_miss_refuses_the_fill() {
        let c = RowCache::new(1 << 20);
        // A reader misses and reads version 5 from the LSM...
        let t = ticket(&c, b"k");
        // ...a writer commits version 6 and updates the cache...
        c.put(b"k", newest(6, b"new"));
        // ...and the reader's late fill must not put version 5 back.
        c.fill(b"k", t, newest(5, b"old"));
        assert_eq!(hit(&c, b"k"), Some(newest(6, b"new")));

        let t = ticket(&c, b"j");
        c.invalidate(b"j");
        c.fill(b"j", t, Cached::Absent);
        assert_eq!(hit(&c, b"j"), None, "an invalidation between miss and fill also refuses it");

        let t = ticket(&c, b"i");
        c.clear();
        c.fill(b"i", t, Cached::Absent);
        assert_eq!(hit(&c, b"i"), None, "so does a clear");
    }

    #[test]
    fn invalidate_and_clear_drop_entries() {
        let c = RowCache::new(1 << 20);
        c.put(b"a", newest(1, b"x"));
        c.put(b"b", newest(1, b"y"));
        c.invalidate(b"a");
        assert_eq!(hit(&c, b"a"), None);
        assert_eq!(hit(&c, b"b"), Some(newest(1, b"y")));
        c.clear();
        assert_eq!(hit(&c, b"b"), None);
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn stays_within_budget_and_spares_read_entries() {
        let budget = 64 << 10;
        let c = RowCache::new(budget);
        let value = vec![7u8; 512];
        c.put(b"hot", newest(1, &value));
        for i in 0..2_000u32 {
            c.put(&i.to_be_bytes(), newest(1, &value));
            // Reading the hot key between writes keeps it through every CLOCK sweep.
            assert!(hit(&c, b"hot").is_some(), "hot key evicted after {i} writes");
            assert!(c.stats().bytes <= budget, "over budget after {i} writes");
        }
        assert!(hit(&c, &0u32.to_be_bytes()).is_none(), "the oldest unread entry was evicted");
    }

    #[test]
    fn replacing_and_invalidating_keeps_the_charge_exact() {
        let c = RowCache::new(1 << 20);
        for ts in 0..1_000 {
            c.put(b"k", newest(ts, &[0u8; 100]));
            c.invalidate(b"k");
        }
        // Leftover queue entries stay charged until evicted, so churn cannot grow memory unseen.
        let charged = c.stats().bytes as usize;
        assert_eq!(charged, 1_000 * (QUEUE_OVERHEAD + 1));
        c.put(b"k", newest(0, &[0u8; 100]));
        assert_eq!(c.stats().bytes as usize, charged + QUEUE_OVERHEAD + 1 + ENTRY_OVERHEAD + 1 + 100);
    }

    #[test]
    fn overwriting_a_cached_key_keeps_one_queue_entry_and_an_exact_charge() {
        let c = RowCache::new(1 << 20);
        for ts in 0..1_000 {
            c.put(b"k", newest(ts, &[0u8; 100]));
        }
        let one = QUEUE_OVERHEAD + 1 + ENTRY_OVERHEAD + 1;
        assert_eq!(c.stats().bytes as usize, one + 100);
        c.put(b"k", newest(1_000, &[0u8; 300]));
        assert_eq!(c.stats().bytes as usize, one + 300);
        assert_eq!(hit(&c, b"k"), Some(newest(1_000, &[0u8; 300])));
        let queued: usize = c.shards.iter().map(|s| s.lock().unwrap().queue.len()).sum();
        assert_eq!(queued, 1, "the overwrites queued the key again");
    }

    #[test]
    fn an_overwritten_key_is_spared_once_like_a_read_one() {
        // Four entries of 512-byte values fit a shard (642 to 648 bytes each with their keys), a
        // fifth does not; every key is in the shard of "w".
        let c = RowCache::new(SHARDS as u64 * 2600);
        let shard_of = |k: &[u8]| (c.hasher.hash_one(k) as usize) % SHARDS;
        let keys: Vec<Vec<u8>> =
            (0u32..).map(|i| i.to_be_bytes().to_vec()).filter(|k| shard_of(k) == shard_of(b"w")).take(4).collect();
        let value = [1u8; 512];
        c.put(b"w", newest(1, &value));
        c.put(&keys[0], newest(1, &value));
        c.put(&keys[1], newest(1, &value));
        // Rewritten, so the next sweep passes over it once.
        c.put(b"w", newest(2, &value));
        for k in &keys[2..4] {
            c.put(k, newest(1, &value));
        }
        assert_eq!(hit(&c, &keys[1]), Some(newest(1, &value)));
        assert_eq!(hit(&c, b"w"), Some(newest(2, &value)), "the rewritten key was evicted first");
        assert_eq!(hit(&c, &keys[0]), None, "the oldest untouched key is the one evicted");
    }

    #[test]
    fn an_entry_too_big_for_its_shard_is_not_cached_and_drops_the_old_one() {
        let c = RowCache::new(SHARDS as u64 * 4096);
        c.put(b"k", newest(1, b"small"));
        c.put(b"k", newest(2, &[0u8; 2048]));
        assert_eq!(hit(&c, b"k"), None);
    }

    #[test]
    fn a_zero_budget_disables_the_cache() {
        let c = RowCache::new(0);
        c.put(b"k", newest(1, b"v"));
        let t = ticket(&c, b"k");
        c.fill(b"k", t, Cached::Absent);
        assert_eq!(hit(&c, b"k"), None);
    }
}
