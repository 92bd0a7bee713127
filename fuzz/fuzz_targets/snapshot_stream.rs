//! Snapshot stream reading (header and every record to the end check): never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealkv_store::SnapshotReader;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut r) = SnapshotReader::new(data) {
        while let Ok(Some(_)) = r.next_record() {}
    }
});
