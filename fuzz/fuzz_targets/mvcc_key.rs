//! MVCC key decoding: never panics; whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkv_store::key;

fuzz_target!(|data: &[u8]| {
    if let Ok((user, ts)) = key::decode(data) {
        assert_eq!(key::encode(&user, ts).expect("decoded keys fit"), data);
    }
});
