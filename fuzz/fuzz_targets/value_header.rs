//! Value header parsing: never panics; whatever parses re-encodes to the same 9 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkv_store::value::ValueHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, raw, _)) = ValueHeader::split(data) {
        assert_eq!(&h.encode(), raw);
    }
});
