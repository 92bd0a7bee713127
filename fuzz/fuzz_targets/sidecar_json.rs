//! Sidecar JSON: parse + validate; anything accepted round-trips through the writer.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sealkv_crypto::sidecar::Sidecar;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Sidecar::from_json(Path::new("keys.json"), data) {
        let again = s.to_json().expect("a validated sidecar renders");
        assert_eq!(Sidecar::from_json(Path::new("keys.json"), &again).expect("re-parses"), s);
    }
});
