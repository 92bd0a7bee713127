//! The row cache never answers differently from the LSM under it: every writer of the data
//! keyspace (apply, GC, rewrite, snapshot install, wipe) updates or drops what it caches, and a
//! reader racing a writer never puts an older version back. Both kinds of cache are checked: the
//! default, which keeps versions opened, and `row_cache_sealed`, which keeps them as stored and
//! opens every hit.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sealkv_crypto::Purpose;
use sealkv_store::{Durability, RewriteOptions, RewriteTarget, Store, StoreOptions, Version};

use common::*;

fn value_of(store: &Store, key: &[u8], read_ts: u64) -> Option<(u64, Option<Vec<u8>>)> {
    store.version(key, read_ts).unwrap().map(|Version { ts, value }| (ts, value.map(|(v, _)| v)))
}

/// An encrypted store's files opened with the given kind of row cache (which starts empty).
fn reopen_with_cache(path: &std::path::Path, keys: &Arc<sealkv_crypto::Keystore>, sealed: bool, bytes: u64) -> Store {
    let opts = StoreOptions {
        keystore: keys.clone(),
        encryption_enabled: true,
        row_cache_bytes: bytes,
        row_cache_sealed: sealed,
        ..StoreOptions::default()
    };
    Store::open(path, opts).unwrap()
}

/// An encrypted store sealing under `DEK_A` from birth, with the given kind of row cache.
fn open_with_cache(path: &std::path::Path, keys: &Arc<sealkv_crypto::Keystore>, sealed: bool, bytes: u64) -> Store {
    let store = reopen_with_cache(path, keys, sealed, bytes);
    store.set_sealer(Some(sealer(keys, DEK_A)));
    enable(&store, 1);
    store
}

#[test]
fn hot_reads_are_hits_and_older_read_timestamps_still_see_older_versions() {
    for sealed in [false, true] {
        hot_reads(sealed);
    }
}

fn hot_reads(sealed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open_with_cache(dir.path(), &keys, sealed, 256 << 20);
    put(&store, 2, b"k", 10, b"old", 0);
    put(&store, 3, b"k", 20, b"new", 0);
    let before = store.row_cache_stats();
    for _ in 0..5 {
        assert_eq!(value_of(&store, b"k", u64::MAX), Some((20, Some(b"new".to_vec()))));
    }
    assert_eq!(store.row_cache_stats().hits - before.hits, 5, "the write left its version in the cache");
    // The cached newest version is after the read timestamp: the LSM answers.
    assert_eq!(value_of(&store, b"k", 15), Some((10, Some(b"old".to_vec()))));
    assert_eq!(value_of(&store, b"k", 5), None);
    // A key never written is cached as absent, and a write replaces that.
    assert_eq!(value_of(&store, b"fresh", u64::MAX), None);
    let hits = store.row_cache_stats().hits;
    assert_eq!(value_of(&store, b"fresh", u64::MAX), None);
    assert_eq!(store.row_cache_stats().hits, hits + 1, "absence is cached");
    put(&store, 4, b"fresh", 30, b"now", 0);
    assert_eq!(value_of(&store, b"fresh", u64::MAX), Some((30, Some(b"now".to_vec()))));
    // Expiry and tombstones come back from a hit as the LSM has them.
    put(&store, 5, b"ttl", 40, b"short", 12_345);
    assert_eq!(store.version(b"ttl", u64::MAX).unwrap().unwrap().value, Some((b"short".to_vec(), 12_345)));
    delete(&store, 6, b"ttl", 50);
    let hits = store.row_cache_stats().hits;
    assert_eq!(value_of(&store, b"ttl", u64::MAX), Some((50, None)));
    assert_eq!(store.row_cache_stats().hits, hits + 1, "the tombstone is cached");
}

/// What each kind of cache holds, shown by taking the DEK away: a hit on an opened row needs no
/// key, while a sealed row is opened on every hit and stops opening. A miss goes to disk and
/// needs the key either way.
#[test]
fn opened_rows_answer_without_a_decrypt_and_sealed_rows_open_on_every_hit() {
    for sealed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let keys = keystore();
        let store = open_with_cache(dir.path(), &keys, sealed, 256 << 20);
        put(&store, 2, b"written", 10, b"from apply", 0);
        put(&store, 3, b"read", 10, b"from disk", 0);
        store.flush().unwrap();
        // A fresh store over the same files starts with an empty cache: every first read misses.
        drop(store);
        let store = reopen_with_cache(dir.path(), &keys, sealed, 256 << 20);
        // A miss fills the cache from disk.
        assert_eq!(value_of(&store, b"read", u64::MAX), Some((10, Some(b"from disk".to_vec()))));
        keys.remove(DEK_A).unwrap();
        let hit = store.version(b"read", u64::MAX);
        if sealed {
            assert!(hit.is_err(), "sealed mode: the hit was opened, and the key is gone");
        } else {
            assert_eq!(hit.unwrap().unwrap().value, Some((b"from disk".to_vec(), 0)), "opened mode: a copy");
        }
        assert!(store.version(b"written", u64::MAX).is_err(), "never read since the restart: a miss, opened");
    }
}

#[test]
fn gc_of_a_dead_key_drops_its_cached_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, false);
    put(&store, 1, b"k", 10, b"v", 0);
    delete(&store, 2, b"k", 20);
    assert_eq!(value_of(&store, b"k", u64::MAX), Some((20, None)), "tombstone read (and cached)");
    let report = store.gc(30, 1_000).unwrap();
    assert_eq!(report.versions_removed, 2);
    // What an apply and WATCH see: no version at all, as on a replica that restarted after GC.
    assert_eq!(value_of(&store, b"k", u64::MAX), None);
}

#[test]
fn rewrite_drops_versions_cached_under_the_retired_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open_sealed(dir.path(), &keys, 1);
    put(&store, 2, b"k", 10, b"sealed under A", 0);
    assert_eq!(value_of(&store, b"k", u64::MAX), Some((10, Some(b"sealed under A".to_vec()))));
    store.set_sealer(Some(sealer(&keys, DEK_B)));
    store.rewrite(RewriteOptions::new(RewriteTarget::AllButActive), |_| {}).unwrap();
    keys.set_active(Purpose::Storage, DEK_B).unwrap();
    keys.remove(DEK_A).unwrap();
    // A cached copy sealed under A would now fail to open: the rewrite must have dropped it.
    assert_eq!(value_of(&store, b"k", u64::MAX), Some((10, Some(b"sealed under A".to_vec()))));
}

#[test]
fn a_snapshot_install_drops_cached_absences() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, true);
    let stream = small_encrypted_stream();
    // Find a key the stream holds, by installing it once elsewhere.
    let probe_dir = tempfile::tempdir().unwrap();
    let probe = open(probe_dir.path(), &keys, true);
    probe.install_snapshot(stream.as_slice()).unwrap();
    let (key, value) = probe
        .scan(&sealkv_store::KeyRange::all(), u64::MAX, 0, sealkv_store::Direction::Forward)
        .next()
        .expect("the stream holds a key")
        .unwrap();
    // Absent before the install, and cached as such.
    assert_eq!(store.get(&key, u64::MAX, 0).unwrap(), None);
    store.install_snapshot(stream.as_slice()).unwrap();
    assert_eq!(store.get(&key, u64::MAX, 0).unwrap(), Some(value));
}

#[test]
fn a_zero_budget_turns_the_cache_off() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let opts = StoreOptions { keystore: keys.clone(), row_cache_bytes: 0, ..StoreOptions::default() };
    let store = Store::open(dir.path(), opts).unwrap();
    put(&store, 1, b"k", 10, b"v", 0);
    for _ in 0..3 {
        assert_eq!(value_of(&store, b"k", u64::MAX), Some((10, Some(b"v".to_vec()))));
    }
    let stats = store.row_cache_stats();
    assert_eq!((stats.hits, stats.bytes), (0, 0));
}

/// A value too big for its shard is never cached: writing one over a cached version drops that
/// version (the cache must not answer the old value), and reading it leaves nothing behind.
#[test]
fn a_version_too_big_to_cache_replaces_the_cached_one_with_nothing() {
    for sealed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let keys = keystore();
        // 16 shards of 16 KiB: one entry may take 4 KiB.
        let store = open_with_cache(dir.path(), &keys, sealed, 256 << 10);
        put(&store, 2, b"k", 10, b"small", 0);
        assert_eq!(value_of(&store, b"k", u64::MAX), Some((10, Some(b"small".to_vec()))));
        let bytes_small = store.row_cache_stats().bytes;
        assert!(bytes_small > 0, "the small version is cached");
        // Incompressible, so the stored bytes (what a sealed cache charges) are as big.
        let big = sealkv_testkit::incompressible(9, 64 << 10);
        put(&store, 3, b"k", 20, &big, 0);
        // Only the removed entry's queue slot stays charged until eviction reaches it.
        assert!(store.row_cache_stats().bytes < bytes_small, "sealed={sealed}: the stale version is gone");
        let hits = store.row_cache_stats().hits;
        for _ in 0..2 {
            assert_eq!(value_of(&store, b"k", u64::MAX), Some((20, Some(big.clone()))), "sealed={sealed}");
        }
        assert_eq!(store.row_cache_stats().hits, hits, "sealed={sealed}: neither the write nor a read cached it");
    }
}

/// A writer commits increasing versions of a few keys while readers read them: a read that
/// starts after a commit returned must see that version or a newer one. A fill that ignored
/// its ticket would put a version read before a commit back over the commit's update, and a
/// later read would see it. The cache is tiny and the writer also writes filler keys, which the
/// readers read too: the fillers keep being evicted, so readers keep missing and filling (the
/// watched keys, read all the time, mostly hit).
#[test]
fn readers_racing_a_writer_never_see_a_version_older_than_a_finished_commit() {
    for sealed in [false, true] {
        readers_racing_a_writer(sealed);
    }
}

fn readers_racing_a_writer(sealed: bool) {
    const KEYS: u64 = 4;
    const FILLERS: u64 = 1000;
    const WRITES: u64 = 20_000;
    const READS: u64 = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = Arc::new(open_with_cache(dir.path(), &keys, sealed, 16 << 10));
    // Slots 0..KEYS are the watched keys, then one per filler.
    let name = |slot: u64| if slot < KEYS { format!("key{slot}") } else { format!("filler{}", slot - KEYS) };
    let committed: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS + FILLERS).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (store, committed, done, reads) = (store.clone(), committed.clone(), done.clone(), reads.clone());
            std::thread::spawn(move || {
                let mut i = r;
                while !done.load(Ordering::Acquire) {
                    let slot = if i % 2 == 0 { (i / 2) % KEYS } else { KEYS + (i.wrapping_mul(7919) % FILLERS) };
                    i += 1;
                    let floor = committed[slot as usize].load(Ordering::Acquire);
                    let key = name(slot);
                    let seen = store.version(key.as_bytes(), u64::MAX).unwrap().map_or(0, |v| v.ts);
                    assert!(seen >= floor, "{key}: read ts {seen} after commit {floor} had returned");
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // However the threads get scheduled, the writer keeps going until the readers read a lot.
    let mut ts = 1;
    while ts < WRITES || reads.load(Ordering::Relaxed) < READS {
        ts += 1;
        let k = ts % KEYS;
        let mut b = store.batch();
        b.put(format!("key{k}").as_bytes(), ts, &ts.to_be_bytes(), 0).unwrap();
        let fillers: Vec<u64> = (0..4).map(|f| (ts * 4 + f) % FILLERS).collect();
        for f in &fillers {
            b.put(name(KEYS + f).as_bytes(), ts, b"f", 0).unwrap();
        }
        b.commit(&applied(ts), Durability::Buffered).unwrap();
        committed[k as usize].store(ts, Ordering::Release);
        for f in fillers {
            committed[(KEYS + f) as usize].store(ts, Ordering::Release);
        }
        if ts % 64 == 0 {
            // Let a reader fill between writes now and then, so fills and puts interleave.
            std::thread::yield_now();
        }
    }
    done.store(true, Ordering::Release);
    for r in readers {
        r.join().unwrap();
    }
    let stats = store.row_cache_stats();
    assert!(stats.hits > 0 && stats.misses > 0, "both paths ran: {stats:?}");
}
