//! The newest-version index: its byte layout, its rebuild for a store that has none, and reads
//! that stay right when an entry is stale (GC removed the key) or out of timestamp order.

mod common;

use std::path::Path;

use sealkv_store::Store;

use common::*;

/// Empties the index and drops its "built" flag, as a store written before the index existed.
fn strip_index(path: &Path) {
    let db = fjall::Database::builder(path).open().unwrap();
    let latest = db.keyspace("latest", fjall::KeyspaceCreateOptions::default).unwrap();
    for g in latest.iter() {
        latest.remove(g.key().unwrap()).unwrap();
    }
    let meta = db.keyspace("meta", fjall::KeyspaceCreateOptions::default).unwrap();
    assert!(meta.get(b"latest_index").unwrap().is_some(), "a store records that its index is built");
    meta.remove(b"latest_index").unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

fn populate(store: &Store) {
    put(store, 1, b"a", 5, b"a5", 0);
    put(store, 2, b"a", 9, b"a9", 0);
    put(store, 3, b"b\x00c", 7, b"b7", 0);
    delete(store, 4, b"d", 8);
    // Out of timestamp order: the newer version of "a" stays the newest.
    put(store, 5, b"a", 6, b"a6", 0);
}

fn check_reads(store: &Store) {
    let ver = |k: &[u8], ts| store.version(k, ts).unwrap().map(|v| (v.ts, v.value.map(|(b, _)| b)));
    assert_eq!(ver(b"a", u64::MAX), Some((9, Some(b"a9".to_vec()))));
    assert_eq!(ver(b"a", 8), Some((6, Some(b"a6".to_vec()))), "an older read timestamp falls back");
    assert_eq!(ver(b"a", 4), None);
    assert_eq!(ver(b"b\x00c", u64::MAX), Some((7, Some(b"b7".to_vec()))));
    assert_eq!(ver(b"d", u64::MAX), Some((8, None)), "a tombstone is the newest version");
    assert_eq!(ver(b"never", u64::MAX), None);
}

#[test]
fn index_layout_is_version_prefix_to_newest_ts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, false);
    populate(&store);
    check_reads(&store);
    drop(store);
    assert_eq!(
        raw_records(dir.path(), "latest"),
        vec![
            (b"a\x00\x01".to_vec(), 9u64.to_be_bytes().to_vec()),
            (b"b\x00\xffc\x00\x01".to_vec(), 7u64.to_be_bytes().to_vec()),
            (b"d\x00\x01".to_vec(), 8u64.to_be_bytes().to_vec()),
        ]
    );
}

#[test]
fn a_store_without_the_index_rebuilds_it_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open_sealed(dir.path(), &keys, 100);
    populate(&store);
    drop(store);
    let before = raw_records(dir.path(), "latest");
    strip_index(dir.path());
    assert!(raw_records(dir.path(), "latest").is_empty());
    let store = open(dir.path(), &keys, true);
    check_reads(&store);
    drop(store);
    assert_eq!(raw_records(dir.path(), "latest"), before, "the rebuilt index equals the one kept by writes");
}

#[test]
fn a_key_gc_removed_entirely_reads_as_absent_and_can_be_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, false);
    put(&store, 1, b"k", 5, b"v", 0);
    delete(&store, 2, b"k", 6);
    store.gc(10, 0).unwrap();
    assert_eq!(store.value_counts().unwrap().tombstones, 0, "GC dropped the tombstone");
    // The index still names ts 6; the read must not trust it.
    assert_eq!(store.version(b"k", u64::MAX).unwrap(), None);
    put(&store, 3, b"k", 11, b"again", 0);
    assert_eq!(store.get(b"k", u64::MAX, 0).unwrap(), Some(b"again".to_vec()));
}
