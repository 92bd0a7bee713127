//! Snapshots stream in bounded memory: the heap's high-water mark while writing or installing a
//! snapshot stays within a few MiB and does not grow with the store (measured at 24 and 72 MiB with a
//! counting global allocator; this binary holds only this test so nothing else allocates).

mod common;

use std::sync::Arc;

use sealkv_store::{Durability, SnapshotHeader, Store, StoreOptions};
use sealkv_testkit::{CountingAlloc, peak_growth};

use common::*;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn small_opts(keys: &Arc<sealkv_crypto::Keystore>) -> StoreOptions {
    StoreOptions {
        keystore: keys.clone(),
        encryption_enabled: true,
        cache_bytes: 1 << 20,
        memtable_bytes: 2 << 20,
        row_cache_bytes: 1 << 20,
        ..StoreOptions::default()
    }
}

/// Flushes the store and waits (up to 30 s) until no flush or compaction runs, so the write
/// measurement counts the snapshot write alone: the counting allocator sees every thread, and a
/// compaction left by the load, overlapping one measurement and not the other, used to decide the
/// comparison between them (a 24 MiB write measured 0.27 MB once, against 2.4 MB usually).
fn settle(store: &Store) {
    store.flush().unwrap();
    wait_for_engine(store, 30, |e| e.flushes_pending == 0 && e.compactions_running == 0);
}

/// Peak heap growth (write, install) for a store of `mib` MiB of sealed 1 KiB values.
fn measure(mib: usize) -> (usize, usize) {
    let keys = keystore();
    let src_dir = tempfile::tempdir().unwrap();
    let src = Store::open(src_dir.path(), small_opts(&keys)).unwrap();
    src.set_sealer(Some(sealer(&keys, DEK_A)));
    enable(&src, 1);
    let mut ts = 0;
    for chunk in 0..mib {
        let mut b = src.batch();
        for _ in 0..1024 {
            ts += 1;
            // Incompressible values, so the stream really is `mib` MiB.
            let v = sealkv_testkit::incompressible(ts, 1024);
            b.put(format!("key/{ts:09}").as_bytes(), ts, &v, 0).unwrap();
        }
        b.commit(&applied(chunk as u64 + 2), Durability::Buffered).unwrap();
    }
    src.persist().unwrap();
    settle(&src);
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("snap");
    let header = SnapshotHeader { hlc_ceiling_ms: 1, encryption: None };
    let mut written = 0;
    let write = peak_growth(|| {
        written = src.write_snapshot(std::fs::File::create(&path).unwrap(), &header).unwrap().bytes;
    });
    assert!(written as usize > mib << 20);
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = Store::open(dst_dir.path(), small_opts(&keys)).unwrap();
    let install = peak_growth(|| {
        dst.install_snapshot(std::fs::File::open(&path).unwrap()).unwrap();
    });
    assert_eq!(dst.value_counts().unwrap(), src.value_counts().unwrap());
    (write, install)
}

#[test]
fn snapshot_write_and_install_use_bounded_memory() {
    let (w_small, i_small) = measure(24);
    let (w_big, i_big) = measure(72);
    eprintln!("peak heap growth: write {w_small} / {w_big} B, install {i_small} / {i_big} B (24 / 72 MiB store)");
    const MIB: usize = 1 << 20;
    // A few MiB, whatever the size: the 256 KiB stream buffers, 1 MiB install batches, and fjall's
    // block cache, memtables and compaction buffers, plus the newest-version index's own memtable
    // and small L0 tables (measured: 2.4 MiB write of either size, 9-10 MiB install of 24 MiB,
    // 9-11 MiB of 72 MiB).
    for (label, peak) in [("write", w_big), ("install", i_big)] {
        assert!(peak < 16 * MIB, "{label} of a 72 MiB store grew the heap by {peak} bytes");
    }
    // Three times the data must not mean (anywhere near) three times the memory.
    assert!(w_big < w_small + 2 * MIB, "write memory grows with the store: {w_small} -> {w_big}");
    assert!(i_big < i_small + 4 * MIB, "install memory grows with the store: {i_small} -> {i_big}");
}
