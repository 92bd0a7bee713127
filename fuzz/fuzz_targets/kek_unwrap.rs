//! KEK unwrap of wrapped DEK bytes read from a sidecar or a Raft entry.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sealkv_crypto::Purpose;
use sealkv_crypto::kek::{DekIdentity, EnvKek, KekProvider, LocalKek};

static KEK: LazyLock<LocalKek> = LazyLock::new(|| EnvKek::from_value("FUZZ", &"42".repeat(32)).expect("kek"));

fuzz_target!(|data: &[u8]| {
    let id = DekIdentity { purpose: Purpose::Storage, dek_id: 1 };
    assert!(KEK.unwrap(id, data).is_err(), "random bytes must never unwrap");
});
