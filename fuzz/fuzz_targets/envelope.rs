//! Storage and raft envelope opening with loaded keys: never panics, never opens forged bytes.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sealkv_crypto::envelope::{self, Header};
use sealkv_crypto::{Keystore, Purpose};

static KEYS: LazyLock<Keystore> = LazyLock::new(|| {
    let ks = Keystore::new();
    ks.install(1, Purpose::Storage, &[1; 32]).expect("install");
    ks.install(2, Purpose::Raft, &[2; 32]).expect("install");
    ks
});

fuzz_target!(|data: &[u8]| {
    let _ = Header::parse(data, Purpose::Storage);
    let _ = Header::parse(data, Purpose::Raft);
    let (vh, rest) = data.split_at(data.len().min(9));
    let mut header = [0u8; 9];
    header[..vh.len()].copy_from_slice(vh);
    let _ = envelope::open_storage(&KEYS, &header, b"key", rest);
    let _ = envelope::unwrap_raft(&KEYS, data);
});
