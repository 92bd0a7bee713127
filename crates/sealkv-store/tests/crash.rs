//! Crash test: a child process applying batches (some buffered, some flushed, some synced; the
//! storage envelope switched on part-way) is killed with SIGKILL at random points, many times.
//! After every kill the store is reopened and the applied index and the data must agree exactly:
//! every batch up to the applied index is there, nothing after it is.
//!
//! The child is this test binary re-run with `SEALKV_STORE_CRASH_DIR` set. It resumes from the
//! applied index, like a node replaying its log, with a fresh nonce epoch per run.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use sealkv_store::{Direction, Durability, KeyRange, Store};

use common::*;

const ENABLE_AT: u64 = 60;
const KEYS: u64 = 40;

/// The writes of batch `i` (its commit timestamp is `i`): `(key, Some(value))` or `(key, None)`.
fn batch_ops(i: u64) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut ops: Vec<_> = (0..3u64)
        .map(|j| {
            let k = format!("k{:02}", (i * 7 + j) % KEYS).into_bytes();
            // Every other value is long and repetitive, so compress-then-encrypt is exercised.
            let v = if j % 2 == 0 { format!("v{i}-{j}").into_bytes() } else { vec![b'a' + (i % 26) as u8; 200] };
            (k, Some(v))
        })
        .collect();
    if i % 5 == 0 {
        ops.push((format!("k{:02}", (i * 7 + 3) % KEYS).into_bytes(), None));
    }
    ops
}

fn apply(store: &Store, i: u64) {
    let mut b = store.batch();
    if i == ENABLE_AT {
        b.enable_storage_envelope();
    }
    for (k, v) in batch_ops(i) {
        match v {
            Some(v) => b.put(&k, i, &v, 0).unwrap(),
            None => b.delete(&k, i).unwrap(),
        }
    }
    let durability = [Durability::Buffered, Durability::Flushed, Durability::Synced][(i % 3) as usize];
    b.commit(&applied(i), durability).unwrap();
}

fn open_resumed(dir: &Path, epoch: u16) -> (Store, u64) {
    let keys = keystore();
    let store = open(dir, &keys, true);
    let nonces = sealkv_crypto::NonceFactory::new(0x0001, epoch).unwrap();
    store.set_sealer(Some(std::sync::Arc::new(sealkv_crypto::Sealer::new(keys.get(DEK_A).unwrap(), nonces))));
    let at = store.applied().unwrap().map_or(0, |a| a.index);
    (store, at)
}

/// Checks that the store holds exactly batches `1..=applied`.
fn verify(store: &Store) -> u64 {
    let applied = store.applied().unwrap().map_or(0, |a| a.index);
    assert_eq!(store.max_committed_ts(), applied, "max_ts and applied index disagree");
    let mut model: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let (mut sealed, mut cleartext, mut tombstones) = (0u64, 0u64, 0u64);
    for i in 1..=applied {
        for (k, v) in batch_ops(i) {
            match &v {
                None => tombstones += 1,
                Some(_) if i >= ENABLE_AT => sealed += 1,
                Some(_) => cleartext += 1,
            }
            model.insert(k, v);
        }
    }
    let expected: Vec<_> = model.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
    let got: Vec<_> = store.scan(&KeyRange::all(), u64::MAX, 0, Direction::Forward).collect::<Result<_, _>>().unwrap();
    assert_eq!(got, expected, "data disagrees with applied index {applied}");
    let counts = store.value_counts().unwrap();
    assert_eq!(
        (counts.cleartext, counts.tombstones, counts.by_key_id.get(&DEK_A).copied().unwrap_or(0)),
        (cleartext, tombstones, sealed),
        "stored versions disagree with applied index {applied}"
    );
    let expected_since = (applied >= ENABLE_AT).then_some(ENABLE_AT - 1);
    assert_eq!(store.storage_envelope_since(), expected_since);
    applied
}

/// Child mode: apply batches forever from the applied index. In a normal run (no env var) the
/// same writer runs in-process for a while and is verified.
#[test]
fn crash_child_or_inprocess() {
    match std::env::var_os("SEALKV_STORE_CRASH_DIR") {
        Some(dir) => {
            let epoch: u16 = std::env::var("SEALKV_STORE_CRASH_EPOCH").unwrap().parse().unwrap();
            let (store, at) = open_resumed(Path::new(&dir), epoch);
            println!("ready {at}");
            for i in at + 1.. {
                apply(&store, i);
            }
        }
        None => {
            let dir = tempfile::tempdir().unwrap();
            let (store, _) = open_resumed(dir.path(), 1);
            for i in 1..=ENABLE_AT + 20 {
                apply(&store, i);
            }
            assert_eq!(verify(&store), ENABLE_AT + 20);
        }
    }
}

#[test]
fn sigkill_at_random_points_keeps_applied_index_and_data_in_agreement() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut last = 0;
    for run in 1..=30u16 {
        let (mut child, mut lines) = spawn_child(
            "crash_child_or_inprocess",
            &[
                ("SEALKV_STORE_CRASH_DIR", dir.path().display().to_string()),
                ("SEALKV_STORE_CRASH_EPOCH", run.to_string()),
            ],
        );
        let ready: u64 = wait_for(&mut lines, "ready ").parse().unwrap();
        assert_eq!(ready, last, "the child resumed from a different applied index than the parent verified");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 120));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (store, _) = open_resumed(dir.path(), 1000 + run);
        last = verify(&store);
    }
    assert!(last > ENABLE_AT, "the runs never got past enabling the envelope (applied {last})");
}
