//! Storage and raft envelopes: layout pins, round trips, and the tamper matrix.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use proptest::prelude::*;
use sealkv_crypto::envelope::{
    self, DecryptReason, HEADER_LEN, IntegrityError, OVERHEAD, Sealer, seal_storage_with_nonce, wrap_raft_with_nonce,
};
use sealkv_crypto::{Keystore, NonceFactory, Purpose};

const SKEY: [u8; 32] = [0x11; 32];
const RKEY: [u8; 32] = [0x22; 32];
const SID: u32 = 0x0102_0304;
const RID: u32 = 0x0A0B_0C0D;
const NONCE: [u8; 12] = [0xAB, 0xCD, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0, 1];
const VH: [u8; 9] = [0x02, 0, 0, 0, 0, 0, 0, 0x03, 0xE8]; // encrypted, expire_at 1000
const MVCC_KEY: &[u8] = b"user:1\xff\xff\xff\xff\xff\xff\xff\xfe";

fn keystore() -> Keystore {
    let ks = Keystore::new();
    ks.install(SID, Purpose::Storage, &SKEY).unwrap();
    ks.install(RID, Purpose::Raft, &RKEY).unwrap();
    ks.set_active(Purpose::Storage, SID).unwrap();
    ks.set_active(Purpose::Raft, RID).unwrap();
    ks
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn raw_seal(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let mut buf = pt.to_vec();
    k.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf).unwrap();
    buf
}

#[test]
fn storage_envelope_layout_pin() {
    let ks = keystore();
    let env = seal_storage_with_nonce(&ks.get(SID).unwrap(), NONCE, true, &VH, MVCC_KEY, b"hello").unwrap();
    // Header: ver 01, flag 01 (compressed), key_id 01020304, nonce.
    assert_eq!(hex(&env[..HEADER_LEN]), "010101020304abcd00070000000000000001");
    assert_eq!(env.len(), OVERHEAD + 5);
    // The body is AES-256-GCM over the plaintext with AAD = ver‖flag‖key_id‖value_header‖mvcc_key,
    // composed here independently of the crate.
    let aad = [&[0x01, 0x01, 0x01, 0x02, 0x03, 0x04][..], &VH, MVCC_KEY].concat();
    assert_eq!(&env[HEADER_LEN..], &raw_seal(&SKEY, NONCE, &aad, b"hello")[..]);
    // Known-answer vector: the whole envelope, pinned.
    assert_eq!(hex(&env), STORAGE_PIN);
}

#[test]
fn raft_envelope_layout_pin() {
    let ks = keystore();
    let env = wrap_raft_with_nonce(&ks.get(RID).unwrap(), NONCE, b"\x00payload").unwrap();
    assert_eq!(hex(&env[..HEADER_LEN]), "01000a0b0c0dabcd00070000000000000001");
    let aad = [b'R', 0x01, 0x0A, 0x0B, 0x0C, 0x0D];
    assert_eq!(&env[HEADER_LEN..], &raw_seal(&RKEY, NONCE, &aad, b"\x00payload")[..]);
    assert_eq!(hex(&env), RAFT_PIN);
}

const STORAGE_PIN: &str = "010101020304abcd00070000000000000001e10d3058f13d07932c33f18f833e692e1987197d05";
const RAFT_PIN: &str = "01000a0b0c0dabcd000700000000000000012d259a339e1742ac8a74c9db219af39650420386f25ce6cf";

#[test]
fn empty_plaintext_round_trips_as_empty() {
    let ks = keystore();
    let s = Sealer::new(ks.active(Purpose::Storage).unwrap(), NonceFactory::new(1, 1).unwrap());
    let env = s.seal_storage(false, &VH, MVCC_KEY, b"").unwrap();
    assert_eq!(env.len(), OVERHEAD);
    let o = envelope::open_storage(&ks, &VH, MVCC_KEY, &env).unwrap();
    assert_eq!(o.plaintext, b"");
    assert!(!o.compressed);
}

#[test]
fn sealers_refuse_the_wrong_purpose() {
    let ks = keystore();
    let raft_sealer = Sealer::new(ks.get(RID).unwrap(), NonceFactory::new(1, 1).unwrap());
    assert!(raft_sealer.seal_storage(false, &VH, MVCC_KEY, b"x").is_err());
    let storage_sealer = Sealer::new(ks.get(SID).unwrap(), NonceFactory::new(1, 1).unwrap());
    assert!(storage_sealer.wrap_raft(b"x").is_err());
}

#[test]
fn exhausted_nonces_fail_the_seal() {
    let ks = keystore();
    let s = Sealer::new(ks.get(SID).unwrap(), NonceFactory::resume(1, 1, u64::MAX).unwrap());
    assert!(s.seal_storage(false, &VH, MVCC_KEY, b"x").is_err());
    assert!(s.seal_storage(false, &VH, MVCC_KEY, b"x").is_err(), "the latch is permanent");
}

fn sealed() -> (Keystore, Vec<u8>) {
    let ks = keystore();
    let env = seal_storage_with_nonce(&ks.get(SID).unwrap(), NONCE, false, &VH, MVCC_KEY, b"secret value").unwrap();
    (ks, env)
}

#[test]
fn tamper_any_envelope_byte_fails_integrity() {
    let (ks, env) = sealed();
    for i in 0..env.len() {
        for bit in [0x01u8, 0x80] {
            let mut t = env.clone();
            t[i] ^= bit;
            let err = envelope::open_storage(&ks, &VH, MVCC_KEY, &t).unwrap_err();
            let expected = match i {
                0 => DecryptReason::BadVersion,
                1 if bit == 0x80 => DecryptReason::BadFlag,
                2..=5 => DecryptReason::UnknownKeyId,
                _ => DecryptReason::TagMismatch,
            };
            assert_eq!(err.reason(), expected, "byte {i} bit {bit:#x}: {err}");
        }
    }
}

#[test]
fn tamper_value_header_fails_integrity() {
    let (ks, env) = sealed();
    for i in 0..VH.len() {
        let mut vh = VH;
        vh[i] ^= 0x01;
        let err = envelope::open_storage(&ks, &vh, MVCC_KEY, &env).unwrap_err();
        assert_eq!(err.reason(), DecryptReason::TagMismatch, "value header byte {i}");
    }
}

#[test]
fn relocation_and_version_swap_fail_integrity() {
    let (ks, env) = sealed();
    // Another user key.
    let other_key = b"user:2\xff\xff\xff\xff\xff\xff\xff\xfe";
    assert_eq!(
        envelope::open_storage(&ks, &VH, other_key, &env).unwrap_err(),
        IntegrityError::TagMismatch { key_id: SID }
    );
    // Same user key, another version (timestamp bytes differ).
    let mut other_version = MVCC_KEY.to_vec();
    *other_version.last_mut().unwrap() = 0xfd;
    assert!(matches!(envelope::open_storage(&ks, &VH, &other_version, &env), Err(IntegrityError::TagMismatch { .. })));
    // A prefix/extension of the key.
    assert!(envelope::open_storage(&ks, &VH, &MVCC_KEY[..MVCC_KEY.len() - 1], &env).is_err());
}

#[test]
fn retagged_key_id_fails_even_when_that_key_is_loaded() {
    let (ks, env) = sealed();
    ks.install(0x0102_0305, Purpose::Storage, &SKEY).unwrap(); // same bytes, other id
    let mut t = env.clone();
    t[5] = 0x05;
    assert_eq!(
        envelope::open_storage(&ks, &VH, MVCC_KEY, &t).unwrap_err(),
        IntegrityError::TagMismatch { key_id: 0x0102_0305 }
    );
}

#[test]
fn compression_bit_flip_fails() {
    let (ks, env) = sealed();
    let mut t = env.clone();
    t[1] = 0x01;
    assert_eq!(envelope::open_storage(&ks, &VH, MVCC_KEY, &t).unwrap_err().reason(), DecryptReason::TagMismatch);
}

#[test]
fn truncation_and_bad_header_fields() {
    let (ks, env) = sealed();
    for len in [0, 1, 17, 18, 33] {
        assert_eq!(
            envelope::open_storage(&ks, &VH, MVCC_KEY, &env[..len]).unwrap_err(),
            IntegrityError::Truncated { len }
        );
    }
    // Dropping the last tag byte keeps the length ≥ 34 but breaks the tag.
    assert_eq!(
        envelope::open_storage(&ks, &VH, MVCC_KEY, &env[..env.len() - 1]).unwrap_err().reason(),
        DecryptReason::TagMismatch
    );
    for v in [0x00u8, 0x02, 0x0F, 0xFF] {
        let mut t = env.clone();
        t[0] = v;
        assert_eq!(envelope::open_storage(&ks, &VH, MVCC_KEY, &t).unwrap_err(), IntegrityError::BadVersion(v));
    }
    for f in [0x02u8, 0x80, 0xFE] {
        let mut t = env.clone();
        t[1] = f;
        assert_eq!(envelope::open_storage(&ks, &VH, MVCC_KEY, &t).unwrap_err(), IntegrityError::BadFlag(f));
    }
    let mut t = env.clone();
    t[2..6].copy_from_slice(&[0, 0, 0, 0]);
    assert_eq!(envelope::open_storage(&ks, &VH, MVCC_KEY, &t).unwrap_err().reason(), DecryptReason::UnknownKeyId);
}

#[test]
fn layer_confusion_fails_both_ways() {
    let ks = keystore();
    // Use the SAME key id and bytes for both purposes in two keystores, so only the AAD and the
    // purpose check stand between the layers.
    let shared = Keystore::new();
    shared.install(SID, Purpose::Storage, &SKEY).unwrap();
    let raft_view = Keystore::new();
    raft_view.install(SID, Purpose::Raft, &SKEY).unwrap();

    let storage_env =
        seal_storage_with_nonce(&shared.get(SID).unwrap(), NONCE, false, &[0; 9], b"", b"\x00payload").unwrap();
    assert_eq!(envelope::unwrap_raft(&raft_view, &storage_env).unwrap_err().reason(), DecryptReason::TagMismatch);
    assert_eq!(envelope::unwrap_raft(&shared, &storage_env).unwrap_err().reason(), DecryptReason::UnknownKeyId);

    let raft_env = wrap_raft_with_nonce(&raft_view.get(SID).unwrap(), NONCE, b"\x00payload").unwrap();
    for (vh, key) in [([0u8; 9], &b""[..]), (VH, MVCC_KEY)] {
        assert_eq!(
            envelope::open_storage(&shared, &vh, key, &raft_env).unwrap_err().reason(),
            DecryptReason::TagMismatch
        );
    }
    assert_eq!(
        envelope::open_storage(&raft_view, &[0; 9], b"", &raft_env).unwrap_err().reason(),
        DecryptReason::UnknownKeyId
    );

    // And with the real keystore: a storage envelope offered to the raft unwrap names a storage id.
    let env = seal_storage_with_nonce(&ks.get(SID).unwrap(), NONCE, false, &VH, MVCC_KEY, b"v").unwrap();
    assert!(envelope::unwrap_raft(&ks, &env).is_err());
}

#[test]
fn raft_envelope_tamper_any_byte() {
    let ks = keystore();
    let env = wrap_raft_with_nonce(&ks.get(RID).unwrap(), NONCE, b"\x00some command").unwrap();
    for i in 0..env.len() {
        let mut t = env.clone();
        t[i] ^= 0x01;
        assert!(envelope::unwrap_raft(&ks, &t).is_err(), "byte {i}");
    }
    assert_eq!(envelope::unwrap_raft(&ks, &env).unwrap(), (RID, b"\x00some command".to_vec()));
}

proptest! {
    #[test]
    fn storage_round_trip(pt in proptest::collection::vec(any::<u8>(), 0..2048),
                         key in proptest::collection::vec(any::<u8>(), 0..600),
                         vh in any::<[u8; 9]>(), compressed in any::<bool>()) {
        let ks = keystore();
        let s = Sealer::new(ks.get(SID).unwrap(), NonceFactory::new(3, 4).unwrap());
        let env = s.seal_storage(compressed, &vh, &key, &pt).unwrap();
        let o = envelope::open_storage(&ks, &vh, &key, &env).unwrap();
        prop_assert_eq!(o.plaintext, pt);
        prop_assert_eq!(o.compressed, compressed);
        prop_assert_eq!(o.key_id, SID);
    }

    #[test]
    fn raft_round_trip(pt in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let ks = keystore();
        let s = Sealer::new(ks.get(RID).unwrap(), NonceFactory::new(3, 4).unwrap());
        let env = s.wrap_raft(&pt).unwrap();
        prop_assert_eq!(envelope::unwrap_raft(&ks, &env).unwrap(), (RID, pt));
    }
}
