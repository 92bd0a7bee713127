//! Startup refusal guards: each one triggered alone, with its distinct error, and the full
//! sequence on a healthy node.

use std::collections::BTreeMap;
use std::sync::Arc;

use sealkv_crypto::applier::Applier;
use sealkv_crypto::envelope::Sealer;
use sealkv_crypto::guards::{self, GuardError, LogScanner, SnapshotInfo, StartupInputs};
use sealkv_crypto::kek::{DekIdentity, EnvKek, KekProvider};
use sealkv_crypto::keystore::Keystore;
use sealkv_crypto::registry::{MemRegistry, RegistryStore, Row, RowKey};
use sealkv_crypto::sidecar::Sidecar;
use sealkv_crypto::wire::{self, Bootstrap, EncryptionEntry, Registration};
use sealkv_crypto::{NonceFactory, Purpose, full_node_id, node16};

const S1: u32 = 0x1000_0001;
const R1: u32 = 0x2000_0001;

struct Log(BTreeMap<u64, Vec<u8>>);

impl LogScanner for Log {
    fn scan(&self, after: u64, upto: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), String> {
        for (i, p) in self.0.range(after + 1..=upto) {
            if !visit(*i, p) {
                break;
            }
        }
        Ok(())
    }
}

fn kek(seed: &str) -> Arc<dyn KekProvider> {
    Arc::new(EnvKek::from_value("K", &seed.repeat(32)).unwrap())
}

/// A bootstrapped node at index 10 with both envelopes enabled at 11 and 12.
struct Fixture {
    dir: tempfile::TempDir,
    kek: Arc<dyn KekProvider>,
    registry: MemRegistry,
    me: u64,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kek = kek("5a");
        let me = full_node_id("n1");
        let applier = Applier::unwired()
            .with_kek(kek.clone())
            .with_keystore(Arc::new(Keystore::new()))
            .with_sidecar_dir(&Sidecar::dir(dir.path()))
            .unwrap();
        let mut registry = MemRegistry::new();
        let w = |p, id, b| kek.wrap(DekIdentity { purpose: p, dek_id: id }, &[b; 32]).unwrap();
        let regs = vec![
            Registration { dek_id: S1, full_node_id: me, local_epoch: 0 },
            Registration { dek_id: R1, full_node_id: me, local_epoch: 0 },
        ];
        let b = EncryptionEntry::Bootstrap(Bootstrap {
            storage_dek_id: S1,
            wrapped_storage: w(Purpose::Storage, S1, 1),
            raft_dek_id: R1,
            wrapped_raft: w(Purpose::Raft, R1, 2),
            registrations: regs.clone(),
        });
        applier.apply(10, &b, &mut registry).unwrap();
        applier
            .apply(11, &EncryptionEntry::EnableStorageEnvelope { dek_id: S1, proposer: regs[0] }, &mut registry)
            .unwrap();
        applier
            .apply(12, &EncryptionEntry::EnableRaftEnvelope { dek_id: R1, proposer: regs[1] }, &mut registry)
            .unwrap();
        Fixture { dir, kek, registry, me }
    }

    fn sdir(&self) -> std::path::PathBuf {
        Sidecar::dir(self.dir.path())
    }

    fn sidecar(&self) -> Sidecar {
        Sidecar::load(&self.sdir()).unwrap().unwrap()
    }

    fn run(
        &self,
        kek: Option<Arc<dyn KekProvider>>,
        enabled: bool,
        members: &[(String, u64)],
        log: &Log,
        applied: u64,
        snap: Option<SnapshotInfo>,
    ) -> Result<guards::Started, GuardError> {
        guards::run(StartupInputs {
            encryption_enabled: enabled,
            kek,
            sidecar_dir: &self.sdir(),
            full_node_id: self.me,
            members,
            registry: &self.registry,
            log,
            applied_index: applied,
            snapshot: snap,
            keystore: Arc::new(Keystore::new()),
        })
    }
}

fn members() -> Vec<(String, u64)> {
    ["n1", "n2", "n3"].iter().map(|n| (n.to_string(), full_node_id(n))).collect()
}

fn empty_log() -> Log {
    Log(BTreeMap::new())
}

#[test]
fn healthy_node_passes_and_bumps_epochs() {
    let f = Fixture::new();
    let started = f.run(Some(f.kek.clone()), true, &members(), &empty_log(), 12, None).unwrap();
    assert_eq!(started.bumped, vec![(S1, 1), (R1, 1)]);
    assert_eq!(f.sidecar().local_epoch(S1), 1, "the bump is durable before anything seals");
    assert_eq!(started.keystore.active_id(Purpose::Storage), S1);
    assert_eq!(started.keystore.active_id(Purpose::Raft), R1);
    let again = f.run(Some(f.kek.clone()), true, &members(), &empty_log(), 12, None).unwrap();
    assert_eq!(again.bumped, vec![(S1, 2), (R1, 2)], "every process load gets a new epoch");
}

#[test]
fn guard1_sidecar_without_flag() {
    let f = Fixture::new();
    let err = f.run(None, false, &members(), &empty_log(), 12, None).err().unwrap();
    assert!(matches!(err, GuardError::SidecarPresentWithoutFlag { .. }));
    assert!(err.to_string().contains("--encryption-enabled"));
    // A cleartext node without a sidecar starts.
    let dir = tempfile::tempdir().unwrap();
    assert!(guards::sidecar_needs_flag(&Sidecar::dir(dir.path()), false).is_ok());
}

#[test]
fn guard2_flag_without_kek() {
    let f = Fixture::new();
    let err = f.run(None, true, &members(), &empty_log(), 12, None).err().unwrap();
    assert!(matches!(err, GuardError::KekRequired));
    assert!(err.to_string().contains("--kek-file"));
}

#[test]
fn guard3_wrong_kek() {
    let f = Fixture::new();
    let before = std::fs::read(f.sdir().join("keys.json")).unwrap();
    let err = f.run(Some(kek("33")), true, &members(), &empty_log(), 12, None).err().unwrap();
    assert!(matches!(err, GuardError::KekMismatch { .. }), "{err}");
    assert!(err.to_string().contains("resync-sidecar"));
    assert_eq!(std::fs::read(f.sdir().join("keys.json")).unwrap(), before, "a refused start bumps nothing");
}

#[test]
fn guard4_exhausted_epoch() {
    let f = Fixture::new();
    let mut sc = f.sidecar();
    sc.keys.get_mut(&R1).unwrap().local_epoch = 0xFFFF;
    sc.store(&f.sdir()).unwrap();
    let err = f.run(Some(f.kek.clone()), true, &members(), &empty_log(), 12, None).err().unwrap();
    assert!(matches!(err, GuardError::LocalEpochExhausted { dek_id: R1, .. }), "{err}");
    // 0xFFFE passes guard 4 but the bump would reach 0xFFFF: refused too.
    sc.keys.get_mut(&R1).unwrap().local_epoch = 0xFFFE;
    sc.store(&f.sdir()).unwrap();
    assert!(matches!(
        f.run(Some(f.kek.clone()), true, &members(), &empty_log(), 12, None),
        Err(GuardError::LocalEpochExhausted { .. })
    ));
}

#[test]
fn guard5_probe_failure() {
    // A sidecar dir that cannot be written (a file in its place) fails the probe.
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("encryption");
    std::fs::write(&blocked, b"not a dir").unwrap();
    assert!(guards::filesystem_durable(&blocked).is_err());
    let ok = tempfile::tempdir().unwrap();
    guards::filesystem_durable(&Sidecar::dir(ok.path())).unwrap();
}

#[test]
fn guard6_member_collision() {
    let f = Fixture::new();
    // Find two distinct names sharing node16.
    let mut seen = std::collections::HashMap::new();
    let mut pair = None;
    for i in 0u32.. {
        let name = format!("node-{i}");
        let n16 = node16(full_node_id(&name));
        if let Some(prev) = seen.insert(n16, name.clone()) {
            pair = Some((prev, name));
            break;
        }
    }
    let (a, b) = pair.unwrap();
    let ms = vec![(a.clone(), full_node_id(&a)), (b.clone(), full_node_id(&b))];
    let err = f.run(Some(f.kek.clone()), true, &ms, &empty_log(), 12, None).err().unwrap();
    assert!(matches!(err, GuardError::NodeIdCollision { .. }), "{err}");
    assert!(err.to_string().contains("--node-id"));
}

#[test]
fn guard7_registry_rollback_and_foreign_row() {
    let mut f = Fixture::new();
    let key = RowKey { dek_id: S1, node16: node16(f.me) };
    f.registry.put(key, Row { full_node_id: f.me, first_seen_epoch: 0, last_seen_epoch: 5 }).unwrap();
    let err = f.run(Some(f.kek.clone()), true, &members(), &empty_log(), 12, None).err().unwrap();
    assert!(matches!(err, GuardError::LocalEpochRollback { .. }), "{err}");
    // Equal is fine before the bump.
    let mut sc = f.sidecar();
    sc.keys.get_mut(&S1).unwrap().local_epoch = 5;
    sc.store(&f.sdir()).unwrap();
    assert!(f.run(Some(f.kek.clone()), true, &members(), &empty_log(), 12, None).is_ok());
    // A row owned by another node.
    f.registry.put(key, Row { full_node_id: f.me ^ 0xFFFF_0000, first_seen_epoch: 0, last_seen_epoch: 0 }).unwrap();
    let err = f.run(Some(f.kek.clone()), true, &members(), &empty_log(), 12, None).err().unwrap();
    assert!(matches!(err, GuardError::LocalEpochRollback { .. }));
    assert!(err.to_string().contains("belongs to node"));
}

/// The restart epoch fence: a data dir restored from an old backup (its local registry copy and
/// sidecar both behind the cluster) passes guards 7–8, and the fence lifts each active DEK's
/// epoch above what the cluster saw, durably; a foreign row refuses; equal-or-above is untouched.
#[test]
fn epoch_fence_lifts_epochs_above_the_clusters_rows() {
    let f = Fixture::new();
    let started = f.run(Some(f.kek.clone()), true, &members(), &empty_log(), 12, None).unwrap();
    let mut sc = started.sidecar.unwrap();
    assert_eq!(sc.local_epoch(S1), 1);
    let me16 = node16(f.me);
    let mut cluster = BTreeMap::new();
    cluster.insert(
        RowKey { dek_id: S1, node16: me16 },
        Row { full_node_id: f.me, first_seen_epoch: 0, last_seen_epoch: 7 },
    );
    cluster.insert(
        RowKey { dek_id: R1, node16: me16 },
        Row { full_node_id: f.me, first_seen_epoch: 0, last_seen_epoch: 0 },
    );
    let raised = guards::epoch_fence(&mut sc, &f.sdir(), f.me, &cluster).unwrap();
    assert_eq!(raised, vec![(S1, 8)], "only the DEK the cluster saw at or above the local epoch moves");
    assert_eq!(f.sidecar().local_epoch(S1), 8, "the raise is durable");
    assert_eq!(f.sidecar().local_epoch(R1), 1, "an epoch already above the cluster's row stays");
    // Idempotent: the cluster has not seen 8 yet.
    assert!(guards::epoch_fence(&mut sc, &f.sdir(), f.me, &cluster).unwrap().is_empty());
    // The cluster's row for this nonce id belongs to someone else.
    cluster.insert(
        RowKey { dek_id: R1, node16: me16 },
        Row { full_node_id: f.me ^ 0xFFFF_0000, first_seen_epoch: 0, last_seen_epoch: 0 },
    );
    let err = guards::epoch_fence(&mut sc, &f.sdir(), f.me, &cluster).unwrap_err();
    assert!(matches!(err, GuardError::LocalEpochRollback { .. }), "{err}");
    // An exhausted epoch refuses rather than wrapping around.
    cluster.insert(
        RowKey { dek_id: R1, node16: me16 },
        Row { full_node_id: f.me, first_seen_epoch: 0, last_seen_epoch: 0xFFFE },
    );
    let err = guards::epoch_fence(&mut sc, &f.sdir(), f.me, &cluster).unwrap_err();
    assert!(matches!(err, GuardError::LocalEpochExhausted { .. }), "{err}");
}

#[test]
fn guard9_sidecar_behind_log() {
    let f = Fixture::new();
    let ks = guards::unwrap_all(&f.sidecar(), f.kek.as_ref()).unwrap();
    let raft = Sealer::new(ks.get(R1).unwrap(), NonceFactory::new(1, 9).unwrap());
    // Entries after the sidecar's index 12 (after the cutover, so wrapped).
    let kv = raft.wrap_raft(&[wire::OP_KV, 1, 2, 3]).unwrap();
    let retire = raft
        .wrap_raft(&EncryptionEntry::RetireDek { dek_id: S1, purpose: Purpose::Storage }.encode().unwrap())
        .unwrap();
    let reg = raft
        .wrap_raft(
            &EncryptionEntry::Register(Registration { dek_id: S1, full_node_id: 1, local_epoch: 1 }).encode().unwrap(),
        )
        .unwrap();

    let log = Log(BTreeMap::from([(13, kv.clone()), (14, reg.clone())]));
    assert!(
        f.run(Some(f.kek.clone()), true, &members(), &log, 14, None).is_ok(),
        "KV and registration entries do not touch the sidecar"
    );

    let log = Log(BTreeMap::from([(13, kv.clone()), (14, retire), (15, kv.clone())]));
    let err = f.run(Some(f.kek.clone()), true, &members(), &log, 15, None).err().unwrap();
    assert!(matches!(err, GuardError::SidecarBehindRaftLog { sidecar_index: 12, entry_index: 14 }), "{err}");
    // Not applied yet (applied index 13): the gap is only 13, fine.
    assert!(f.run(Some(f.kek.clone()), true, &members(), &log, 13, None).is_ok());
    // An envelope the loaded keys cannot open (a rotation this sidecar missed) counts.
    let mut garbled = kv.clone();
    *garbled.last_mut().unwrap() ^= 1;
    let log = Log(BTreeMap::from([(13, garbled)]));
    assert!(matches!(
        f.run(Some(f.kek.clone()), true, &members(), &log, 13, None),
        Err(GuardError::SidecarBehindRaftLog { .. })
    ));
}

#[test]
fn guard9_looks_at_cleartext_before_cutover() {
    let sc = Sidecar { raft_applied_index: 3, ..Sidecar::default() };
    let ks = Keystore::new();
    let boot = vec![0x04, 0x01];
    let log = Log(BTreeMap::from([(4, vec![0x00]), (5, boot)]));
    assert!(matches!(
        guards::sidecar_not_behind(&sc, &ks, &log, 5),
        Err(GuardError::SidecarBehindRaftLog { entry_index: 5, .. })
    ));
    assert!(guards::sidecar_not_behind(&sc, &ks, &log, 4).is_ok());
    for op in [0x06u8, 0x07, 0x05] {
        let log = Log(BTreeMap::from([(4, vec![op])]));
        assert!(guards::sidecar_not_behind(&sc, &ks, &log, 4).is_err(), "opcode {op:#x}");
    }
}

#[test]
fn guard10_snapshot_cutover_divergence() {
    let f = Fixture::new();
    let ok = [
        SnapshotInfo { last_index: 20, raft_cutover_index: 12 },
        SnapshotInfo { last_index: 11, raft_cutover_index: 0 }, // taken before the cutover
    ];
    for s in ok {
        assert!(f.run(Some(f.kek.clone()), true, &members(), &empty_log(), 12, Some(s)).is_ok(), "{s:?}");
    }
    let bad = [
        SnapshotInfo { last_index: 20, raft_cutover_index: 13 },
        SnapshotInfo { last_index: 20, raft_cutover_index: 0 },
        SnapshotInfo { last_index: 11, raft_cutover_index: 9 },
    ];
    for s in bad {
        let err = f.run(Some(f.kek.clone()), true, &members(), &empty_log(), 12, Some(s)).err().unwrap();
        assert!(matches!(err, GuardError::EnvelopeCutoverDivergence { .. }), "{s:?}: {err}");
    }
}

#[test]
fn every_guard_message_is_distinct() {
    let f = Fixture::new();
    let msgs = [
        f.run(None, false, &members(), &empty_log(), 12, None).err().unwrap().to_string(),
        f.run(None, true, &members(), &empty_log(), 12, None).err().unwrap().to_string(),
        f.run(Some(kek("33")), true, &members(), &empty_log(), 12, None).err().unwrap().to_string(),
    ];
    let names = ["SidecarPresentWithoutFlag", "KekRequired", "KekMismatch"];
    for (m, n) in msgs.iter().zip(names) {
        assert!(m.starts_with(n), "{m}");
    }
}
