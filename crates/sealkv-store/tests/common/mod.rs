//! Shared helpers for the store's integration tests: a keystore with two storage DEKs, sealers
//! with distinct nonce epochs, and one-line apply helpers.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use sealkv_crypto::{Keystore, NonceFactory, Purpose, Sealer};
use sealkv_store::{Applied, Durability, EngineStats, Store, StoreOptions};

pub const DEK_A: u32 = 0x0000_0A0A;
pub const DEK_B: u32 = 0x0000_0B0B;

pub fn keystore() -> Arc<Keystore> {
    let keys = Keystore::new();
    keys.install(DEK_A, Purpose::Storage, &[0xA1; 32]).unwrap();
    keys.install(DEK_B, Purpose::Storage, &[0xB2; 32]).unwrap();
    Arc::new(keys)
}

static EPOCH: AtomicU16 = AtomicU16::new(1);

/// A sealer for `id` with an epoch no other sealer in this process used (no nonce reuse).
pub fn sealer(keys: &Keystore, id: u32) -> Arc<Sealer> {
    let epoch = EPOCH.fetch_add(1, Ordering::Relaxed);
    Arc::new(Sealer::new(keys.get(id).unwrap(), NonceFactory::new(0x0001, epoch).unwrap()))
}

pub fn open(path: &Path, keys: &Arc<Keystore>, encryption: bool) -> Store {
    let opts = StoreOptions { keystore: keys.clone(), encryption_enabled: encryption, ..StoreOptions::default() };
    Store::open(path, opts).unwrap()
}

/// An encrypted store sealing under `DEK_A` from apply index `enable_at` on.
pub fn open_sealed(path: &Path, keys: &Arc<Keystore>, enable_at: u64) -> Store {
    let store = open(path, keys, true);
    store.set_sealer(Some(sealer(keys, DEK_A)));
    enable(&store, enable_at);
    store
}

pub fn applied(index: u64) -> Applied {
    Applied { index, log_id: format!("t1-{index}").into_bytes() }
}

pub fn put(store: &Store, index: u64, key: &[u8], ts: u64, value: &[u8], expire_at_ms: u64) {
    let mut b = store.batch();
    b.put(key, ts, value, expire_at_ms).unwrap();
    b.commit(&applied(index), Durability::Buffered).unwrap();
}

pub fn delete(store: &Store, index: u64, key: &[u8], ts: u64) {
    let mut b = store.batch();
    b.delete(key, ts).unwrap();
    b.commit(&applied(index), Durability::Buffered).unwrap();
}

pub fn enable(store: &Store, index: u64) {
    let mut b = store.batch();
    b.enable_storage_envelope();
    b.commit(&applied(index), Durability::Buffered).unwrap();
}

/// Raw `(mvcc key, stored value)` pairs of the data keyspace, read with fjall directly after the
/// store is closed.
pub fn raw_versions(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw_records(path, "data")
}

/// Raw `(key, value)` pairs of any keyspace, read with fjall directly after the store is closed.
pub fn raw_records(path: &Path, keyspace: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = fjall::Database::builder(path).open().unwrap();
    let ks = db.keyspace(keyspace, fjall::KeyspaceCreateOptions::default).unwrap();
    ks.iter()
        .map(|g| {
            let (k, v) = g.into_inner().unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// Overwrites (or inserts) one raw stored version with fjall directly; the store must be closed.
pub fn raw_write(path: &Path, mvcc_key: &[u8], stored: &[u8]) {
    raw_write_in(path, "data", mvcc_key, stored);
}

/// Overwrites (or inserts) one raw record of `keyspace` with fjall directly; the store must be
/// closed.
pub fn raw_write_in(path: &Path, keyspace: &str, key: &[u8], value: &[u8]) {
    let db = fjall::Database::builder(path).open().unwrap();
    let ks = db.keyspace(keyspace, fjall::KeyspaceCreateOptions::default).unwrap();
    ks.insert(key, value).unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

/// Removes one raw stored version with fjall directly; the store must be closed.
pub fn raw_remove(path: &Path, mvcc_key: &[u8]) {
    let db = fjall::Database::builder(path).open().unwrap();
    let ks = db.keyspace("data", fjall::KeyspaceCreateOptions::default).unwrap();
    ks.remove(mvcc_key).unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

/// Re-runs this test binary as a child executing only `test`, with `envs` set, stdout piped.
pub fn spawn_child(
    test: &str,
    envs: &[(&str, String)],
) -> (std::process::Child, std::io::Lines<std::io::BufReader<std::process::ChildStdout>>) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Reads the child's stdout until a line contains `marker` (libtest may prefix it on the same
/// line) and returns what follows the marker. Panics if the child exits first.
pub fn wait_for(lines: &mut std::io::Lines<std::io::BufReader<std::process::ChildStdout>>, marker: &str) -> String {
    loop {
        let line = lines.next().unwrap_or_else(|| panic!("child exited before printing {marker:?}")).unwrap();
        if let Some((_, rest)) = line.split_once(marker) {
            return rest.trim().to_string();
        }
    }
}

/// The header of [`small_encrypted_stream`].
pub fn small_stream_header() -> sealkv_store::SnapshotHeader {
    sealkv_store::SnapshotHeader {
        hlc_ceiling_ms: 5_002,
        encryption: Some(sealkv_store::EncryptionSnapshot {
            raft_cutover_index: 42,
            state: br#"{"active":{"storage":2570}}"#.to_vec(),
        }),
    }
}

/// A small, valid v2 snapshot stream of an encrypted store: a sealed value, a compressed sealed
/// value with a TTL, a tombstone, a registry row and the replicated metadata.
pub fn small_encrypted_stream() -> Vec<u8> {
    use sealkv_crypto::registry::{RegistryStore, Row, RowKey};
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, true);
    store.set_sealer(Some(sealer(&keys, DEK_A)));
    enable(&store, 1);
    put(&store, 2, b"a", 1, b"one", 0);
    put(&store, 3, b"key", 2, &[7; 200], 60_000);
    delete(&store, 4, b"b", 3);
    let mut b = store.batch();
    let row = Row { full_node_id: 9, first_seen_epoch: 1, last_seen_epoch: 1 };
    RegistryStore::put(&mut b, RowKey { dek_id: DEK_A, node16: 1 }, row).unwrap();
    b.commit(&applied(5), Durability::Buffered).unwrap();
    let mut stream = Vec::new();
    store.write_snapshot(&mut stream, &small_stream_header()).unwrap();
    stream
}

/// Polls the store's engine stats until `done` holds or `secs` pass, and returns the last ones
/// (the caller asserts on them): fjall's flushes and compactions finish on its own threads.
pub fn wait_for_engine(store: &Store, secs: u64, done: impl Fn(&EngineStats) -> bool) -> EngineStats {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let stats = store.engine_stats();
        if done(&stats) || std::time::Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
