//! FSM payload decoders: classify, encryption entries, HLC lease. Anything that decodes must
//! re-encode to the same bytes (the codec is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkv_crypto::wire::{self, EncryptionEntry};

fuzz_target!(|data: &[u8]| {
    let _ = wire::classify(data);
    let _ = wire::decode_hlc_lease(data);
    if let Ok(entry) = EncryptionEntry::decode(data) {
        assert_eq!(entry.encode().expect("a decoded entry re-encodes"), data);
    }
});
