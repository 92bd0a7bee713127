//! The applier: happy paths, replays, and every rejection of spec 03 §2 — each rejection checked
//! to leave keystore, sidecar (file bytes) and registry exactly as they were.

use std::path::PathBuf;
use std::sync::Arc;

use sealkv_crypto::Purpose;
use sealkv_crypto::applier::{Applied, Applier, ApplyError};
use sealkv_crypto::kek::{DekIdentity, EnvKek, KekProvider, LocalKek};
use sealkv_crypto::keystore::Keystore;
use sealkv_crypto::registry::{MemRegistry, RegistrationError, RegistryStore, Row, RowKey};
use sealkv_crypto::sidecar::Sidecar;
use sealkv_crypto::wire::{Bootstrap, EncryptionEntry, Registration, WireError, WrappedDek};

const S1: u32 = 0x1000_0001;
const R1: u32 = 0x2000_0001;
const S2: u32 = 0x1000_0002;
const R2: u32 = 0x2000_0002;
const NODE_A: u64 = 0xAAAA_0000_0000_0001;
const NODE_B: u64 = 0xBBBB_0000_0000_0002;
const NODE_A_TWIN: u64 = 0xCCCC_0000_0000_0001; // same node16 as NODE_A

struct Node {
    _dir: tempfile::TempDir,
    sidecar_dir: PathBuf,
    kek: Arc<LocalKek>,
    keystore: Arc<Keystore>,
    applier: Applier,
    registry: MemRegistry,
}

fn kek(seed: &str) -> Arc<LocalKek> {
    Arc::new(EnvKek::from_value("TEST_KEK", &seed.repeat(32)).unwrap())
}

fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let sidecar_dir = Sidecar::dir(dir.path());
    let kek = kek("5a");
    let keystore = Arc::new(Keystore::new());
    let applier = Applier::unwired()
        .with_kek(kek.clone())
        .with_keystore(keystore.clone())
        .with_sidecar_dir(&sidecar_dir)
        .unwrap();
    Node { _dir: dir, sidecar_dir, kek, keystore, applier, registry: MemRegistry::new() }
}

fn wrap(kek: &dyn KekProvider, purpose: Purpose, id: u32, byte: u8) -> Vec<u8> {
    kek.wrap(DekIdentity { purpose, dek_id: id }, &[byte; 32]).unwrap()
}

fn reg(dek_id: u32, node: u64, epoch: u16) -> Registration {
    Registration { dek_id, full_node_id: node, local_epoch: epoch }
}

/// A bootstrap of storage DEK `sid` (key bytes all `sbyte`) and raft DEK `rid` (all `rbyte`).
fn bootstrap_with(
    kek: &dyn KekProvider,
    (sid, sbyte): (u32, u8),
    (rid, rbyte): (u32, u8),
    registrations: Vec<Registration>,
) -> EncryptionEntry {
    EncryptionEntry::Bootstrap(Bootstrap {
        storage_dek_id: sid,
        wrapped_storage: wrap(kek, Purpose::Storage, sid, sbyte),
        raft_dek_id: rid,
        wrapped_raft: wrap(kek, Purpose::Raft, rid, rbyte),
        registrations,
    })
}

fn bootstrap_entry(kek: &dyn KekProvider) -> EncryptionEntry {
    let regs = vec![reg(S1, NODE_A, 0), reg(R1, NODE_A, 0), reg(S1, NODE_B, 0), reg(R1, NODE_B, 0)];
    bootstrap_with(kek, (S1, 0x51), (R1, 0x52), regs)
}

/// Everything observable about a node, to compare before/after a rejection.
#[derive(Debug, PartialEq)]
struct Observed {
    sidecar_file: Option<Vec<u8>>,
    keystore_ids: Vec<u32>,
    active: (u32, u32),
    registry: Vec<(RowKey, Row)>,
}

impl Node {
    fn observe(&self) -> Observed {
        Observed {
            sidecar_file: std::fs::read(self.sidecar_dir.join("keys.json")).ok(),
            keystore_ids: self.keystore.ids(),
            active: (self.keystore.active_id(Purpose::Storage), self.keystore.active_id(Purpose::Raft)),
            registry: self.registry.rows().unwrap(),
        }
    }

    fn apply(&mut self, index: u64, e: &EncryptionEntry) -> Result<Applied, ApplyError> {
        self.applier.apply(index, e, &mut self.registry)
    }

    /// Applies `e` at `index`, expects rejection, and checks nothing changed.
    fn reject(&mut self, index: u64, e: &EncryptionEntry) -> ApplyError {
        let before = self.observe();
        let before_cached = self.applier.sidecar();
        let err = self.apply(index, e).expect_err("entry must be rejected");
        assert_eq!(self.observe(), before, "rejected {} changed state: {err}", e.name());
        assert_eq!(self.applier.sidecar(), before_cached, "rejected {} changed the cached sidecar", e.name());
        err
    }

    fn bootstrapped() -> Node {
        let mut n = node();
        let b = bootstrap_entry(n.kek.as_ref());
        n.apply(10, &b).unwrap();
        n
    }
}

fn sidecar_on_disk(n: &Node) -> Sidecar {
    Sidecar::load(&n.sidecar_dir).unwrap().unwrap()
}

/// The bootstrap entry exactly as it is in the log: the wrapped bytes the sidecar recorded.
fn logged_bootstrap(n: &Node, registrations: Vec<Registration>) -> EncryptionEntry {
    let sc = sidecar_on_disk(n);
    EncryptionEntry::Bootstrap(Bootstrap {
        storage_dek_id: S1,
        wrapped_storage: sc.keys[&S1].wrapped.clone(),
        raft_dek_id: R1,
        wrapped_raft: sc.keys[&R1].wrapped.clone(),
        registrations,
    })
}

// ---------- happy paths and replays ----------

#[test]
fn bootstrap_installs_keys_sidecar_and_rows() {
    let n = Node::bootstrapped();
    assert_eq!(n.keystore.active_id(Purpose::Storage), S1);
    assert_eq!(n.keystore.active_id(Purpose::Raft), R1);
    assert!(n.keystore.get(S1).unwrap().same_bytes(&[0x51; 32]));
    let sc = sidecar_on_disk(&n);
    assert_eq!(sc, n.applier.sidecar());
    assert_eq!((sc.active.storage, sc.active.raft, sc.raft_applied_index), (S1, R1, 10));
    assert_eq!(sc.keys[&S1].local_epoch, 0);
    assert_eq!(sc.keys[&R1].purpose, Purpose::Raft);
    assert_eq!(n.registry.rows().unwrap().len(), 4);
    let row = n.registry.get(RowKey { dek_id: S1, node16: 0x0001 }).unwrap().unwrap();
    assert_eq!(row, Row { full_node_id: NODE_A, first_seen_epoch: 0, last_seen_epoch: 0 });
}

#[test]
fn bootstrap_replay_is_idempotent() {
    let mut n = Node::bootstrapped();
    let first =
        logged_bootstrap(&n, vec![reg(S1, NODE_A, 0), reg(R1, NODE_A, 0), reg(S1, NODE_B, 0), reg(R1, NODE_B, 0)]);
    let before = n.observe();
    // Replay at the same index (crash before the store batch) and at a later index.
    assert!(matches!(n.apply(10, &first).unwrap(), Applied::Bootstrapped { .. }));
    assert_eq!(n.observe(), before);
    n.apply(11, &first).unwrap();
    assert_eq!(sidecar_on_disk(&n).raft_applied_index, 11);
    assert_eq!(n.registry.rows().unwrap(), before.registry);
}

#[test]
fn bootstrap_replay_after_a_fresh_restart_heals_keystore_and_registry() {
    let mut n = Node::bootstrapped();
    let sc = sidecar_on_disk(&n);
    let entry = logged_bootstrap(&n, vec![reg(S1, NODE_A, 0), reg(R1, NODE_A, 0)]);
    // Simulate a crash after the sidecar write but before the store batch: a new process with an
    // empty keystore and an empty registry replays the same entry.
    let keystore = Arc::new(Keystore::new());
    let applier = Applier::unwired()
        .with_kek(n.kek.clone())
        .with_keystore(keystore.clone())
        .with_sidecar_dir(&n.sidecar_dir)
        .unwrap();
    let mut registry = MemRegistry::new();
    applier.apply(10, &entry, &mut registry).unwrap();
    assert_eq!(registry.rows().unwrap().len(), 2);
    assert_eq!(applier.sidecar(), sc, "a reflected replay does not rewrite the sidecar");
    n.registry = registry;
}

#[test]
fn rotation_family_happy_path() {
    let mut n = Node::bootstrapped();
    // Give node A a higher epoch for S1 first (a restart registered it).
    n.apply(11, &EncryptionEntry::Register(reg(S1, NODE_A, 3))).unwrap();
    let rotate = rotate(&n, S2, Purpose::Storage, reg(S2, NODE_A, 0));
    let applied = n.apply(12, &rotate).unwrap();
    assert_eq!(applied, Applied::Rotated { purpose: Purpose::Storage, dek_id: S2, local_epoch: 0 });
    assert_eq!(n.keystore.active_id(Purpose::Storage), S2);
    assert!(n.keystore.get(S1).is_some(), "old keys stay loaded until retired");
    let sc = sidecar_on_disk(&n);
    assert_eq!((sc.active.storage, sc.active.raft, sc.raft_applied_index), (S2, R1, 12));
    // Replay of the rotation: idempotent.
    n.apply(12, &rotate).unwrap();
    n.apply(13, &rotate).unwrap();
    assert_eq!(n.keystore.active_id(Purpose::Storage), S2);

    // Rewrap both storage keys under a new KEK, which the node then switches to.
    let new_kek = kek("77");
    let rewrap = EncryptionEntry::RewrapDeks(vec![
        WrappedDek {
            dek_id: S1,
            purpose: Purpose::Storage,
            wrapped: wrap(new_kek.as_ref(), Purpose::Storage, S1, 0x51),
        },
        WrappedDek {
            dek_id: S2,
            purpose: Purpose::Storage,
            wrapped: wrap(new_kek.as_ref(), Purpose::Storage, S2, 0x61),
        },
    ]);
    let mut n2 = Node {
        applier: Applier::unwired()
            .with_kek(new_kek.clone())
            .with_keystore(n.keystore.clone())
            .with_sidecar_dir(&n.sidecar_dir)
            .unwrap(),
        kek: new_kek.clone(),
        ..n
    };
    assert_eq!(n2.apply(14, &rewrap).unwrap(), Applied::Rewrapped { count: 2 });
    let sc = sidecar_on_disk(&n2);
    let unwrapped =
        new_kek.unwrap(DekIdentity { purpose: Purpose::Storage, dek_id: S1 }, &sc.keys[&S1].wrapped).unwrap();
    assert_eq!(*unwrapped, [0x51; 32]);

    // Retire the old storage key.
    assert_eq!(
        n2.apply(15, &EncryptionEntry::RetireDek { dek_id: S1, purpose: Purpose::Storage }).unwrap(),
        Applied::Retired { dek_id: S1 }
    );
    assert!(n2.keystore.get(S1).is_none());
    assert!(sidecar_on_disk(&n2).keys[&S1].retired);
    assert!(n2.registry.rows().unwrap().iter().all(|(k, _)| k.dek_id != S1));
    // Retire replay is idempotent.
    n2.apply(15, &EncryptionEntry::RetireDek { dek_id: S1, purpose: Purpose::Storage }).unwrap();
}

#[test]
fn rotate_takes_this_nodes_epoch_for_the_purpose() {
    let mut n = Node::bootstrapped();
    // This node restarted twice: its storage key's local_epoch is 2 in the sidecar.
    let mut sc = sidecar_on_disk(&n);
    sc.keys.get_mut(&S1).unwrap().local_epoch = 2;
    sc.store(&n.sidecar_dir).unwrap();
    n.applier = Applier::unwired()
        .with_kek(n.kek.clone())
        .with_keystore(n.keystore.clone())
        .with_sidecar_dir(&n.sidecar_dir)
        .unwrap();
    let rotate = rotate(&n, S2, Purpose::Storage, reg(S2, NODE_B, 9));
    assert_eq!(
        n.apply(11, &rotate).unwrap(),
        Applied::Rotated { purpose: Purpose::Storage, dek_id: S2, local_epoch: 2 }
    );
    assert_eq!(sidecar_on_disk(&n).keys[&S2].local_epoch, 2);
}

#[test]
fn enable_envelopes_and_replays_keep_the_original_cutover() {
    let mut n = Node::bootstrapped();
    let es = EncryptionEntry::EnableStorageEnvelope { dek_id: S1, proposer: reg(S1, NODE_A, 0) };
    let er = EncryptionEntry::EnableRaftEnvelope { dek_id: R1, proposer: reg(R1, NODE_A, 0) };
    assert_eq!(n.apply(11, &es).unwrap(), Applied::StorageEnvelopeEnabled { cutover_index: 11 });
    assert_eq!(n.apply(12, &er).unwrap(), Applied::RaftEnvelopeEnabled { cutover_index: 12 });
    assert_eq!(n.apply(13, &es).unwrap(), Applied::StorageEnvelopeEnabled { cutover_index: 11 });
    assert_eq!(n.apply(14, &er).unwrap(), Applied::RaftEnvelopeEnabled { cutover_index: 12 });
    let sc = sidecar_on_disk(&n);
    assert!(sc.storage_envelope_active);
    assert_eq!((sc.storage_cutover_index, sc.raft_envelope_cutover_index, sc.raft_applied_index), (11, 12, 14));
    // Replays at an index the sidecar already passed change nothing.
    let before = n.observe();
    n.apply(12, &er).unwrap();
    assert_eq!(n.observe(), before);
}

#[test]
fn registration_five_cases_through_the_applier() {
    let mut n = Node::bootstrapped();
    let key = RowKey { dek_id: S1, node16: 1 };
    n.apply(11, &EncryptionEntry::Register(reg(S1, NODE_A, 4))).unwrap();
    assert_eq!(n.registry.get(key).unwrap().unwrap().last_seen_epoch, 4);
    n.apply(12, &EncryptionEntry::Register(reg(S1, NODE_A, 4))).unwrap();
    let sc_before = std::fs::read(n.sidecar_dir.join("keys.json")).unwrap();
    n.apply(13, &EncryptionEntry::Register(reg(S1, 0xDDDD_0000_0000_0009, 1))).unwrap();
    assert_eq!(
        std::fs::read(n.sidecar_dir.join("keys.json")).unwrap(),
        sc_before,
        "registration never touches the sidecar"
    );
    assert!(matches!(
        n.reject(14, &EncryptionEntry::Register(reg(S1, NODE_A, 3))),
        ApplyError::Registration(RegistrationError::LocalEpochRollback { last_seen: 4, .. })
    ));
    assert!(matches!(
        n.reject(14, &EncryptionEntry::Register(reg(S1, NODE_A_TWIN, 9))),
        ApplyError::Registration(RegistrationError::NodeIdCollision { .. })
    ));
    assert!(matches!(n.reject(14, &EncryptionEntry::Register(reg(0x999, NODE_A, 1))), ApplyError::UnknownDek { .. }));
}

// ---------- wiring ----------

#[test]
fn partial_wiring_is_kek_not_configured_for_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = Sidecar::dir(dir.path());
    let k = kek("5a");
    let ks = Arc::new(Keystore::new());
    let partial: Vec<Applier> = vec![
        Applier::unwired(),
        Applier::unwired().with_kek(k.clone()),
        Applier::unwired().with_keystore(ks.clone()),
        Applier::unwired().with_sidecar_dir(&sdir).unwrap(),
        Applier::unwired().with_kek(k.clone()).with_keystore(ks.clone()),
        Applier::unwired().with_kek(k.clone()).with_sidecar_dir(&sdir).unwrap(),
        Applier::unwired().with_keystore(ks.clone()).with_sidecar_dir(&sdir).unwrap(),
    ];
    let entries = vec![
        bootstrap_entry(k.as_ref()),
        EncryptionEntry::Register(reg(S1, NODE_A, 1)),
        EncryptionEntry::RotateDek {
            dek: WrappedDek { dek_id: S2, purpose: Purpose::Storage, wrapped: vec![1] },
            proposer: reg(S2, NODE_A, 0),
        },
        EncryptionEntry::RewrapDeks(vec![]),
        EncryptionEntry::RetireDek { dek_id: S1, purpose: Purpose::Storage },
        EncryptionEntry::EnableStorageEnvelope { dek_id: S1, proposer: reg(S1, NODE_A, 0) },
        EncryptionEntry::EnableRaftEnvelope { dek_id: R1, proposer: reg(R1, NODE_A, 0) },
    ];
    for (i, a) in partial.iter().enumerate() {
        for e in &entries {
            let mut r = MemRegistry::new();
            assert!(matches!(a.apply(1, e, &mut r), Err(ApplyError::KekNotConfigured)), "wiring {i}, {}", e.name());
            assert!(r.rows().unwrap().is_empty());
        }
    }
    assert!(ks.ids().is_empty());
    assert!(!Sidecar::exists(&sdir));
}

#[test]
fn malformed_payloads_halt() {
    let n = node();
    let mut r = MemRegistry::new();
    for p in [&[0x06u8, 0x01][..], &[0x05, 0x01, 0x09], &[0x03, 0x02], &[0x03, 0x01, 0, 0]] {
        assert!(matches!(n.applier.apply_payload(1, p, &mut r), Err(ApplyError::Malformed(_))), "{p:02x?}");
    }
}

// ---------- bootstrap rejections ----------

#[test]
fn bootstrap_rejections_leave_everything_untouched() {
    let mut n = node();
    let k = n.kek.clone();
    let good = || match bootstrap_entry(k.as_ref()) {
        EncryptionEntry::Bootstrap(b) => b,
        _ => unreachable!(),
    };
    // Same id for both.
    let mut b = good();
    b.raft_dek_id = S1;
    assert!(matches!(n.reject(1, &EncryptionEntry::Bootstrap(b)), ApplyError::SameDekIds { .. }));
    // Zero id.
    let mut b = good();
    b.storage_dek_id = 0;
    assert!(matches!(n.reject(1, &EncryptionEntry::Bootstrap(b)), ApplyError::Malformed(WireError::ZeroKeyId { .. })));
    // A row for a third DEK.
    let mut b = good();
    b.registrations.push(reg(0x777, NODE_A, 0));
    assert!(matches!(n.reject(1, &EncryptionEntry::Bootstrap(b)), ApplyError::ForeignRegistration { dek_id: 0x777 }));
    // Two rows with the same node16 and different full ids.
    let mut b = good();
    b.registrations.push(reg(R1, NODE_A_TWIN, 0));
    assert!(matches!(n.reject(1, &EncryptionEntry::Bootstrap(b)), ApplyError::BootstrapCollision { node16: 1, .. }));
    // Wrapped under another KEK (the storage key unwraps, the raft key does not: no partial install).
    let mut b = good();
    b.wrapped_raft = wrap(kek("33").as_ref(), Purpose::Raft, R1, 0x52);
    assert!(matches!(n.reject(1, &EncryptionEntry::Bootstrap(b)), ApplyError::Kek(_)));
    // Wrapped bytes moved between ids (identity binding).
    let mut b = good();
    std::mem::swap(&mut b.wrapped_raft, &mut b.wrapped_storage);
    assert!(matches!(n.reject(1, &EncryptionEntry::Bootstrap(b)), ApplyError::Kek(_)));
    // Keystore already holds the id with other bytes.
    n.keystore.install(S1, Purpose::Storage, &[0xEE; 32]).unwrap();
    assert!(matches!(n.reject(1, &EncryptionEntry::Bootstrap(good())), ApplyError::Keystore(_)));
}

#[test]
fn second_bootstrap_is_rejected() {
    let mut n = Node::bootstrapped();
    let k = n.kek.clone();
    // Different ids.
    let other = bootstrap_with(k.as_ref(), (S2, 1), (R2, 2), vec![]);
    assert!(matches!(n.reject(20, &other), ApplyError::BootstrapConflict { .. }));
    // Same ids, different wrapped bytes (a fresh wrap of the same key is different bytes too).
    let rewrapped = bootstrap_entry(k.as_ref());
    assert!(matches!(n.reject(20, &rewrapped), ApplyError::BootstrapConflict { .. }));
    // Same ids, different key material.
    let rekeyed = bootstrap_with(k.as_ref(), (S1, 0x99), (R1, 0x98), vec![]);
    assert!(matches!(n.reject(20, &rekeyed), ApplyError::BootstrapConflict { .. }));
    // Even at a reflected index, other ids are refused.
    assert!(matches!(n.reject(5, &other), ApplyError::BootstrapConflict { .. }));
}

#[test]
fn bootstrap_registration_rule_violation_against_existing_rows() {
    let mut n = node();
    // A stale row owned by another node (e.g. restored registry) makes bootstrap collide.
    n.registry
        .put(
            RowKey { dek_id: S1, node16: 1 },
            Row { full_node_id: NODE_A_TWIN, first_seen_epoch: 0, last_seen_epoch: 0 },
        )
        .unwrap();
    let b = bootstrap_entry(n.kek.as_ref());
    assert!(matches!(n.reject(1, &b), ApplyError::Registration(RegistrationError::NodeIdCollision { .. })));
}

// ---------- rotation family rejections ----------

fn rotate(n: &Node, id: u32, purpose: Purpose, proposer: Registration) -> EncryptionEntry {
    EncryptionEntry::RotateDek {
        dek: WrappedDek { dek_id: id, purpose, wrapped: wrap(n.kek.as_ref(), purpose, id, 0x61) },
        proposer,
    }
}

#[test]
fn rotate_rejections() {
    let mut fresh = node();
    let e = rotate(&fresh, S2, Purpose::Storage, reg(S2, NODE_A, 0));
    assert!(matches!(fresh.reject(1, &e), ApplyError::NotBootstrapped { purpose: Purpose::Storage }));

    let mut n = Node::bootstrapped();
    let e = rotate(&n, S2, Purpose::Storage, reg(S1, NODE_A, 0));
    assert!(matches!(n.reject(11, &e), ApplyError::ProposerMismatch { .. }));
    // Reusing an existing id (the raft key's id as a storage key, or the active id with new bytes).
    let e = rotate(&n, R1, Purpose::Storage, reg(R1, NODE_A, 0));
    assert!(matches!(n.reject(11, &e), ApplyError::DekIdExists { .. }));
    let e = rotate(&n, S1, Purpose::Storage, reg(S1, NODE_A, 0));
    assert!(matches!(n.reject(11, &e), ApplyError::DekIdExists { .. }));
    // Wrapped under another KEK.
    let e = EncryptionEntry::RotateDek {
        dek: WrappedDek {
            dek_id: S2,
            purpose: Purpose::Storage,
            wrapped: wrap(kek("44").as_ref(), Purpose::Storage, S2, 1),
        },
        proposer: reg(S2, NODE_A, 0),
    };
    assert!(matches!(n.reject(11, &e), ApplyError::Kek(_)));
    // Proposer registration breaks the rule.
    n.registry
        .put(RowKey { dek_id: S2, node16: 1 }, Row { full_node_id: NODE_A, first_seen_epoch: 5, last_seen_epoch: 5 })
        .unwrap();
    let e = rotate(&n, S2, Purpose::Storage, reg(S2, NODE_A, 4));
    assert!(matches!(n.reject(11, &e), ApplyError::Registration(RegistrationError::LocalEpochRollback { .. })));
    // Keystore conflict (id loaded with other bytes).
    n.keystore.install(R2, Purpose::Raft, &[0xEE; 32]).unwrap();
    let e = rotate(&n, R2, Purpose::Raft, reg(R2, NODE_A, 0));
    assert!(matches!(n.reject(11, &e), ApplyError::Keystore(_)));
}

#[test]
fn rewrap_rejections() {
    let mut n = Node::bootstrapped();
    let k = n.kek.clone();
    let w = |id, p, b| WrappedDek { dek_id: id, purpose: p, wrapped: wrap(k.as_ref(), p, id, b) };
    assert!(matches!(
        n.reject(11, &EncryptionEntry::RewrapDeks(vec![w(S2, Purpose::Storage, 1)])),
        ApplyError::UnknownDek { .. }
    ));
    assert!(matches!(
        n.reject(11, &EncryptionEntry::RewrapDeks(vec![w(S1, Purpose::Raft, 0x51)])),
        ApplyError::PurposeMismatch { .. }
    ));
    // Unwraps, but to other key bytes than the loaded DEK.
    assert!(matches!(
        n.reject(11, &EncryptionEntry::RewrapDeks(vec![w(R1, Purpose::Raft, 0x52), w(S1, Purpose::Storage, 0x00)])),
        ApplyError::RewrapMismatch { dek_id: S1 }
    ));
    // Does not unwrap under the current KEK.
    let foreign = WrappedDek {
        dek_id: S1,
        purpose: Purpose::Storage,
        wrapped: wrap(kek("44").as_ref(), Purpose::Storage, S1, 0x51),
    };
    assert!(matches!(n.reject(11, &EncryptionEntry::RewrapDeks(vec![foreign])), ApplyError::Kek(_)));
    // A retired key.
    n.apply(11, &rotate(&n, S2, Purpose::Storage, reg(S2, NODE_A, 0))).unwrap();
    n.apply(12, &EncryptionEntry::RetireDek { dek_id: S1, purpose: Purpose::Storage }).unwrap();
    assert!(matches!(
        n.reject(13, &EncryptionEntry::RewrapDeks(vec![w(S1, Purpose::Storage, 0x51)])),
        ApplyError::Retired { .. }
    ));
}

#[test]
fn retire_rejections() {
    let mut n = Node::bootstrapped();
    assert!(matches!(
        n.reject(11, &EncryptionEntry::RetireDek { dek_id: S1, purpose: Purpose::Storage }),
        ApplyError::RetireActive { .. }
    ));
    assert!(matches!(
        n.reject(11, &EncryptionEntry::RetireDek { dek_id: R1, purpose: Purpose::Raft }),
        ApplyError::RetireActive { .. }
    ));
    assert!(matches!(
        n.reject(11, &EncryptionEntry::RetireDek { dek_id: S2, purpose: Purpose::Storage }),
        ApplyError::UnknownDek { .. }
    ));
    assert!(matches!(
        n.reject(11, &EncryptionEntry::RetireDek { dek_id: S1, purpose: Purpose::Raft }),
        ApplyError::PurposeMismatch { .. }
    ));
}

#[test]
fn enable_rejections() {
    let mut fresh = node();
    let es = EncryptionEntry::EnableStorageEnvelope { dek_id: S1, proposer: reg(S1, NODE_A, 0) };
    let er = EncryptionEntry::EnableRaftEnvelope { dek_id: R1, proposer: reg(R1, NODE_A, 0) };
    assert!(matches!(fresh.reject(1, &es), ApplyError::NotBootstrapped { purpose: Purpose::Storage }));
    assert!(matches!(fresh.reject(1, &er), ApplyError::NotBootstrapped { purpose: Purpose::Raft }));

    let mut n = Node::bootstrapped();
    let wrong_dek = EncryptionEntry::EnableStorageEnvelope { dek_id: R1, proposer: reg(R1, NODE_A, 0) };
    assert!(matches!(n.reject(11, &wrong_dek), ApplyError::NotActive { .. }));
    let wrong_dek = EncryptionEntry::EnableRaftEnvelope { dek_id: S1, proposer: reg(S1, NODE_A, 0) };
    assert!(matches!(n.reject(11, &wrong_dek), ApplyError::NotActive { .. }));
    let mismatch = EncryptionEntry::EnableRaftEnvelope { dek_id: R1, proposer: reg(S1, NODE_A, 0) };
    assert!(matches!(n.reject(11, &mismatch), ApplyError::ProposerMismatch { .. }));
    let collide = EncryptionEntry::EnableStorageEnvelope { dek_id: S1, proposer: reg(S1, NODE_A_TWIN, 0) };
    assert!(matches!(n.reject(11, &collide), ApplyError::Registration(RegistrationError::NodeIdCollision { .. })));
}

#[test]
fn halt_errors_name_the_key_id() {
    let mut n = Node::bootstrapped();
    let err = n.reject(11, &EncryptionEntry::RetireDek { dek_id: S1, purpose: Purpose::Storage });
    assert_eq!(err.key_id(), S1);
    let err = n.reject(11, &EncryptionEntry::Register(reg(S1, NODE_A_TWIN, 0)));
    assert_eq!(err.key_id(), S1);
}
