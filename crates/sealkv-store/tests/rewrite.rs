//! The rewrite primitive: after a rewrite from DEK A to DEK B no value under A (or in cleartext)
//! remains, every version reads the same at every timestamp, and no version is added; a rewrite
//! killed mid-way resumes from its cursor; concurrent writes and GC are safe.

mod common;

use std::sync::Arc;

use sealkv_store::{Direction, Durability, KeyRange, RewriteOptions, RewriteTarget, Store, StoreError};

use common::*;

const VERSIONS: u64 = 3_000;

/// Cleartext history, then history sealed under A (compressible values, TTLs, tombstones).
fn build(store: &Store, keys: &Arc<sealkv_crypto::Keystore>) -> u64 {
    let mut ts = 0;
    let mut index = 0;
    for phase in 0..2 {
        if phase == 1 {
            store.set_sealer(Some(sealer(keys, DEK_A)));
            index += 1;
            enable(store, index);
        }
        let mut b = store.batch();
        for i in 0..VERSIONS / 2 {
            ts += 1;
            let k = format!("key/{:04}", i % 700);
            match i % 11 {
                0 => b.delete(k.as_bytes(), ts).unwrap(),
                1 => b.put(k.as_bytes(), ts, &vec![b'r'; 500], 0).unwrap(),
                2 => b.put(k.as_bytes(), ts, b"expires", 10_000_000 + ts).unwrap(),
                _ => b.put(k.as_bytes(), ts, format!("value {phase} {i}").as_bytes(), 0).unwrap(),
            }
        }
        index += 1;
        b.commit(&applied(index), Durability::Buffered).unwrap();
    }
    ts
}

/// Every key's visible value at a spread of read timestamps.
fn view(store: &Store, max_ts: u64) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    (0..=10)
        .map(|i| max_ts * i / 10)
        .chain([u64::MAX])
        .map(|ts| store.scan(&KeyRange::all(), ts, 0, Direction::Forward).collect::<Result<_, _>>().unwrap())
        .collect()
}

/// A store built by [`build`] with what the tests compare against afterwards.
struct Fixture {
    dir: tempfile::TempDir,
    keys: Arc<sealkv_crypto::Keystore>,
    store: Store,
    max_ts: u64,
    before: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    counts: sealkv_store::ValueCounts,
    /// Every stored version (cleartext, tombstones, sealed under A).
    total: u64,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, true);
    let max_ts = build(&store, &keys);
    let before = view(&store, max_ts);
    let counts = store.value_counts().unwrap();
    assert!(counts.cleartext > 0 && counts.by_key_id[&DEK_A] > 0);
    let total = counts.cleartext + counts.tombstones + counts.by_key_id[&DEK_A];
    Fixture { dir, keys, store, max_ts, before, counts, total }
}

#[test]
fn rewrite_from_a_to_b_leaves_nothing_under_a_and_reads_unchanged() {
    let Fixture { dir, keys, store, max_ts, before, counts, total } = fixture();
    store.set_sealer(Some(sealer(&keys, DEK_B)));
    let mut reports = Vec::new();
    let mut opts = RewriteOptions::new(RewriteTarget::KeyId(DEK_A));
    opts.chunk_versions = 500;
    opts.bytes_per_sec = Some(1 << 40);
    let done = store.rewrite(opts, |p| reports.push(p.clone())).unwrap();
    assert!(done.finished && !done.resumed);
    assert_eq!(done.versions_scanned, total);
    assert_eq!(done.versions_resealed, total - counts.tombstones);
    // Progress after each 500-version chunk, then once at the end; monotone.
    assert_eq!(reports.len() as u64, total.div_ceil(500) + 1);
    assert!(reports.windows(2).all(|w| w[0].versions_scanned <= w[1].versions_scanned));
    let after = store.value_counts().unwrap();
    assert_eq!(after.cleartext, 0);
    assert_eq!(after.by_key_id.get(&DEK_A), None);
    assert_eq!(after.by_key_id[&DEK_B], total - counts.tombstones);
    assert_eq!(after.tombstones, counts.tombstones);
    assert_eq!(view(&store, max_ts), before);
    // Nothing left under A: A can leave the keystore and every read still works.
    drop(store);
    let only_b = sealkv_crypto::Keystore::new();
    only_b.install(DEK_B, sealkv_crypto::Purpose::Storage, &[0xB2; 32]).unwrap();
    let store = open(dir.path(), &Arc::new(only_b), true);
    assert_eq!(view(&store, max_ts), before);
}

#[test]
fn rewrite_refuses_while_the_envelope_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, true);
    put(&store, 1, b"k", 1, b"v", 0);
    store.set_sealer(Some(sealer(&keys, DEK_A)));
    assert!(matches!(
        store.rewrite(RewriteOptions::new(RewriteTarget::AllButActive), |_| {}),
        Err(StoreError::EnvelopeInactive)
    ));
    assert_eq!(store.value_counts().unwrap().cleartext, 1);
}

/// Child mode: rewrite slowly to B, printing each committed chunk.
#[test]
fn rewrite_child_or_inprocess() {
    let keys = keystore();
    let Some(dir) = std::env::var_os("SEALKV_REWRITE_CHILD_DIR") else {
        // In a normal run: a rewrite re-run after it finished finds nothing to do.
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &keys, true);
        build(&store, &keys);
        store.set_sealer(Some(sealer(&keys, DEK_B)));
        store.rewrite(RewriteOptions::new(RewriteTarget::KeyId(DEK_A)), |_| {}).unwrap();
        let again = store.rewrite(RewriteOptions::new(RewriteTarget::KeyId(DEK_A)), |_| {}).unwrap();
        assert_eq!((again.versions_resealed, again.resumed), (0, false));
        return;
    };
    let store = open(std::path::Path::new(&dir), &keys, true);
    store.set_sealer(Some(sealer(&keys, DEK_B)));
    let mut opts = RewriteOptions::new(RewriteTarget::KeyId(DEK_A));
    opts.chunk_versions = 200;
    // Slow enough that the parent kills it part-way (no timing is asserted).
    opts.bytes_per_sec = Some(64 << 10);
    store.rewrite(opts, |p| println!("chunk {}", p.versions_scanned)).unwrap();
    println!("finished");
}

fn killed_child(dir: &std::path::Path, envs: &[(&str, String)], marker: &str) {
    let mut all = vec![("SEALKV_REWRITE_CHILD_DIR", dir.display().to_string())];
    all.extend(envs.iter().cloned());
    let (mut child, mut lines) = spawn_child("rewrite_child_or_inprocess", &all);
    wait_for(&mut lines, marker);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn a_killed_rewrite_resumes_from_its_cursor() {
    let Fixture { dir, keys, store, max_ts, before, counts, total } = fixture();
    drop(store);

    // Killed just before its first chunk commits: nothing moved, nothing lost.
    killed_child(
        dir.path(),
        &[("SEALKV_FAILPOINT", "rewrite.before_chunk_commit".into()), ("SEALKV_FAILPOINT_ACTION", "pause".into())],
        "failpoint-paused",
    );
    let store = open(dir.path(), &keys, true);
    assert_eq!(store.value_counts().unwrap(), counts);
    assert_eq!(view(&store, max_ts), before);
    drop(store);

    // Killed after its third chunk: part is under B, the rest under A, and every read agrees.
    killed_child(dir.path(), &[], "chunk 600");
    let store = open(dir.path(), &keys, true);
    let mid = store.value_counts().unwrap();
    let moved = mid.by_key_id.get(&DEK_B).copied().unwrap_or(0);
    assert!(moved > 0 && mid.by_key_id.get(&DEK_A).copied().unwrap_or(0) + mid.cleartext > 0, "{mid:?}");
    assert_eq!(view(&store, max_ts), before);

    // Resumed: it continues after the cursor instead of starting over, and finishes.
    store.set_sealer(Some(sealer(&keys, DEK_B)));
    let done = store.rewrite(RewriteOptions::new(RewriteTarget::KeyId(DEK_A)), |_| {}).unwrap();
    assert!(done.resumed && done.finished);
    assert!(done.versions_scanned < total, "resumed rewrite rescanned everything");
    let after = store.value_counts().unwrap();
    assert_eq!((after.cleartext, after.by_key_id.get(&DEK_A)), (0, None));
    assert_eq!(after.by_key_id[&DEK_B], total - counts.tombstones);
    assert_eq!(view(&store, max_ts), before);
    assert_eq!(store.storage_envelope_since(), Some(0));
}

#[test]
fn rewrite_is_safe_under_concurrent_writes_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = Arc::new(open(dir.path(), &keys, true));
    let max_ts = build(&store, &keys);
    store.set_sealer(Some(sealer(&keys, DEK_B)));
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..300u64 {
                let mut b = store.batch();
                b.put(format!("key/{:04}", i % 700).as_bytes(), max_ts + 1 + i, b"concurrent", 0).unwrap();
                b.commit(&applied(100 + i), Durability::Buffered).unwrap();
            }
        })
    };
    let gc = {
        let store = store.clone();
        std::thread::spawn(move || store.gc(max_ts, 0).unwrap())
    };
    let mut opts = RewriteOptions::new(RewriteTarget::AllButActive);
    opts.chunk_versions = 64;
    store.rewrite(opts, |_| {}).unwrap();
    writer.join().unwrap();
    let removed = gc.join().unwrap().versions_removed;
    assert!(removed > 0);
    let counts = store.value_counts().unwrap();
    assert_eq!((counts.cleartext, counts.by_key_id.get(&DEK_A)), (0, None), "{counts:?}");
    // GC's removals stay removed (a rewrite never writes back a version GC dropped): a second GC
    // at the same horizon finds nothing.
    assert_eq!(store.gc(max_ts, 0).unwrap().versions_removed, 0);
    for i in 0..300u64 {
        let k = format!("key/{:04}", i % 700);
        assert_eq!(store.get(k.as_bytes(), u64::MAX, 0).unwrap(), Some(b"concurrent".to_vec()));
    }
}
