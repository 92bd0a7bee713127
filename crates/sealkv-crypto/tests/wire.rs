//! FSM wire codec: a byte-layout pin for every entry shape, round trips, and malformed input.

use proptest::prelude::*;
use sealkv_crypto::Purpose;
use sealkv_crypto::wire::{
    self, Bootstrap, EncryptionEntry, PayloadKind, Registration, WireError, WrappedDek, classify,
};

fn reg(dek_id: u32) -> Registration {
    Registration { dek_id, full_node_id: 0x0102_0304_0506_0708, local_epoch: 0x0A0B }
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn pin(entry: EncryptionEntry, expected_hex: &str) {
    let bytes = entry.encode().unwrap();
    assert_eq!(bytes, unhex(expected_hex), "{}", entry.name());
    assert_eq!(EncryptionEntry::decode(&bytes).unwrap(), entry);
}

const REG_HEX: &str = "00000011 0102030405060708 0a0b";

#[test]
fn pin_registration() {
    pin(EncryptionEntry::Register(reg(0x11)), &format!("03 01 {REG_HEX}"));
}

#[test]
fn pin_bootstrap() {
    pin(
        EncryptionEntry::Bootstrap(Bootstrap {
            storage_dek_id: 0x11,
            wrapped_storage: vec![0xAA, 0xBB],
            raft_dek_id: 0x22,
            wrapped_raft: vec![0xCC],
            registrations: vec![reg(0x11)],
        }),
        &format!("04 01 00000011 00000002 aabb 00000022 00000001 cc 00000001 {REG_HEX}"),
    );
}

#[test]
fn pin_rotate_dek() {
    pin(
        EncryptionEntry::RotateDek {
            dek: WrappedDek { dek_id: 0x11, purpose: Purpose::Raft, wrapped: vec![0xEE] },
            proposer: reg(0x11),
        },
        &format!("05 01 01 00000011 02 00000001 ee {REG_HEX}"),
    );
}

#[test]
fn pin_rewrap_deks() {
    pin(
        EncryptionEntry::RewrapDeks(vec![
            WrappedDek { dek_id: 0x11, purpose: Purpose::Storage, wrapped: vec![1, 2] },
            WrappedDek { dek_id: 0x22, purpose: Purpose::Raft, wrapped: vec![3] },
        ]),
        "05 01 02 00000002 00000011 01 00000002 0102 00000022 02 00000001 03",
    );
}

#[test]
fn pin_retire_and_enables() {
    pin(EncryptionEntry::RetireDek { dek_id: 0x11, purpose: Purpose::Storage }, "05 01 03 00000011 01");
    pin(
        EncryptionEntry::EnableStorageEnvelope { dek_id: 0x11, proposer: reg(0x11) },
        &format!("05 01 04 00000011 {REG_HEX}"),
    );
    pin(
        EncryptionEntry::EnableRaftEnvelope { dek_id: 0x22, proposer: reg(0x22) },
        &format!("05 01 05 00000022 {}", "00000022 0102030405060708 0a0b"),
    );
}

#[test]
fn pin_hlc_lease() {
    assert_eq!(wire::encode_hlc_lease(0x0102_0304_0506_0708), [2, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(wire::decode_hlc_lease(&[2, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap(), 0x0102_0304_0506_0708);
    assert!(wire::decode_hlc_lease(&[2, 1, 2, 3, 4, 5, 6, 7]).is_err());
    assert!(wire::decode_hlc_lease(&[2, 1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
    assert!(wire::decode_hlc_lease(&[3, 1, 2, 3, 4, 5, 6, 7, 8]).is_err());
}

#[test]
fn classify_every_first_byte() {
    assert_eq!(classify(&[]), Err(WireError::Empty));
    for b in 0u8..=255 {
        let got = classify(&[b]);
        match b {
            0x00 => assert_eq!(got, Ok(PayloadKind::Kv)),
            0x01 => assert_eq!(got, Ok(PayloadKind::Batch)),
            0x02 => assert_eq!(got, Ok(PayloadKind::HlcLease)),
            0x03..=0x05 => assert_eq!(got, Ok(PayloadKind::Encryption)),
            0x06 | 0x07 => assert_eq!(got, Err(WireError::ReservedOpcode(b))),
            _ => assert_eq!(got, Err(WireError::UnknownOpcode(b))),
        }
    }
}

#[test]
fn malformed_inputs_are_typed_errors() {
    let good = EncryptionEntry::Register(reg(0x11)).encode().unwrap();
    let cases: Vec<(Vec<u8>, WireError)> = vec![
        (vec![], WireError::Truncated { what: "opcode" }),
        (vec![0x06, 0x01], WireError::ReservedOpcode(0x06)),
        (vec![0x07], WireError::ReservedOpcode(0x07)),
        (vec![0x00, 0x01], WireError::UnknownOpcode(0x00)),
        (vec![0x03, 0x02], WireError::UnknownWireVersion(0x02)),
        (vec![0x05, 0x01, 0x06], WireError::UnknownSubTag(0x06)),
        (vec![0x05, 0x01, 0x00], WireError::UnknownSubTag(0x00)),
        (unhex("05 01 03 00000011 03"), WireError::UnknownPurpose(3)),
        (unhex("05 01 03 00000011 00"), WireError::UnknownPurpose(0)),
        (unhex("05 01 03 00000000 01"), WireError::ZeroKeyId { what: "retire-dek" }),
        ([&good[..], &[0]].concat(), WireError::Trailing { count: 1 }),
        (good[..good.len() - 1].to_vec(), WireError::Truncated { what: "registration local_epoch" }),
        // Wrapped length 0 and 4097.
        (unhex("05 01 01 00000011 01 00000000"), WireError::WrappedLen { len: 0 }),
        (unhex("05 01 01 00000011 01 00001001"), WireError::WrappedLen { len: 4097 }),
        // A wrapped length that claims more than is there.
        (unhex("05 01 01 00000011 01 00000010 aa"), WireError::Truncated { what: "wrapped DEK" }),
        // Bootstrap count over the cap, and a count that does not match the remaining bytes.
        (
            unhex("04 01 00000011 00000001 aa 00000022 00000001 bb 00004001"),
            WireError::Count { what: "bootstrap registration", count: 16385 },
        ),
        (
            unhex("04 01 00000011 00000001 aa 00000022 00000001 bb 00000002 00000011 0102030405060708 0a0b"),
            WireError::Count { what: "bootstrap registration", count: 2 },
        ),
        (
            unhex("04 01 00000011 00000001 aa 00000022 00000001 bb ffffffff"),
            WireError::Count { what: "bootstrap registration", count: u32::MAX },
        ),
        // Rewrap count over the cap, and more than the bytes could hold.
        (unhex("05 01 02 00001001"), WireError::Count { what: "rewrap", count: 4097 }),
        (unhex("05 01 02 00000002 00000011 01 00000001 aa"), WireError::Count { what: "rewrap", count: 2 }),
    ];
    for (bytes, want) in cases {
        assert_eq!(EncryptionEntry::decode(&bytes), Err(want.clone()), "input {bytes:02x?}");
    }
}

#[test]
fn encode_refuses_out_of_range_fields() {
    let big = EncryptionEntry::RotateDek {
        dek: WrappedDek { dek_id: 1, purpose: Purpose::Storage, wrapped: vec![0; 4097] },
        proposer: reg(1),
    };
    assert!(big.encode().is_err());
    let empty = EncryptionEntry::RotateDek {
        dek: WrappedDek { dek_id: 1, purpose: Purpose::Storage, wrapped: vec![] },
        proposer: reg(1),
    };
    assert!(empty.encode().is_err());
    let many =
        EncryptionEntry::RewrapDeks(vec![WrappedDek { dek_id: 1, purpose: Purpose::Storage, wrapped: vec![1] }; 4097]);
    assert!(many.encode().is_err());
}

fn purpose() -> impl Strategy<Value = Purpose> {
    prop_oneof![Just(Purpose::Storage), Just(Purpose::Raft)]
}

fn registration() -> impl Strategy<Value = Registration> {
    (1u32.., any::<u64>(), any::<u16>()).prop_map(|(dek_id, full_node_id, local_epoch)| Registration {
        dek_id,
        full_node_id,
        local_epoch,
    })
}

fn wrapped() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..200)
}

fn entry() -> impl Strategy<Value = EncryptionEntry> {
    prop_oneof![
        registration().prop_map(EncryptionEntry::Register),
        (1u32.., wrapped(), 1u32.., wrapped(), proptest::collection::vec(registration(), 0..20)).prop_map(
            |(storage_dek_id, wrapped_storage, raft_dek_id, wrapped_raft, registrations)| {
                EncryptionEntry::Bootstrap(Bootstrap {
                    storage_dek_id,
                    wrapped_storage,
                    raft_dek_id,
                    wrapped_raft,
                    registrations,
                })
            }
        ),
        (1u32.., purpose(), wrapped(), registration()).prop_map(|(dek_id, purpose, wrapped, proposer)| {
            EncryptionEntry::RotateDek { dek: WrappedDek { dek_id, purpose, wrapped }, proposer }
        }),
        proptest::collection::vec(
            (1u32.., purpose(), wrapped()).prop_map(|(dek_id, purpose, wrapped)| WrappedDek {
                dek_id,
                purpose,
                wrapped
            }),
            0..10
        )
        .prop_map(EncryptionEntry::RewrapDeks),
        (1u32.., purpose()).prop_map(|(dek_id, purpose)| EncryptionEntry::RetireDek { dek_id, purpose }),
        (1u32.., registration())
            .prop_map(|(dek_id, proposer)| EncryptionEntry::EnableStorageEnvelope { dek_id, proposer }),
        (1u32.., registration())
            .prop_map(|(dek_id, proposer)| EncryptionEntry::EnableRaftEnvelope { dek_id, proposer }),
    ]
}

proptest! {
    #[test]
    fn round_trip(e in entry()) {
        let bytes = e.encode().unwrap();
        prop_assert_eq!(classify(&bytes), Ok(PayloadKind::Encryption));
        prop_assert_eq!(EncryptionEntry::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn every_strict_prefix_and_extension_is_rejected(e in entry(), extra in 1u8..) {
        let bytes = e.encode().unwrap();
        for cut in 0..bytes.len() {
            prop_assert!(EncryptionEntry::decode(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert!(EncryptionEntry::decode(&longer).is_err());
    }

    #[test]
    fn hlc_round_trip(v in any::<i64>()) {
        prop_assert_eq!(wire::decode_hlc_lease(&wire::encode_hlc_lease(v)).unwrap(), v);
    }
}
