//! Snapshot stream: round trips of cleartext, encrypted and mixed stores (values stay byte-for-
//! byte the same ciphertext), header forward compatibility, refusal of unknown versions and of
//! every corrupted or truncated stream, and a crash mid-install.

mod common;

use sealkv_crypto::registry::{RegistryStore, Row, RowKey};
use sealkv_store::{Direction, Durability, KeyRange, SnapshotError, SnapshotHeader, Store, StoreError};

use common::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Cleartext,
    Encrypted,
    Mixed,
}

/// A store with several versions per key, tombstones, TTLs, compressible values and registry rows.
fn build(dir: &std::path::Path, kind: Kind) -> Store {
    let keys = keystore();
    let store = open(dir, &keys, kind != Kind::Cleartext);
    store.set_sealer(Some(sealer(&keys, DEK_A)));
    let mut index = 0;
    let mut ts = 0;
    if kind == Kind::Encrypted {
        index += 1;
        enable(&store, index);
    }
    for round in 0..3u64 {
        if kind == Kind::Mixed && round == 1 {
            index += 1;
            enable(&store, index);
        }
        let mut b = store.batch();
        for k in 0..50u64 {
            ts += 1;
            let key = format!("key/{k:03}");
            match (k + round) % 7 {
                0 => b.delete(key.as_bytes(), ts).unwrap(),
                1 => b.put(key.as_bytes(), ts, &vec![b'z'; 300], 0).unwrap(),
                2 => b.put(key.as_bytes(), ts, b"ttl", 1_000_000 + k).unwrap(),
                _ => b.put(key.as_bytes(), ts, format!("{kind:?}-{round}-{k}").as_bytes(), 0).unwrap(),
            }
        }
        b.put(b"", ts, b"empty key", 0).unwrap();
        b.put(b"\x00\xff", ts, b"", 0).unwrap();
        b.put(RowKey { dek_id: 1, node16: round as u16 }.encode().as_slice(), ts, b"user key shaped like a row", 0)
            .unwrap();
        RegistryStore::put(
            &mut b,
            RowKey { dek_id: DEK_A, node16: round as u16 },
            Row { full_node_id: round, first_seen_epoch: 1, last_seen_epoch: 2 },
        )
        .unwrap();
        index += 1;
        b.set_hlc_ceiling(5_000 + round as i64);
        b.commit(&applied(index), Durability::Buffered).unwrap();
    }
    store
}

fn header(kind: Kind) -> SnapshotHeader {
    match kind {
        Kind::Cleartext => SnapshotHeader { hlc_ceiling_ms: 5_002, encryption: None },
        _ => small_stream_header(),
    }
}

fn everything(store: &Store, ts: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    store.scan(&KeyRange::all(), ts, 0, Direction::Forward).collect::<Result<_, _>>().unwrap()
}

#[test]
fn round_trips_cleartext_encrypted_and_mixed_stores_verbatim() {
    for kind in [Kind::Cleartext, Kind::Encrypted, Kind::Mixed] {
        let src_dir = tempfile::tempdir().unwrap();
        let src = build(src_dir.path(), kind);
        let mut stream = Vec::new();
        let stats = src.write_snapshot(&mut stream, &header(kind)).unwrap();
        assert_eq!(stats.bytes, stream.len() as u64);
        let magic: &[u8] = if kind == Kind::Cleartext { b"SEALSNP1" } else { b"SEALSNP2" };
        assert_eq!(&stream[..8], magic);

        let dst_dir = tempfile::tempdir().unwrap();
        let keys = keystore();
        let dst = open(dst_dir.path(), &keys, true);
        assert_eq!(dst.install_snapshot(stream.as_slice()).unwrap(), header(kind));
        for ts in [1, 60, 120, u64::MAX] {
            assert_eq!(everything(&dst, ts), everything(&src, ts), "{kind:?} at ts {ts}");
        }
        assert_eq!(dst.registry_rows().unwrap(), src.registry_rows().unwrap());
        assert_eq!(dst.registry_rows().unwrap().len(), 3);
        assert_eq!(dst.applied().unwrap(), src.applied().unwrap());
        assert_eq!(dst.max_committed_ts(), src.max_committed_ts());
        assert_eq!(dst.storage_envelope_since(), src.storage_envelope_since());
        assert_eq!(dst.hlc_ceiling().unwrap(), Some(5_002));
        assert_eq!(dst.value_counts().unwrap(), src.value_counts().unwrap());
        drop((src, dst));
        // Ciphertext stays ciphertext: the installed versions are the same bytes.
        assert_eq!(raw_versions(dst_dir.path()), raw_versions(src_dir.path()));
        let counts_sealed = raw_versions(src_dir.path()).iter().filter(|(_, v)| v[0] & 0b110 == 0b010).count();
        match kind {
            Kind::Cleartext => assert_eq!(counts_sealed, 0),
            _ => assert!(counts_sealed > 0),
        }
        // Reopened, the installed store keeps its state.
        let dst = open(dst_dir.path(), &keys, true);
        assert_eq!(dst.storage_envelope_since(), open_since(kind));
    }
}

fn open_since(kind: Kind) -> Option<u64> {
    match kind {
        Kind::Cleartext => None,
        Kind::Encrypted => Some(0),
        Kind::Mixed => Some(50),
    }
}

#[test]
fn every_corruption_and_truncation_is_refused_and_leaves_the_store_empty() {
    let stream = small_encrypted_stream();
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, true);
    for i in 0..stream.len() {
        for mask in [0x01u8, 0x80] {
            let mut bad = stream.clone();
            bad[i] ^= mask;
            assert!(store.install_snapshot(bad.as_slice()).is_err(), "flip {mask:#x} at byte {i} was accepted");
            assert!(store.is_empty().unwrap());
        }
    }
    for len in 0..stream.len() {
        let err = store.install_snapshot(&stream[..len]).unwrap_err();
        assert!(matches!(err, StoreError::Snapshot(_)), "{err:?}");
        assert!(store.is_empty().unwrap());
    }
    let mut trailing = stream.clone();
    trailing.push(0);
    assert!(matches!(store.install_snapshot(trailing.as_slice()), Err(StoreError::Snapshot(SnapshotError::Trailing))));
    // The intact stream still installs, and a second install is refused.
    store.install_snapshot(stream.as_slice()).unwrap();
    assert_eq!(store.get(b"a", 9, 0).unwrap(), Some(b"one".to_vec()));
    assert!(matches!(store.install_snapshot(stream.as_slice()), Err(StoreError::NotEmpty)));
}

#[test]
fn v2_header_with_unknown_trailing_fields_is_read_and_unknown_versions_refused() {
    let stream = small_encrypted_stream();
    let h = header(Kind::Encrypted).encode().unwrap();
    let body = &stream[h.len()..stream.len() - 4];
    // The same header with 5 bytes of fields from a future version appended.
    let mut future = h.clone();
    let len = u32::from_be_bytes(future[8..12].try_into().unwrap()) + 5;
    future[8..12].copy_from_slice(&len.to_be_bytes());
    future.extend_from_slice(b"FUTUR");
    future.extend_from_slice(body);
    let crc = crc32fast::hash(&future);
    future.extend_from_slice(&crc.to_be_bytes());
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &keystore(), true);
    assert_eq!(store.install_snapshot(future.as_slice()).unwrap(), header(Kind::Encrypted));
    assert_eq!(store.get(b"a", 9, 0).unwrap(), Some(b"one".to_vec()));

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &keystore(), true);
    for v in [b'0', b'3', b'9', 0xFF] {
        let mut unknown = stream.clone();
        unknown[7] = v;
        assert!(matches!(
            store.install_snapshot(unknown.as_slice()),
            Err(StoreError::Snapshot(SnapshotError::UnknownVersion { byte })) if byte == v
        ));
    }
}

/// Child mode for the crash test: install a large snapshot with a pause failpoint armed.
#[test]
fn install_child_or_inprocess() {
    let Some(dir) = std::env::var_os("SEALKV_INSTALL_CHILD_DIR") else {
        // In a normal run: installing into a store that already holds data is refused.
        let dir = tempfile::tempdir().unwrap();
        let store = build(dir.path(), Kind::Mixed);
        assert!(matches!(store.install_snapshot(small_encrypted_stream().as_slice()), Err(StoreError::NotEmpty)));
        return;
    };
    let stream = std::fs::read(std::env::var("SEALKV_INSTALL_STREAM").unwrap()).unwrap();
    let store = open(std::path::Path::new(&dir), &keystore(), true);
    store.install_snapshot(stream.as_slice()).unwrap();
}

#[test]
fn a_crash_mid_install_leaves_an_empty_store_after_reopen() {
    let src_dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let src = open(src_dir.path(), &keys, true);
    let mut b = src.batch();
    for i in 0..6_000u64 {
        // 6000 × 1 KiB is more than one 4 MiB install batch.
        b.put(format!("k{i:05}").as_bytes(), i + 1, &i.to_be_bytes().repeat(128), 0).unwrap();
    }
    b.commit(&applied(1), Durability::Buffered).unwrap();
    let work = tempfile::tempdir().unwrap();
    let stream_path = work.path().join("snap");
    src.write_snapshot(std::fs::File::create(&stream_path).unwrap(), &header(Kind::Cleartext)).unwrap();
    // After the first batch, and after every record is durable but before the caller's finish
    // step (the node's key state) ran.
    for (n, point) in ["snapshot.install_after_batch", "snapshot.install_before_finish"].into_iter().enumerate() {
        let dst = work.path().join(format!("dst{n}"));
        let (mut child, mut lines) = spawn_child(
            "install_child_or_inprocess",
            &[
                ("SEALKV_INSTALL_CHILD_DIR", dst.display().to_string()),
                ("SEALKV_INSTALL_STREAM", stream_path.display().to_string()),
                ("SEALKV_FAILPOINT", point.into()),
                ("SEALKV_FAILPOINT_ACTION", "pause".into()),
            ],
        );
        wait_for(&mut lines, "failpoint-paused");
        child.kill().unwrap();
        child.wait().unwrap();
        // The killed install had committed versions; reopening wipes them.
        let store = open(&dst, &keys, true);
        assert!(store.is_empty().unwrap(), "{point}");
        assert_eq!(everything(&store, u64::MAX), vec![], "{point}");
        assert_eq!(store.applied().unwrap(), None, "{point}: no applied position survives");
        // And the same stream then installs completely.
        store.install_snapshot(std::fs::File::open(&stream_path).unwrap()).unwrap();
        assert_eq!(everything(&store, u64::MAX), everything(&src, u64::MAX));
    }
}

/// The finish step of an install sees the installed registry rows and versions; when it fails,
/// the store is wiped and says why.
#[test]
fn a_failed_install_finish_wipes_the_store() {
    let keys = keystore();
    let stream = small_encrypted_stream();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &keys, true);
    let mut rows_seen = 0;
    let err = store
        .install_snapshot_with(stream.as_slice(), |h| {
            rows_seen = sealkv_crypto::registry::RegistryStore::rows(&store.batch()).unwrap().len();
            assert!(h.encryption.is_some());
            Err("keystore refused".into())
        })
        .unwrap_err();
    assert!(matches!(&err, StoreError::InstallFinish(m) if m == "keystore refused"), "{err}");
    assert!(rows_seen > 0, "the finish step must see the snapshot's registry rows");
    assert!(store.is_empty().unwrap());
    assert_eq!(store.applied().unwrap(), None);
    // A later install of the same stream succeeds.
    store.install_snapshot(stream.as_slice()).unwrap();
    assert!(!store.is_empty().unwrap());
}

/// The header of `write_snapshot_with` is built after the consistent view is taken and sees that
/// view's applied position: a write that lands while the header is built is in neither the body
/// nor the position, and header state read in the closure is at least as new as the body.
#[test]
fn header_is_built_after_the_view_and_sees_its_applied_position() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(&dir.path().join("s"), &keys, false);
    put(&store, 1, b"a", 10, b"one", 0);
    let mut seen = None;
    let mut stream = Vec::new();
    store
        .write_snapshot_with(&mut stream, |applied| {
            seen = applied.map(|a| a.index);
            // A concurrent apply after the view was taken.
            put(&store, 2, b"b", 20, b"two", 0);
            Ok(SnapshotHeader { hlc_ceiling_ms: 7, encryption: None })
        })
        .unwrap();
    assert_eq!(seen, Some(1), "the closure must see the view's applied index, not the live one");
    let other = tempfile::tempdir().unwrap();
    let copy = open(&other.path().join("s"), &keys, false);
    let h = copy.install_snapshot(&stream[..]).unwrap();
    assert_eq!(h.hlc_ceiling_ms, 7);
    assert_eq!(copy.applied().unwrap().map(|a| a.index), Some(1));
    assert_eq!(everything(&copy, u64::MAX), vec![(b"a".to_vec(), b"one".to_vec())]);
}
