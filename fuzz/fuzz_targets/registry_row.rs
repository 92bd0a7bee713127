//! Writer-registry key and value decoders; decoded values re-encode to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkv_crypto::registry::{Row, RowKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = RowKey::decode(data) {
        assert_eq!(&k.encode()[..], data);
    }
    if let Ok(v) = Row::decode(data) {
        assert_eq!(&v.encode()[..], data);
    }
});
