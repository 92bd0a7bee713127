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
