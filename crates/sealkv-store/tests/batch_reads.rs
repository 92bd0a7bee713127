//! Reads during apply: a batch sees its own pending writes laid over the committed store, in
//! point reads and in scans both ways, exactly as if the pending writes had been committed.

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;
use sealkv_store::Direction;

#[derive(Debug, Clone)]
enum W {
    Put(u8, u8),
    Del(u8),
}

fn w() -> impl Strategy<Value = W> {
    prop_oneof![(0u8..12, any::<u8>()).prop_map(|(k, v)| W::Put(k, v)), (0u8..12).prop_map(W::Del)]
}

fn key(k: u8) -> Vec<u8> {
    // Keys with embedded zero bytes exercise the MVCC key escaping in the scan bounds.
    vec![b'k', k / 4, k]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn pending_writes_shadow_the_store(committed in proptest::collection::vec(w(), 0..20), pending in proptest::collection::vec(w(), 0..20), lo in 0u8..12, hi in 0u8..13) {
        let dir = tempfile::tempdir().unwrap();
        let keys = common::keystore();
        let store = common::open(dir.path(), &keys, true);
        store.set_sealer(Some(common::sealer(&keys, common::DEK_A)));
        common::enable(&store, 1);
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut b = store.batch();
        for (i, op) in committed.iter().enumerate() {
            let ts = 10 + i as u64;
            match op {
                W::Put(k, v) => { b.put(&key(*k), ts, &[*v], 0).unwrap(); model.insert(key(*k), vec![*v]); }
                W::Del(k) => { b.delete(&key(*k), ts).unwrap(); model.remove(&key(*k)); }
            }
        }
        b.commit(&common::applied(2), sealkv_store::Durability::Buffered).unwrap();
        let mut b = store.batch();
        for (i, op) in pending.iter().enumerate() {
            let ts = 100 + i as u64;
            match op {
                W::Put(k, v) => { b.put(&key(*k), ts, &[*v], 7).unwrap(); model.insert(key(*k), vec![*v]); }
                W::Del(k) => { b.delete(&key(*k), ts).unwrap(); model.remove(&key(*k)); }
            }
        }
        for k in 0..12u8 {
            let got = b.latest(&key(k)).unwrap().and_then(|v| v.value).map(|(v, _)| v);
            prop_assert_eq!(got, model.get(&key(k)).cloned());
        }
        let (lo, hi) = (key(lo), key(hi));
        let want: Vec<_> = model.iter().filter(|(k, _)| **k >= lo && **k < hi).map(|(k, v)| (k.clone(), v.clone())).collect();
        let fwd: Vec<_> = b.scan_latest(Bound::Included(lo.clone()), Bound::Excluded(hi.clone()), Direction::Forward).map(|r| r.unwrap()).collect();
        prop_assert_eq!(&fwd, &want);
        let mut rev: Vec<_> = b.scan_latest(Bound::Included(lo), Bound::Excluded(hi), Direction::Reverse).map(|r| r.unwrap()).collect();
        rev.reverse();
        prop_assert_eq!(&rev, &want);
    }
}

/// What one batch leaves when it writes a key more than once: the last write at a timestamp wins
/// (a Redis collection's metadata is rewritten by every command of an entry at the entry's
/// timestamp), and writes at different timestamps stay separate versions even when an older
/// timestamp comes later in the batch. Checked through the row cache, then from disk alone. Only
/// what is stored is sealed: a write replaced in the batch costs no seal (and no nonce).
#[test]
fn repeated_and_out_of_order_writes_in_one_batch_leave_the_last_write_of_each_version() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::keystore();
    let check = |store: &sealkv_store::Store| {
        let newest = |k: &[u8]| store.version(k, u64::MAX).unwrap().map(|v| (v.ts, v.value.map(|(b, _)| b)));
        assert_eq!(newest(b"meta"), Some((50, Some(b"three".to_vec()))));
        assert_eq!(newest(b"gone"), Some((50, None)));
        assert_eq!(newest(b"back"), Some((50, Some(b"again".to_vec()))));
        assert_eq!(newest(b"late"), Some((60, Some(b"new".to_vec()))));
        assert_eq!(store.get(b"late", 59, 0).unwrap(), Some(b"old".to_vec()), "the older version is kept");
    };
    {
        let store = common::open(dir.path(), &keys, true);
        let sealer = common::sealer(&keys, common::DEK_A);
        store.set_sealer(Some(sealer.clone()));
        common::enable(&store, 1);
        let issued = sealer.nonces().issued();
        let mut b = store.batch();
        for v in [&b"one"[..], b"two", b"three"] {
            b.put(b"meta", 50, v, 0).unwrap();
        }
        b.put(b"gone", 50, b"x", 0).unwrap();
        b.delete(b"gone", 50).unwrap();
        b.delete(b"back", 50).unwrap();
        b.put(b"back", 50, b"again", 0).unwrap();
        b.put(b"late", 60, b"new", 0).unwrap();
        b.put(b"late", 55, b"old", 0).unwrap();
        b.commit(&common::applied(2), sealkv_store::Durability::Synced).unwrap();
        // meta@50, back@50, late@60 and late@55: the four live versions stored.
        assert_eq!(sealer.nonces().issued() - issued, 4, "one seal per stored value");
        check(&store);
    }
    {
        let store = common::open(dir.path(), &keys, true);
        check(&store);
    }
    // One stored version per (key, timestamp) and one index entry per key: the repeats left
    // nothing behind.
    assert_eq!(common::raw_versions(dir.path()).len(), 5);
    assert_eq!(common::raw_records(dir.path(), "latest").len(), 4);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A savepoint's rollback leaves the batch exactly as it was at the savepoint, for its own
    /// reads and for what it commits (versions, newest-version index, row cache); a release keeps
    /// everything. Later writes replace earlier ones at the same timestamp, so the rollback must
    /// put replaced versions back, not just drop new ones.
    #[test]
    fn a_rolled_back_savepoint_leaves_the_batch_as_it_was(
        committed in proptest::collection::vec(w(), 0..12),
        before in proptest::collection::vec(w(), 0..12),
        after in proptest::collection::vec(w(), 1..12),
        keep in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let keys = common::keystore();
        let store = common::open(dir.path(), &keys, true);
        store.set_sealer(Some(common::sealer(&keys, common::DEK_A)));
        common::enable(&store, 1);
        let apply = |b: &mut sealkv_store::ApplyBatch<'_>, model: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &W, ts: u64| match op {
            W::Put(k, v) => { b.put(&key(*k), ts, &[*v], 0).unwrap(); model.insert(key(*k), vec![*v]); }
            W::Del(k) => { b.delete(&key(*k), ts).unwrap(); model.remove(&key(*k)); }
        };
        let mut model = BTreeMap::new();
        let mut b = store.batch();
        for (i, op) in committed.iter().enumerate() {
            apply(&mut b, &mut model, op, 10 + i as u64);
        }
        b.commit(&common::applied(2), sealkv_store::Durability::Buffered).unwrap();
        let mut b = store.batch();
        for op in &before {
            apply(&mut b, &mut model, op, 150);
        }
        let mut with_after = model.clone();
        let sp = b.savepoint();
        for (i, op) in after.iter().enumerate() {
            apply(&mut b, &mut with_after, op, 150 + u64::from(i >= after.len() / 2));
        }
        let too_long = vec![0u8; sealkv_store::key::MAX_USER_KEY_LEN * 2];
        let refused = b.put(&too_long, 151, b"v", 0).unwrap_err();
        prop_assert!(refused.is_refusal(), "{refused}");
        let want = if keep { b.release(sp); with_after } else { b.rollback_to(sp); model };
        for k in 0..12u8 {
            let got = b.latest(&key(k)).unwrap().and_then(|v| v.value).map(|(v, _)| v);
            prop_assert_eq!(got, want.get(&key(k)).cloned());
        }
        let scanned: Vec<_> = b.scan_latest(Bound::Unbounded, Bound::Unbounded, Direction::Forward).map(|r| r.unwrap()).collect();
        prop_assert_eq!(scanned, want.clone().into_iter().collect::<Vec<_>>());
        b.commit(&common::applied(3), sealkv_store::Durability::Synced).unwrap();
        let newest = |store: &sealkv_store::Store| -> Vec<Option<Vec<u8>>> {
            (0..12u8).map(|k| store.version(&key(k), u64::MAX).unwrap().and_then(|v| v.value).map(|(v, _)| v)).collect()
        };
        let want: Vec<_> = (0..12u8).map(|k| want.get(&key(k)).cloned()).collect();
        prop_assert_eq!(newest(&store), want.clone(), "through the row cache");
        drop(store);
        let store = common::open(dir.path(), &keys, true);
        prop_assert_eq!(newest(&store), want, "from disk");
        prop_assert!(store.version(&too_long[..10], u64::MAX).unwrap().is_none());
    }
}

/// Savepoints nest: an inner one opened before any write, then released, must not end the undo
/// log the outer one still needs; rolling back the outer takes back the writes of both.
#[test]
fn nested_savepoints_roll_back_to_the_outer_one() {
    let dir = tempfile::tempdir().unwrap();
    let keys = common::keystore();
    let store = common::open(dir.path(), &keys, true);
    let mut b = store.batch();
    b.put(b"kept", 5, b"0", 0).unwrap();
    let outer = b.savepoint();
    let inner = b.savepoint();
    b.put(b"a", 5, b"1", 0).unwrap();
    b.release(inner);
    b.put(b"b", 5, b"2", 0).unwrap();
    let inner = b.savepoint();
    b.put(b"a", 5, b"3", 0).unwrap();
    b.rollback_to(inner);
    assert_eq!(b.latest(b"a").unwrap().and_then(|v| v.value).map(|(v, _)| v), Some(b"1".to_vec()));
    b.rollback_to(outer);
    for (k, want) in [(&b"kept"[..], Some(b"0".to_vec())), (b"a", None), (b"b", None)] {
        assert_eq!(b.latest(k).unwrap().and_then(|v| v.value).map(|(v, _)| v), want, "{k:?}");
    }
}
