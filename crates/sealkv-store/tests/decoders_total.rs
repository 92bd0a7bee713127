//! Every decoder of stored or streamed bytes in the store is total: arbitrary and mutated inputs
//! never panic and never make it request more than the input justifies (counted per thread).
//! The snapshot reader's fixed buffers (a 256 KiB read buffer, ≤ 64 KiB first chunk per record)
//! are a constant, not a function of claimed lengths.

mod common;

use proptest::prelude::*;
use sealkv_store::value::ValueHeader;
use sealkv_store::{SnapshotHeader, SnapshotReader, key};
use sealkv_testkit::{CountingAlloc, requested_during};

use common::*;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const FACTOR: usize = 4;
const SLACK: usize = 4096;
const STREAM_SLACK: usize = 512 << 10;

fn read_all(input: &[u8]) -> usize {
    let Ok(mut r) = SnapshotReader::new(input) else { return 0 };
    let mut n = 0;
    while let Ok(Some(_)) = r.next_record() {
        n += 1;
    }
    n
}

fn check(input: &[u8]) -> Result<(), TestCaseError> {
    let limit = FACTOR * input.len() + SLACK;
    for (name, bytes) in [
        ("mvcc key", requested_during(|| key::decode(input).is_ok()).1),
        ("value header", requested_during(|| ValueHeader::split(input).is_ok()).1),
        ("snapshot header", requested_during(|| SnapshotHeader::read(&mut &input[..]).is_ok()).1),
    ] {
        prop_assert!(bytes <= limit, "{name} requested {bytes} bytes for {} input bytes", input.len());
    }
    let stream = requested_during(|| read_all(input)).1;
    prop_assert!(stream <= limit + STREAM_SLACK, "snapshot reader requested {stream} bytes");
    Ok(())
}

fn valid_stream() -> Vec<u8> {
    static STREAM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    STREAM.get_or_init(small_encrypted_stream).clone()
}

#[test]
fn hostile_lengths_do_not_allocate() {
    // A data record claiming a 4 GiB key, then a 512 MiB value, with nothing behind them.
    let mut s = valid_stream();
    let body_at = SnapshotHeader::read(&mut &s[..]).map(|h| h.encode().unwrap().len()).unwrap();
    s.truncate(body_at);
    for claim in
        [[0x01, 0xFF, 0xFF, 0xFF, 0xFF].to_vec(), [&[0x01, 0, 0, 0, 12][..], &[0; 12], &[0x20, 0, 0, 0]].concat()]
    {
        let mut bad = s.clone();
        bad.extend_from_slice(&claim);
        let (n, bytes) = requested_during(|| read_all(&bad));
        assert_eq!(n, 0);
        assert!(bytes < STREAM_SLACK + SLACK, "requested {bytes}");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&input)?;
    }

    #[test]
    fn mutated_snapshot_streams(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut s = valid_stream();
        for (at, x) in flips {
            let i = at % s.len();
            s[i] ^= x;
        }
        s.truncate(cut % (s.len() + 1));
        check(&s)?;
    }
}
