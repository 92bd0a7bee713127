//! The refused-open counters behind `sealkv_encryption_decrypt_failures_total{reason}`: every
//! refusal of a storage or raft envelope counts once under its own reason, and a good open counts
//! nothing. Its own test binary, because the counters are process-wide.

use sealkv_crypto::envelope::{self, DecryptReason};
use sealkv_crypto::{Keystore, NonceFactory, Purpose, Sealer};

fn count(reason: DecryptReason) -> u64 {
    envelope::decrypt_failures().iter().find(|(r, _)| *r == reason).map(|(_, n)| *n).expect("every reason is listed")
}

#[test]
fn every_refused_open_counts_once_under_its_reason() {
    let keys = Keystore::new();
    keys.install(7, Purpose::Storage, &[0x42; 32]).expect("install storage");
    keys.install(9, Purpose::Raft, &[0x24; 32]).expect("install raft");
    let storage = Sealer::new(keys.get(7).expect("installed"), NonceFactory::new(1, 1).expect("nonces"));
    let raft = Sealer::new(keys.get(9).expect("installed"), NonceFactory::new(1, 1).expect("nonces"));
    let header = [0b010, 0, 0, 0, 0, 0, 0, 0, 0];
    let key = b"user:1\xff\xff\xff\xff\xff\xff\xff\xfe";
    let sealed = storage.seal_storage(false, &header, key, b"hello").expect("seal");
    let wrapped = raft.wrap_raft(b"payload").expect("wrap");
    let before = envelope::decrypt_failures();
    assert_eq!(before.len(), DecryptReason::ALL.len());

    // Good opens count nothing.
    envelope::open_storage(&keys, &header, key, &sealed).expect("opens");
    envelope::unwrap_raft(&keys, &wrapped).expect("unwraps");
    assert_eq!(envelope::decrypt_failures(), before);

    let refuse = |bytes: &[u8], raft: bool, reason: DecryptReason| {
        let was = count(reason);
        let err = if raft {
            envelope::unwrap_raft(&keys, bytes).expect_err("refused").reason()
        } else {
            envelope::open_storage(&keys, &header, key, bytes).expect_err("refused").reason()
        };
        assert_eq!(err, reason);
        assert_eq!(count(reason), was + 1, "{reason:?} counted once");
    };
    let mut tampered = sealed.clone();
    *tampered.last_mut().expect("non-empty") ^= 1;
    refuse(&tampered, false, DecryptReason::TagMismatch);
    let mut other_place = wrapped.clone();
    other_place[10] ^= 1; // the nonce: the tag no longer verifies
    refuse(&other_place, true, DecryptReason::TagMismatch);
    let mut unknown = sealed.clone();
    unknown[2..6].copy_from_slice(&77u32.to_be_bytes());
    refuse(&unknown, false, DecryptReason::UnknownKeyId);
    refuse(&sealed[..10], false, DecryptReason::Truncated);
    let mut version = wrapped.clone();
    version[0] = 0x02;
    refuse(&version, true, DecryptReason::BadVersion);
    let mut flag = wrapped.clone();
    flag[1] = 0x01; // a raft envelope carries no flags
    refuse(&flag, true, DecryptReason::BadFlag);

    let after = envelope::decrypt_failures();
    let total = |c: &[(DecryptReason, u64)]| c.iter().map(|(_, n)| n).sum::<u64>();
    assert_eq!(total(&after), total(&before) + 6, "nothing else counted");
}
