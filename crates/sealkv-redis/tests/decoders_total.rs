//! Every decoder of the Redis frontend's bytes is total: client requests (RESP), command-batch
//! entries from the Raft log, meta and count records from the store, and reply lists from the
//! apply or a leader. Arbitrary and mutated inputs never panic and never make a decoder request
//! more memory than the input justifies (counted per thread).

use proptest::prelude::*;
use sealkv_redis::layout::{Counts, Meta};
use sealkv_redis::reply_list::{decode_replies, encode_replies};
use sealkv_redis::resp::{self, Limits};
use sealkv_redis::rules::Rules;
use sealkv_redis::{Group, Reply, entry};
use sealkv_testkit::{CountingAlloc, requested_during};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const SLACK: usize = 4096;

/// A decoded value may take more memory than its encoding: a reply list of nils holds a whole
/// `Reply` for each 4-byte tag, a command an argument's `Vec` for each 4-byte length.
fn limit(input: &[u8]) -> usize {
    (size_of::<Reply>() / 4 + 2) * input.len() + SLACK
}

fn check(input: &[u8]) -> Result<(), TestCaseError> {
    for (name, bytes) in [
        ("RESP request", requested_during(|| resp::parse(input, &Limits::default()).is_ok()).1),
        ("command batch", requested_during(|| entry::decode(input).is_ok()).1),
        ("command batch entry", requested_during(|| entry::decode_entry(input).is_ok()).1),
        ("meta record", requested_during(|| Meta::decode(input).is_ok()).1),
        ("count record", requested_during(|| Counts::decode(input).is_ok()).1),
        ("reply list", requested_during(|| decode_replies(input).is_ok()).1),
    ] {
        prop_assert!(bytes <= limit(input), "{name} requested {bytes} bytes for {} input bytes", input.len());
    }
    Ok(())
}

/// One valid encoding of each format, to mutate.
fn samples() -> Vec<Vec<u8>> {
    let group = Group {
        watches: vec![(b"w".to_vec(), 7)],
        cmds: vec![vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()], vec![b"GET".to_vec(), b"k".to_vec()]],
        exec: true,
    };
    vec![
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n".to_vec(),
        b"set k \"v w\"\r\n".to_vec(),
        entry::encode_entry(Rules::CURRENT, &[group, Group::single(vec![b"PING".to_vec()])]),
        Meta::String(b"value".to_vec()).encode(),
        encode_replies(&[
            Reply::Array(vec![Reply::bulk("a"), Reply::Map(vec![(Reply::bulk("k"), Reply::Double(1.5))])]),
            Reply::err("ERR x"),
        ]),
    ]
}

#[test]
fn hostile_lengths_do_not_allocate() {
    let claims: [&[u8]; 4] = [
        // A 4 GiB bulk argument and 2^31 arguments, with nothing behind them.
        b"*1\r\n$4294967296\r\n",
        b"*2147483648\r\n",
        // A reply list of 2^60 replies; a bulk reply of 2^40 bytes.
        &[0, 0, 0, 0, 0, 0, 0, 0x10],
        &[1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
    ];
    for input in claims {
        check(input).unwrap();
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&input)?;
    }

    #[test]
    fn mutated_encodings(which in any::<usize>(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let samples = samples();
        let mut s = samples[which % samples.len()].clone();
        for (at, x) in flips {
            let i = at % s.len();
            s[i] ^= x;
        }
        s.truncate(cut % (s.len() + 1));
        check(&s)?;
    }
}
