//! Every decoder of disk or network bytes is total: arbitrary input never panics and never makes
//! the decoder allocate more than a small multiple of the input's size.
//!
//! A counting global allocator records, per thread, the bytes requested while one decoder call
//! runs. The bound is `ALLOC_FACTOR × input + ALLOC_SLACK`: enough for a decoded copy of the
//! input, far below what a trusted length or count field (up to 4 GiB) would make a naive decoder
//! request.

use std::path::Path;

use proptest::prelude::*;
use sealkv_crypto::envelope::{self, Header};
use sealkv_crypto::kek::{DekIdentity, EnvKek, KekProvider, LocalKek};
use sealkv_crypto::registry::{Row, RowKey};
use sealkv_crypto::sidecar::Sidecar;
use sealkv_crypto::wire::{self, EncryptionEntry, Registration};
use sealkv_crypto::{Keystore, Purpose};
use sealkv_testkit::{CountingAlloc, requested_during};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const ALLOC_FACTOR: usize = 4;
const ALLOC_SLACK: usize = 4096;

fn keystore() -> Keystore {
    let ks = Keystore::new();
    ks.install(1, Purpose::Storage, &[1; 32]).unwrap();
    ks.install(2, Purpose::Raft, &[2; 32]).unwrap();
    ks
}

/// Runs every decoder over `input` and checks the allocation bound for each.
fn all_decoders(input: &[u8], ks: &Keystore, kek: &LocalKek) -> Result<(), TestCaseError> {
    let limit = ALLOC_FACTOR * input.len() + ALLOC_SLACK;
    let checks: Vec<(&str, usize)> = vec![
        ("classify", requested_during(|| wire::classify(input).is_ok()).1),
        ("encryption entry", requested_during(|| EncryptionEntry::decode(input).is_ok()).1),
        ("hlc lease", requested_during(|| wire::decode_hlc_lease(input).is_ok()).1),
        ("registry key", requested_during(|| RowKey::decode(input).is_ok()).1),
        ("registry row", requested_during(|| Row::decode(input).is_ok()).1),
        ("envelope header", requested_during(|| Header::parse(input, Purpose::Storage).is_ok()).1),
        ("storage envelope", requested_during(|| envelope::open_storage(ks, &[0; 9], b"k", input).is_ok()).1),
        ("raft envelope", requested_during(|| envelope::unwrap_raft(ks, input).is_ok()).1),
        ("sidecar json", requested_during(|| Sidecar::from_json(Path::new("keys.json"), input).is_ok()).1),
        (
            "kek unwrap",
            requested_during(|| kek.unwrap(DekIdentity { purpose: Purpose::Storage, dek_id: 1 }, input).is_ok()).1,
        ),
    ];
    for (name, bytes) in checks {
        prop_assert!(bytes <= limit, "{name} requested {bytes} bytes for {} input bytes", input.len());
    }
    Ok(())
}

fn seeds() -> Vec<Vec<u8>> {
    let reg = Registration { dek_id: 1, full_node_id: 7, local_epoch: 1 };
    let mut v: Vec<Vec<u8>> = vec![
        EncryptionEntry::Register(reg).encode().unwrap(),
        EncryptionEntry::Bootstrap(wire::Bootstrap {
            storage_dek_id: 1,
            wrapped_storage: vec![9; 60],
            raft_dek_id: 2,
            wrapped_raft: vec![8; 60],
            registrations: vec![reg; 3],
        })
        .encode()
        .unwrap(),
        EncryptionEntry::RewrapDeks(vec![
            wire::WrappedDek { dek_id: 1, purpose: Purpose::Storage, wrapped: vec![1; 60] };
            3
        ])
        .encode()
        .unwrap(),
        br#"{"version":1,"raft_applied_index":0,"storage_envelope_active":false,"storage_cutover_index":0,"raft_envelope_cutover_index":0,"active":{"storage":0,"raft":0},"keys":{}}"#.to_vec(),
    ];
    // Hostile lengths and counts that a trusting decoder would allocate for.
    v.push(vec![0x04, 0x01, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]);
    v.push(vec![0x05, 0x01, 0x02, 0xFF, 0xFF, 0xFF, 0xFF]);
    v.push(vec![0x05, 0x01, 0x02, 0x00, 0x00, 0x10, 0x00]);
    v.push(vec![0x04, 0x01, 0, 0, 0, 1, 0, 0, 0, 1, 9, 0, 0, 0, 2, 0, 0, 0, 1, 8, 0x00, 0x00, 0x40, 0x00]);
    v
}

#[test]
fn hostile_counts_do_not_allocate() {
    let ks = keystore();
    let kek = EnvKek::from_value("T", &"00".repeat(32)).unwrap();
    for s in seeds() {
        all_decoders(&s, &ks, &kek).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..512)) {
        let ks = keystore();
        let kek = EnvKek::from_value("T", &"00".repeat(32)).unwrap();
        all_decoders(&input, &ks, &kek)?;
    }

    #[test]
    fn mutated_valid_inputs(seed in 0usize..8, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let ks = keystore();
        let kek = EnvKek::from_value("T", &"00".repeat(32)).unwrap();
        let seeds = seeds();
        let mut input = seeds[seed % seeds.len()].clone();
        for (at, x) in flips {
            if !input.is_empty() {
                let i = at % input.len();
                input[i] ^= x;
            }
        }
        input.truncate(cut % (input.len() + 1));
        all_decoders(&input, &ks, &kek)?;
    }
}
