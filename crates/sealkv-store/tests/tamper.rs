//! Tamper tests on real stored bytes: every edit of a sealed version is a typed integrity error
//! on read, never other bytes and never "absent". Plus the cleartext regressions the format
//! promises (a cleartext value starting with 0x01, an empty sealed value).

mod common;

use sealkv_crypto::IntegrityError;
use sealkv_store::{Direction, IntegrityReason, KeyRange, RewriteOptions, RewriteTarget, StoreError, key};

use common::*;

const TS: u64 = 100;
const NOW: u64 = 1_000;
const FAR: u64 = u64::MAX - 1;

fn reason(r: Result<Option<Vec<u8>>, StoreError>) -> IntegrityReason {
    match r {
        Err(StoreError::Integrity { reason, .. }) => reason,
        other => panic!("expected an integrity error, got {other:?}"),
    }
}

/// Writes `copies` identically-valued sealed versions under `prefix/i` and returns their raw bytes.
fn sealed_copies(dir: &std::path::Path, value: &[u8], expire: u64, copies: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let keys = keystore();
    let store = open_sealed(dir, &keys, 1);
    let mut b = store.batch();
    for i in 0..copies {
        b.put(format!("t/{i:05}").as_bytes(), TS, value, expire).unwrap();
    }
    b.commit(&applied(2), sealkv_store::Durability::Synced).unwrap();
    drop(store);
    raw_versions(dir)
}

#[test]
fn every_bit_flip_of_every_stored_byte_is_an_integrity_error() {
    // A short value, a compressible one (compressed before sealing) and one with a TTL.
    for (value, expire) in [(b"hello".to_vec(), 0), (vec![b'x'; 300], 0), (b"ttl".to_vec(), FAR)] {
        let dir = tempfile::tempdir().unwrap();
        let probe = sealed_copies(dir.path(), &value, expire, 1);
        let stored_len = probe[0].1.len();
        let masks = [0x01u8, 0x02, 0x04, 0x80];
        let copies = stored_len * masks.len();
        let dir = tempfile::tempdir().unwrap();
        let raw = sealed_copies(dir.path(), &value, expire, copies);
        assert!(raw.iter().all(|(_, v)| v.len() == stored_len));
        for (i, (k, v)) in raw.iter().enumerate() {
            let mut t = v.clone();
            t[i / masks.len()] ^= masks[i % masks.len()];
            raw_write(dir.path(), k, &t);
        }
        let keys = keystore();
        let store = open(dir.path(), &keys, true);
        for (i, (k, _)) in raw.iter().enumerate() {
            let (user, _) = key::decode(k).unwrap();
            let r = reason(store.get(&user, TS, NOW));
            let (byte, mask) = (i / masks.len(), masks[i % masks.len()]);
            if byte == 0 && mask == 0x02 {
                assert_eq!(r, IntegrityReason::Rebadged { ts: TS, since: 0 }, "encryption state flipped to cleartext");
            }
            if byte >= 9 + 18 {
                assert!(
                    matches!(r, IntegrityReason::Envelope(IntegrityError::TagMismatch { .. })),
                    "byte {byte}: {r:?}"
                );
            }
        }
        // A scan stops at the first tampered version with the error.
        let mut scan = store.scan(&KeyRange::all(), TS, NOW, Direction::Forward);
        assert!(matches!(scan.next(), Some(Err(StoreError::Integrity { .. }))));
        assert!(scan.next().is_none());
    }
}

#[test]
fn truncations_relocations_ttl_edits_and_retags_are_integrity_errors() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open_sealed(dir.path(), &keys, 1);
    put(&store, 2, b"k1", TS, b"value one", 0);
    put(&store, 3, b"k1", TS + 1, b"value two", 0);
    put(&store, 4, b"k2", TS, b"other", 0);
    put(&store, 5, b"ttl", TS, b"expiring", NOW + 500);
    drop(store);
    let raw = raw_versions(dir.path());
    let find = |k: &[u8], ts: u64| raw.iter().find(|(mk, _)| *mk == key::encode(k, ts).unwrap()).unwrap().1.clone();
    let (k1_old, k1_new, ttl) = (find(b"k1", TS), find(b"k1", TS + 1), find(b"ttl", TS));

    let check = |label: &str,
                 edit: &dyn Fn(&std::path::Path),
                 user: &[u8],
                 ts: u64,
                 want: &dyn Fn(&IntegrityReason) -> bool| {
        let d = tempfile::tempdir().unwrap();
        for (k, v) in &raw {
            raw_write(d.path(), k, v);
        }
        edit(d.path());
        let store = open(d.path(), &keys, true);
        let r = reason(store.get(user, ts, NOW));
        assert!(want(&r), "{label}: {r:?}");
    };
    let tag_mismatch = |r: &IntegrityReason| matches!(r, IntegrityReason::Envelope(IntegrityError::TagMismatch { .. }));

    // Moved to another key.
    check("to another key", &|d| raw_write(d, &key::encode(b"k2", TS).unwrap(), &k1_old), b"k2", TS, &tag_mismatch);
    // Moved to another version of the same key.
    check(
        "to another version",
        &|d| raw_write(d, &key::encode(b"k1", TS + 1).unwrap(), &k1_old),
        b"k1",
        TS + 1,
        &tag_mismatch,
    );
    check(
        "to a new version",
        &|d| raw_write(d, &key::encode(b"k1", TS + 5).unwrap(), &k1_new),
        b"k1",
        TS + 9,
        &tag_mismatch,
    );
    // TTL removed, or moved into the past (which must not read as "absent").
    for expire in [0u64, 1, NOW, NOW + 501] {
        let mut t = ttl.clone();
        t[1..9].copy_from_slice(&expire.to_be_bytes());
        check("ttl edit", &|d| raw_write(d, &key::encode(b"ttl", TS).unwrap(), &t), b"ttl", TS, &tag_mismatch);
    }
    // Re-tagged to the other (loaded) storage key, and to an unknown one.
    let mut retag = k1_old.clone();
    retag[11..15].copy_from_slice(&DEK_B.to_be_bytes());
    check("retag", &|d| raw_write(d, &key::encode(b"k1", TS).unwrap(), &retag), b"k1", TS, &tag_mismatch);
    retag[11..15].copy_from_slice(&0xDEAD_BEEFu32.to_be_bytes());
    check("unknown key id", &|d| raw_write(d, &key::encode(b"k1", TS).unwrap(), &retag), b"k1", TS, &|r| {
        matches!(r, IntegrityReason::Envelope(IntegrityError::UnknownKeyId { key_id: 0xDEAD_BEEF, .. }))
    });
    // Every truncation.
    for len in 0..k1_old.len() {
        let t = k1_old[..len].to_vec();
        check("truncated", &|d| raw_write(d, &key::encode(b"k1", TS).unwrap(), &t), b"k1", TS, &|_| true);
    }
    // Rebadged as a tombstone keeps its body, which tombstones never have.
    let mut tomb = k1_new.clone();
    tomb[0] = 0b001;
    check("rebadged tombstone", &|d| raw_write(d, &key::encode(b"k1", TS + 1).unwrap(), &tomb), b"k1", TS + 1, &|r| {
        matches!(r, IntegrityReason::Header(_))
    });
    // The keystore no longer holding the DEK.
    let store = open(dir.path(), &std::sync::Arc::new(sealkv_crypto::Keystore::new()), true);
    assert!(matches!(
        reason(store.get(b"k1", TS, NOW)),
        IntegrityReason::Envelope(IntegrityError::UnknownKeyId { .. })
    ));
}

#[test]
fn cleartext_starting_with_envelope_version_byte_reads_back_verbatim_after_enabling() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, true);
    // A cleartext value that is byte-for-byte a valid-looking envelope under DEK A.
    let lookalike = sealkv_crypto::envelope::seal_storage_with_nonce(
        &keys.get(DEK_A).unwrap(),
        [0; 12],
        false,
        &[0b010, 0, 0, 0, 0, 0, 0, 0, 0],
        &key::encode(b"k", 1).unwrap(),
        b"x",
    )
    .unwrap();
    for (i, v) in [vec![0x01], vec![0x01, 0x00, 0x00, 0x00], lookalike.clone()].iter().enumerate() {
        put(&store, i as u64 + 1, format!("k{i}").as_bytes(), 1 + i as u64, v, 0);
    }
    store.set_sealer(Some(sealer(&keys, DEK_A)));
    enable(&store, 10);
    put(&store, 11, b"empty", 20, b"", 0);
    let check = |store: &sealkv_store::Store| {
        assert_eq!(store.get(b"k0", 50, NOW).unwrap(), Some(vec![0x01]));
        assert_eq!(store.get(b"k1", 50, NOW).unwrap(), Some(vec![0x01, 0, 0, 0]));
        assert_eq!(store.get(b"k2", 50, NOW).unwrap(), Some(lookalike.clone()));
        // An empty sealed value exists; a missing key does not.
        assert_eq!(store.get(b"empty", 50, NOW).unwrap(), Some(vec![]));
        assert_eq!(store.get(b"missing", 50, NOW).unwrap(), None);
    };
    check(&store);
    assert_eq!(store.value_counts().unwrap().cleartext, 3);
    drop(store);
    let store = open(dir.path(), &keys, true);
    check(&store);
    store.set_sealer(Some(sealer(&keys, DEK_A)));
    store.rewrite(RewriteOptions::new(RewriteTarget::KeyId(DEK_A)), |_| {}).unwrap();
    assert_eq!(store.value_counts().unwrap().cleartext, 0);
    check(&store);
}

#[test]
fn rebadge_guard_tightens_to_zero_after_a_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open(dir.path(), &keys, true);
    put(&store, 1, b"old", 5, b"plain", 0);
    store.set_sealer(Some(sealer(&keys, DEK_A)));
    enable(&store, 2);
    assert_eq!(store.storage_envelope_since(), Some(5));
    put(&store, 3, b"new", 6, b"sealed", 0);
    drop(store);
    // Forge a cleartext version newer than the activation: refused.
    let forged = [&[0u8; 9][..], b"forged"].concat();
    raw_write(dir.path(), &key::encode(b"new", 7).unwrap(), &forged);
    let store = open(dir.path(), &keys, true);
    // The newest-version index still names ts 6, so a point read returns the genuine value; a scan
    // meets the forgery and refuses it.
    assert_eq!(store.get(b"new", 7, NOW).unwrap(), Some(b"sealed".to_vec()));
    let scanned: Result<Vec<_>, _> = store.scan(&KeyRange::all(), 7, NOW, Direction::Forward).collect();
    assert_eq!(reason(scanned.map(|_| None)), IntegrityReason::Rebadged { ts: 7, since: 5 });
    drop(store);
    // Pointing the index at the forgery too makes point reads meet it: refused.
    raw_write_in(dir.path(), "latest", b"new\x00\x01", &7u64.to_be_bytes());
    let store = open(dir.path(), &keys, true);
    assert_eq!(reason(store.get(b"new", 7, NOW)), IntegrityReason::Rebadged { ts: 7, since: 5 });
    assert_eq!(store.get(b"old", 7, NOW).unwrap(), Some(b"plain".to_vec()));
    // A rewrite refuses to seal the forged cleartext (it is not trusted), and nothing moves.
    store.set_sealer(Some(sealer(&keys, DEK_B)));
    assert!(matches!(
        store.rewrite(RewriteOptions::new(RewriteTarget::AllButActive), |_| {}),
        Err(StoreError::Integrity { reason: IntegrityReason::Rebadged { .. }, .. })
    ));
    assert_eq!(store.storage_envelope_since(), Some(5));
    drop(store);
    // Without the forgery, the rewrite seals everything and old cleartext is then refused too.
    raw_remove(dir.path(), &key::encode(b"new", 7).unwrap());
    let store = open(dir.path(), &keys, true);
    store.set_sealer(Some(sealer(&keys, DEK_B)));
    let done = store.rewrite(RewriteOptions::new(RewriteTarget::AllButActive), |_| {}).unwrap();
    assert_eq!((done.versions_resealed, done.finished), (2, true));
    assert_eq!(store.storage_envelope_since(), Some(0));
    assert_eq!(store.get(b"old", 7, NOW).unwrap(), Some(b"plain".to_vec()));
    drop(store);
    raw_write(dir.path(), &key::encode(b"old", 5).unwrap(), &[&[0u8; 9][..], b"plain"].concat());
    let store = open(dir.path(), &keys, true);
    assert_eq!(reason(store.get(b"old", 7, NOW)), IntegrityReason::Rebadged { ts: 5, since: 0 });
}

#[test]
fn active_envelope_without_a_sealing_key_halts_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open_sealed(dir.path(), &keys, 1);
    drop(store);
    let store = open(dir.path(), &keys, true);
    let mut b = store.batch();
    assert!(matches!(b.put(b"k", 2, b"v", 0), Err(StoreError::NoSealingKey)));
    drop(b);
    assert_eq!(store.applied().unwrap().unwrap().index, 1);
    assert_eq!(store.get(b"k", 9, NOW).unwrap(), None);
}

/// Values are sealed when the batch commits. A seal that fails there (here the sealer's nonce
/// space is spent) fails the commit: none of the batch's writes lands, the applied index stays,
/// and reads still see what was committed before.
#[test]
fn a_seal_that_fails_at_commit_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keystore();
    let store = open_sealed(dir.path(), &keys, 1);
    put(&store, 2, b"kept", 2, b"v", 0);
    let spent = sealkv_crypto::NonceFactory::resume(0x0001, 0xFE00, u64::MAX).unwrap();
    store.set_sealer(Some(std::sync::Arc::new(sealkv_crypto::Sealer::new(keys.get(DEK_A).unwrap(), spent))));
    let mut b = store.batch();
    b.put(b"new", 3, b"v", 0).unwrap();
    b.put(b"kept", 3, b"changed", 0).unwrap();
    assert!(matches!(b.commit(&applied(3), sealkv_store::Durability::Synced), Err(StoreError::Seal(_))));
    assert_eq!(store.applied().unwrap().unwrap().index, 2);
    assert_eq!(store.get(b"new", 9, NOW).unwrap(), None);
    assert_eq!(store.get(b"kept", 9, NOW).unwrap(), Some(b"v".to_vec()));
    drop(store);
    let store = open(dir.path(), &keys, true);
    assert_eq!(store.get(b"kept", 9, NOW).unwrap(), Some(b"v".to_vec()));
    assert_eq!(store.get(b"new", 9, NOW).unwrap(), None);
}
