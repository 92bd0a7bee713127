//! `Store::flush` (what `SAVE` runs): every memtable of the database is written out, including a
//! keyspace another layer keeps in it (as the Raft log does), and nothing written is lost.

mod common;

use fjall::KeyspaceCreateOptions;
use sealkv_store::{Direction, KeyRange, Store};

use common::*;

const WRITES: u64 = 400;

fn value(i: u64) -> Vec<u8> {
    sealkv_testkit::incompressible(i, 512)
}

/// The memtable bytes left once they drain (up to 10 s): fjall frees a flushed memtable's bytes
/// just after it stops counting it as sealed, so the figure settles a moment after `flush`.
fn memtables_drain(store: &Store) -> u64 {
    wait_for_engine(store, 10, |e| e.memtable_bytes == 0).memtable_bytes
}

fn check(store: &Store) {
    let got: Vec<_> = store.scan(&KeyRange::all(), u64::MAX, 0, Direction::Forward).collect::<Result<_, _>>().unwrap();
    assert_eq!(got.len(), WRITES as usize);
    for (i, (k, v)) in (1..=WRITES).zip(&got) {
        assert_eq!(k, format!("k{i:04}").as_bytes());
        assert_eq!(v, &value(i));
    }
}

#[test]
fn flush_writes_out_every_memtable_of_the_database() {
    for encryption in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let keys = keystore();
        let store = if encryption { open_sealed(dir.path(), &keys, 1) } else { open(dir.path(), &keys, false) };
        let base = store.applied().unwrap().map_or(0, |a| a.index);
        for i in 1..=WRITES {
            put(&store, base + i, format!("k{i:04}").as_bytes(), i, &value(i), 0);
        }
        // A keyspace of another layer in the same database (the Raft log lives like this).
        let other = store.database().keyspace("other", KeyspaceCreateOptions::default).unwrap();
        other.insert("entry", value(0)).unwrap();

        let before = store.engine_stats();
        assert!(before.memtable_bytes > WRITES * 512, "writes are in memtables first: {before:?}");
        store.flush().unwrap();
        assert_eq!(memtables_drain(&store), 0, "a memtable was left unflushed: {:?}", store.engine_stats());
        assert_eq!(store.engine_stats().flushes_pending, 0);
        check(&store);
        assert_eq!(other.get("entry").unwrap().as_deref(), Some(value(0).as_slice()));

        // A second flush with nothing new returns at once; data survives a reopen from tables.
        store.flush().unwrap();
        drop(other);
        drop(store);
        let store =
            if encryption { open_sealed(dir.path(), &keys, WRITES + 10) } else { open(dir.path(), &keys, false) };
        check(&store);
    }
}
