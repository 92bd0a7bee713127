//! Applies encryption entries (opcodes 0x03–0x05) to this node: keystore, sidecar and writer
//! registry.
//!
//! The apply hook calls [`Applier::apply_payload`] for every committed encryption entry, in log
//! order, on every replica; any `Err` must halt the apply loop without advancing the applied
//! index (the restart replays the same entry). Each entry runs ALL its checks before its first
//! side effect, so a rejected entry leaves keystore, sidecar and registry exactly as they were.
//! Effects run in a fixed order (keystore → one durable sidecar write → registry rows) and each
//! is idempotent, so a crash between any two is healed by replaying the entry.
//!
//! Replays come in two kinds. A *replay* re-applies an entry whose effects are all present
//! (same ids, same wrapped bytes): it only re-asserts them. An entry at an index the sidecar has
//! already passed (`index <= raft_applied_index`) is *reflected*: the sidecar, which is written
//! durably before the store batch that records the applied index, already holds this entry's
//! effects and possibly later ones (a rotation, a rewrap under a new KEK), so only the checks that
//! still make sense are run and only the registry rows — which live in the store batch — are
//! re-written.
//!
//! Without all three of KEK, keystore and sidecar directory, every encryption entry fails with
//! [`ApplyError::KekNotConfigured`]: a node that cannot hold keys must not pretend to apply them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use zeroize::Zeroizing;

use crate::cipher::{DEK_LEN, Purpose};
use crate::kek::{DekIdentity, KekError, KekProvider};
use crate::keystore::{Keystore, KeystoreError};
use crate::nonce::node16;
use crate::registry::{self, PlanError, RegistrationError, RegistryStore, Row, RowKey, StoreError};
use crate::sidecar::{KeyRecord, Sidecar, SidecarError, now_rfc3339};
use crate::wire::{Bootstrap, EncryptionEntry, Registration, WireError, WrappedDek};

/// Why an encryption entry was not applied. Every variant halts the apply loop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// KEK, keystore or sidecar directory is missing.
    #[error(
        "KekNotConfigured: this node has no KEK/keystore/sidecar wired; restart it with --encryption-enabled and a KEK (--kek-file or --kek-uri)"
    )]
    KekNotConfigured,
    /// The payload does not decode.
    #[error(transparent)]
    Malformed(#[from] WireError),
    /// Bootstrap names the same id for both DEKs.
    #[error("bootstrap uses DEK id {dek_id} for both storage and raft")]
    SameDekIds {
        /// The id.
        dek_id: u32,
    },
    /// A bootstrap row registers a DEK that is not one of the two bootstrap DEKs.
    #[error("bootstrap registers DEK {dek_id}, which is not one of its two DEKs")]
    ForeignRegistration {
        /// The id.
        dek_id: u32,
    },
    /// The node is bootstrapped with other keys; bootstrap never re-points active keys.
    #[error(
        "bootstrap conflicts with this node's keys (active storage {active_storage}, raft {active_raft}); \
         a second bootstrap is refused — use rotate-dek"
    )]
    BootstrapConflict {
        /// Active storage id on this node.
        active_storage: u32,
        /// Active raft id on this node.
        active_raft: u32,
    },
    /// An entry that needs an active key of a purpose arrived before bootstrap.
    #[error("EncryptionNotBootstrapped: no active {purpose} DEK on this node")]
    NotBootstrapped {
        /// The purpose.
        purpose: Purpose,
    },
    /// The proposer's registration is for another DEK than the entry's.
    #[error("proposer registration names DEK {registered}, but the entry is for DEK {dek_id}")]
    ProposerMismatch {
        /// The entry's DEK.
        dek_id: u32,
        /// The registration's DEK.
        registered: u32,
    },
    /// The DEK is not the active one of its purpose.
    #[error("DEK {dek_id} is not the active {purpose} DEK (active is {active})")]
    NotActive {
        /// The DEK.
        dek_id: u32,
        /// Its purpose.
        purpose: Purpose,
        /// The active id.
        active: u32,
    },
    /// The DEK id is unknown to this node.
    #[error("DEK {dek_id} is unknown to this node")]
    UnknownDek {
        /// The id.
        dek_id: u32,
    },
    /// The DEK exists with another purpose.
    #[error("DEK {dek_id} is a {actual} key, the entry says {expected}")]
    PurposeMismatch {
        /// The id.
        dek_id: u32,
        /// The entry's purpose.
        expected: Purpose,
        /// The recorded purpose.
        actual: Purpose,
    },
    /// A rotation names an id that already exists with other bytes or purpose.
    #[error("rotate-dek reuses existing DEK id {dek_id}")]
    DekIdExists {
        /// The id.
        dek_id: u32,
    },
    /// The DEK is retired.
    #[error("DEK {dek_id} is retired")]
    Retired {
        /// The id.
        dek_id: u32,
    },
    /// retire-dek on an active DEK.
    #[error("retire-dek refused: DEK {dek_id} is the active {purpose} DEK")]
    RetireActive {
        /// The id.
        dek_id: u32,
        /// Its purpose.
        purpose: Purpose,
    },
    /// rewrap-deks produced other key bytes than the loaded DEK.
    #[error("rewrap-deks: DEK {dek_id} unwraps to different key bytes than the loaded DEK")]
    RewrapMismatch {
        /// The id.
        dek_id: u32,
    },
    /// The KEK did not unwrap a DEK.
    #[error("KekMismatch: {0}")]
    Kek(#[from] KekError),
    /// The keystore refused (set-once conflict).
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// A registration breaks the registry rule.
    #[error(transparent)]
    Registration(#[from] RegistrationError),
    /// Two bootstrap rows share a node16 with different full ids.
    #[error(
        "NodeIdCollision: bootstrap registers nodes {a:#018x} and {b:#018x} with the same nonce node id {node16:#06x}"
    )]
    BootstrapCollision {
        /// The shared node16.
        node16: u16,
        /// One node.
        a: u64,
        /// The other.
        b: u64,
    },
    /// The sidecar write failed.
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    /// The registry storage failed.
    #[error(transparent)]
    Registry(#[from] StoreError),
}

impl From<PlanError> for ApplyError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Rule(r) => ApplyError::Registration(r),
            PlanError::Store(s) => ApplyError::Registry(s),
        }
    }
}

/// What an applied entry changed, for the caller to act on (re-arm sealers, metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A registration (insert, bump or replay).
    Registered(registry::Decision),
    /// The bootstrap entry is applied (or re-asserted on replay). After a reflected replay the
    /// active ids may be later ones: read them from the keystore, not from here.
    Bootstrapped {
        /// Storage DEK.
        storage: u32,
        /// Raft DEK.
        raft: u32,
    },
    /// A new active DEK; seal under it with this node's `local_epoch`.
    Rotated {
        /// Purpose.
        purpose: Purpose,
        /// New DEK.
        dek_id: u32,
        /// This node's epoch for it.
        local_epoch: u16,
    },
    /// Wrapped bytes replaced.
    Rewrapped {
        /// How many DEKs.
        count: usize,
    },
    /// A DEK retired.
    Retired {
        /// The DEK.
        dek_id: u32,
    },
    /// Store values are sealed from `cutover_index` on.
    StorageEnvelopeEnabled {
        /// The entry that switched it on (the original one on replays).
        cutover_index: u64,
    },
    /// Raft payloads above `cutover_index` are raft envelopes.
    RaftEnvelopeEnabled {
        /// The cutover index (the original one on replays).
        cutover_index: u64,
    },
}

/// Applies encryption entries on one node. See the module docs.
pub struct Applier {
    kek: Option<Arc<dyn KekProvider>>,
    keystore: Option<Arc<Keystore>>,
    sidecar_dir: Option<PathBuf>,
    sidecar: Mutex<Sidecar>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("kek", &self.kek.as_ref().map(|k| k.describe()))
            .field("keystore", &self.keystore)
            .field("sidecar_dir", &self.sidecar_dir)
            .finish()
    }
}

impl Default for Applier {
    fn default() -> Self {
        Self::unwired()
    }
}

struct Wired<'a> {
    kek: &'a dyn KekProvider,
    keystore: &'a Keystore,
    dir: &'a Path,
}

impl Applier {
    /// An applier with nothing wired: every entry fails with `KekNotConfigured`.
    pub fn unwired() -> Self {
        Applier { kek: None, keystore: None, sidecar_dir: None, sidecar: Mutex::new(Sidecar::default()) }
    }

    /// Wires the KEK.
    pub fn with_kek(mut self, kek: Arc<dyn KekProvider>) -> Self {
        self.kek = Some(kek);
        self
    }

    /// Wires the keystore (the one the store and the raft layer read).
    pub fn with_keystore(mut self, keystore: Arc<Keystore>) -> Self {
        self.keystore = Some(keystore);
        self
    }

    /// Wires the sidecar directory and loads the sidecar from it (an absent file is an empty
    /// sidecar, written on the first mutation).
    pub fn with_sidecar_dir(mut self, dir: &Path) -> Result<Self, SidecarError> {
        let loaded = Sidecar::load(dir)?.unwrap_or_default();
        self.sidecar = Mutex::new(loaded);
        self.sidecar_dir = Some(dir.to_path_buf());
        Ok(self)
    }

    /// A copy of the sidecar as last durably written.
    pub fn sidecar(&self) -> Sidecar {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Sidecar> {
        self.sidecar.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wired(&self) -> Result<Wired<'_>, ApplyError> {
        match (&self.kek, &self.keystore, &self.sidecar_dir) {
            (Some(kek), Some(keystore), Some(dir)) => Ok(Wired { kek: kek.as_ref(), keystore, dir }),
            _ => Err(ApplyError::KekNotConfigured),
        }
    }

    /// Decodes and applies the encryption payload of the entry at `index`.
    pub fn apply_payload(
        &self,
        index: u64,
        payload: &[u8],
        registry: &mut dyn RegistryStore,
    ) -> Result<Applied, ApplyError> {
        let entry = EncryptionEntry::decode(payload)?;
        self.apply(index, &entry, registry)
    }

    /// Applies a decoded entry at `index`.
    pub fn apply(
        &self,
        index: u64,
        entry: &EncryptionEntry,
        registry: &mut dyn RegistryStore,
    ) -> Result<Applied, ApplyError> {
        let w = self.wired()?;
        let mut sc = self.lock();
        let reflected = index <= sc.raft_applied_index;
        match entry {
            EncryptionEntry::Register(reg) => register(&sc, reflected, reg, registry),
            EncryptionEntry::Bootstrap(b) => bootstrap(&w, &mut sc, index, reflected, b, registry),
            EncryptionEntry::RotateDek { dek, proposer } => {
                rotate(&w, &mut sc, index, reflected, dek, proposer, registry)
            }
            EncryptionEntry::RewrapDeks(deks) => rewrap(&w, &mut sc, index, reflected, deks),
            EncryptionEntry::RetireDek { dek_id, purpose } => {
                retire(&w, &mut sc, index, reflected, *dek_id, *purpose, registry)
            }
            EncryptionEntry::EnableStorageEnvelope { dek_id, proposer } => {
                enable(&w, &mut sc, index, reflected, Purpose::Storage, *dek_id, proposer, registry)
            }
            EncryptionEntry::EnableRaftEnvelope { dek_id, proposer } => {
                enable(&w, &mut sc, index, reflected, Purpose::Raft, *dek_id, proposer, registry)
            }
        }
    }
}

/// The recorded key `id` of `purpose`, or the error naming what is wrong with it.
fn known(sc: &Sidecar, id: u32, purpose: Purpose) -> Result<&KeyRecord, ApplyError> {
    let k = sc.keys.get(&id).ok_or(ApplyError::UnknownDek { dek_id: id })?;
    if k.purpose != purpose {
        return Err(ApplyError::PurposeMismatch { dek_id: id, expected: purpose, actual: k.purpose });
    }
    Ok(k)
}

fn unwrap(
    kek: &dyn KekProvider,
    purpose: Purpose,
    dek_id: u32,
    wrapped: &[u8],
) -> Result<Zeroizing<[u8; DEK_LEN]>, ApplyError> {
    Ok(kek.unwrap(DekIdentity { purpose, dek_id }, wrapped)?)
}

fn write_rows(registry: &mut dyn RegistryStore, rows: Vec<(RowKey, Row)>) -> Result<(), ApplyError> {
    for (k, r) in rows {
        registry.put(k, r)?;
    }
    Ok(())
}

/// Durably writes `next` and makes it the cached sidecar.
fn commit(dir: &Path, sc: &mut Sidecar, next: Sidecar) -> Result<(), ApplyError> {
    next.store(dir)?;
    *sc = next;
    Ok(())
}

fn register(
    sc: &Sidecar,
    reflected: bool,
    reg: &Registration,
    registry: &mut dyn RegistryStore,
) -> Result<Applied, ApplyError> {
    let k = sc.keys.get(&reg.dek_id).ok_or(ApplyError::UnknownDek { dek_id: reg.dek_id })?;
    if k.retired && !reflected {
        return Err(ApplyError::Retired { dek_id: reg.dek_id });
    }
    let existing = registry.get(registry::key_of(reg))?;
    let decision = registry::decide(existing.as_ref(), reg)?;
    if let registry::Decision::Insert(row) | registry::Decision::Bump(row) = decision {
        registry.put(registry::key_of(reg), row)?;
    }
    Ok(Applied::Registered(decision))
}

fn bootstrap(
    w: &Wired<'_>,
    sc: &mut Sidecar,
    index: u64,
    reflected: bool,
    b: &Bootstrap,
    registry: &mut dyn RegistryStore,
) -> Result<Applied, ApplyError> {
    // --- checks ---
    if b.storage_dek_id == b.raft_dek_id {
        return Err(ApplyError::SameDekIds { dek_id: b.storage_dek_id });
    }
    if b.storage_dek_id == 0 || b.raft_dek_id == 0 {
        return Err(WireError::ZeroKeyId { what: "bootstrap" }.into());
    }
    let mut seen: BTreeMap<u16, u64> = BTreeMap::new();
    for r in &b.registrations {
        if r.dek_id != b.storage_dek_id && r.dek_id != b.raft_dek_id {
            return Err(ApplyError::ForeignRegistration { dek_id: r.dek_id });
        }
        let n16 = node16(r.full_node_id);
        match seen.get(&n16) {
            Some(&other) if other != r.full_node_id => {
                return Err(ApplyError::BootstrapCollision { node16: n16, a: other, b: r.full_node_id });
            }
            _ => {
                seen.insert(n16, r.full_node_id);
            }
        }
    }
    let pairs =
        [(Purpose::Storage, b.storage_dek_id, &b.wrapped_storage), (Purpose::Raft, b.raft_dek_id, &b.wrapped_raft)];
    let fresh = !sc.bootstrapped();
    let conflict = || ApplyError::BootstrapConflict { active_storage: sc.active.storage, active_raft: sc.active.raft };
    if fresh {
        if pairs.iter().any(|(_, id, _)| sc.keys.contains_key(id)) {
            return Err(conflict());
        }
    } else if reflected {
        // The sidecar already holds this entry's effects (and maybe later rotations/rewraps):
        // the ids must be there with the right purposes; the bytes may have been rewrapped since.
        for (p, id, _) in &pairs {
            match known(sc, *id, *p) {
                Ok(_) => {}
                Err(_) => return Err(conflict()),
            }
        }
    } else {
        let identical = pairs.iter().all(|(p, id, wrapped)| {
            sc.active.get(*p) == *id && sc.keys.get(id).is_some_and(|k| k.purpose == *p && k.wrapped == **wrapped)
        });
        if !identical {
            return Err(conflict());
        }
    }
    let mut unwrapped = Vec::with_capacity(2);
    if !reflected || fresh {
        for (p, id, wrapped) in &pairs {
            let bytes = unwrap(w.kek, *p, *id, wrapped)?;
            w.keystore.check_install(*id, *p, &bytes)?;
            unwrapped.push((*p, *id, bytes));
        }
    }
    let rows = registry::plan(registry, &b.registrations)?;

    // --- effects: keystore → sidecar → registry ---
    for (p, id, bytes) in &unwrapped {
        w.keystore.install(*id, *p, bytes)?;
    }
    if fresh {
        let mut next = sc.clone();
        let created = now_rfc3339();
        for (p, id, wrapped) in &pairs {
            next.keys.insert(
                *id,
                KeyRecord {
                    purpose: *p,
                    wrapped: (*wrapped).clone(),
                    created: created.clone(),
                    local_epoch: 0,
                    retired: false,
                },
            );
            next.active.set(*p, *id);
        }
        next.raft_applied_index = next.raft_applied_index.max(index);
        commit(w.dir, sc, next)?;
    } else if !reflected {
        let mut next = sc.clone();
        next.raft_applied_index = index;
        commit(w.dir, sc, next)?;
    }
    for p in Purpose::ALL {
        let id = sc.active.get(p);
        if id != 0 && w.keystore.get(id).is_some() {
            w.keystore.set_active(p, id)?;
        }
    }
    write_rows(registry, rows)?;
    Ok(Applied::Bootstrapped { storage: b.storage_dek_id, raft: b.raft_dek_id })
}

#[allow(clippy::too_many_arguments)]
fn rotate(
    w: &Wired<'_>,
    sc: &mut Sidecar,
    index: u64,
    reflected: bool,
    dek: &WrappedDek,
    proposer: &Registration,
    registry: &mut dyn RegistryStore,
) -> Result<Applied, ApplyError> {
    let (p, id) = (dek.purpose, dek.dek_id);
    if proposer.dek_id != id {
        return Err(ApplyError::ProposerMismatch { dek_id: id, registered: proposer.dek_id });
    }
    let old_active = sc.active.get(p);
    if old_active == 0 {
        return Err(ApplyError::NotBootstrapped { purpose: p });
    }
    if reflected {
        known(sc, id, p)?;
        let rows = registry::plan(registry, std::slice::from_ref(proposer))?;
        write_rows(registry, rows)?;
        return Ok(Applied::Rotated { purpose: p, dek_id: id, local_epoch: sc.local_epoch(id) });
    }
    let replay = match sc.keys.get(&id) {
        None => false,
        Some(k) if k.purpose == p && k.wrapped == dek.wrapped && old_active == id => true,
        Some(_) => return Err(ApplyError::DekIdExists { dek_id: id }),
    };
    let bytes = unwrap(w.kek, p, id, &dek.wrapped)?;
    w.keystore.check_install(id, p, &bytes)?;
    let rows = registry::plan(registry, std::slice::from_ref(proposer))?;

    w.keystore.install(id, p, &bytes)?;
    let local_epoch = if replay { sc.local_epoch(id) } else { sc.local_epoch(old_active) };
    let mut next = sc.clone();
    if !replay {
        next.keys.insert(
            id,
            KeyRecord {
                purpose: p,
                wrapped: dek.wrapped.clone(),
                created: now_rfc3339(),
                local_epoch: u32::from(local_epoch),
                retired: false,
            },
        );
        next.active.set(p, id);
    }
    next.raft_applied_index = index;
    commit(w.dir, sc, next)?;
    w.keystore.set_active(p, id)?;
    write_rows(registry, rows)?;
    Ok(Applied::Rotated { purpose: p, dek_id: id, local_epoch })
}

fn rewrap(
    w: &Wired<'_>,
    sc: &mut Sidecar,
    index: u64,
    reflected: bool,
    deks: &[WrappedDek],
) -> Result<Applied, ApplyError> {
    for d in deks {
        let k = known(sc, d.dek_id, d.purpose)?;
        if k.retired {
            return Err(ApplyError::Retired { dek_id: d.dek_id });
        }
    }
    if reflected {
        // The KEK may have changed again since; the sidecar already carries these bytes or newer.
        return Ok(Applied::Rewrapped { count: deks.len() });
    }
    for d in deks {
        let bytes = unwrap(w.kek, d.purpose, d.dek_id, &d.wrapped)?;
        let loaded = w.keystore.get(d.dek_id).ok_or(KeystoreError::NotLoaded { key_id: d.dek_id })?;
        if !loaded.same_bytes(&bytes) {
            return Err(ApplyError::RewrapMismatch { dek_id: d.dek_id });
        }
    }
    let mut next = sc.clone();
    for d in deks {
        if let Some(k) = next.keys.get_mut(&d.dek_id) {
            k.wrapped = d.wrapped.clone();
        }
    }
    next.raft_applied_index = index;
    commit(w.dir, sc, next)?;
    Ok(Applied::Rewrapped { count: deks.len() })
}

#[allow(clippy::too_many_arguments)]
fn retire(
    w: &Wired<'_>,
    sc: &mut Sidecar,
    index: u64,
    reflected: bool,
    dek_id: u32,
    purpose: Purpose,
    registry: &mut dyn RegistryStore,
) -> Result<Applied, ApplyError> {
    known(sc, dek_id, purpose)?;
    if sc.active.get(purpose) == dek_id {
        return Err(ApplyError::RetireActive { dek_id, purpose });
    }
    if !reflected {
        let mut next = sc.clone();
        if let Some(k) = next.keys.get_mut(&dek_id) {
            k.retired = true;
        }
        next.raft_applied_index = index;
        commit(w.dir, sc, next)?;
    }
    w.keystore.remove(dek_id)?;
    registry.remove_dek(dek_id)?;
    Ok(Applied::Retired { dek_id })
}

#[allow(clippy::too_many_arguments)]
fn enable(
    w: &Wired<'_>,
    sc: &mut Sidecar,
    index: u64,
    reflected: bool,
    purpose: Purpose,
    dek_id: u32,
    proposer: &Registration,
    registry: &mut dyn RegistryStore,
) -> Result<Applied, ApplyError> {
    let active = sc.active.get(purpose);
    if active == 0 {
        return Err(ApplyError::NotBootstrapped { purpose });
    }
    if reflected {
        known(sc, dek_id, purpose)?;
    } else if dek_id != active {
        return Err(ApplyError::NotActive { dek_id, purpose, active });
    }
    if proposer.dek_id != dek_id {
        return Err(ApplyError::ProposerMismatch { dek_id, registered: proposer.dek_id });
    }
    let rows = registry::plan(registry, std::slice::from_ref(proposer))?;

    write_rows(registry, rows)?;
    if !reflected {
        let mut next = sc.clone();
        match purpose {
            Purpose::Storage if !next.storage_envelope_active => {
                next.storage_envelope_active = true;
                next.storage_cutover_index = index;
            }
            Purpose::Raft if next.raft_envelope_cutover_index == 0 => next.raft_envelope_cutover_index = index,
            _ => {}
        }
        next.raft_applied_index = index;
        commit(w.dir, sc, next)?;
    }
    Ok(match purpose {
        Purpose::Storage => Applied::StorageEnvelopeEnabled { cutover_index: sc.storage_cutover_index },
        Purpose::Raft => Applied::RaftEnvelopeEnabled { cutover_index: sc.raft_envelope_cutover_index },
    })
}

impl ApplyError {
    /// The DEK id the failure is about, for the halt log line (0 when none applies).
    pub fn key_id(&self) -> u32 {
        match self {
            ApplyError::SameDekIds { dek_id }
            | ApplyError::ForeignRegistration { dek_id }
            | ApplyError::ProposerMismatch { dek_id, .. }
            | ApplyError::NotActive { dek_id, .. }
            | ApplyError::UnknownDek { dek_id }
            | ApplyError::PurposeMismatch { dek_id, .. }
            | ApplyError::DekIdExists { dek_id }
            | ApplyError::Retired { dek_id }
            | ApplyError::RetireActive { dek_id, .. }
            | ApplyError::RewrapMismatch { dek_id } => *dek_id,
            ApplyError::Kek(KekError::Unwrap { dek_id, .. } | KekError::WrappedLength { dek_id, .. }) => *dek_id,
            ApplyError::Keystore(
                KeystoreError::KeyConflict { key_id }
                | KeystoreError::PurposeConflict { key_id, .. }
                | KeystoreError::NotLoaded { key_id }
                | KeystoreError::Active { key_id, .. },
            ) => *key_id,
            ApplyError::Registration(
                RegistrationError::LocalEpochRollback { dek_id, .. }
                | RegistrationError::NodeIdCollision { dek_id, .. },
            ) => *dek_id,
            _ => 0,
        }
    }
}

/// The cluster-wide part of the sidecar: what every replica agrees on at a log index (wrapped
/// DEKs, active ids, cutover flags, retired flags), without this node's local epochs. Snapshots
/// carry it (spec 02 §8 `encryption_state`) so that a follower installing a snapshot across
/// rotations it never saw gets every DEK in the same step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterState {
    /// Whether store values are sealed.
    pub storage_envelope_active: bool,
    /// Index of the enable-storage-envelope entry.
    pub storage_cutover_index: u64,
    /// Index of the enable-raft-envelope entry.
    pub raft_envelope_cutover_index: u64,
    /// Active ids.
    pub active: crate::sidecar::ActiveIds,
    /// Every DEK, wrapped.
    pub keys: BTreeMap<u32, ClusterKey>,
}

/// One DEK in a [`ClusterState`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterKey {
    /// Its purpose.
    #[serde(with = "crate::sidecar::purpose_str")]
    pub purpose: Purpose,
    /// Wrapped under the KEK.
    #[serde(with = "crate::sidecar::b64")]
    pub wrapped: Vec<u8>,
    /// Retired.
    pub retired: bool,
}

/// The largest encoded cluster state accepted (the sidecar's own bound).
pub const MAX_CLUSTER_STATE_LEN: usize = crate::sidecar::MAX_FILE_LEN as usize;

impl ClusterState {
    /// Decodes; total (a bounded length, serde_json, then the sidecar's own validation rules).
    pub fn decode(bytes: &[u8]) -> Result<Self, ApplyError> {
        if bytes.len() > MAX_CLUSTER_STATE_LEN {
            return Err(SidecarError::TooLarge {
                path: PathBuf::from("<snapshot encryption state>"),
                len: bytes.len() as u64,
            }
            .into());
        }
        serde_json::from_slice(bytes)
            .map_err(|e| SidecarError::Invalid(format!("snapshot encryption state: {e}")).into())
    }

    /// Encodes as JSON.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs and maps with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Applier {
    /// This node's cluster-wide encryption state, for a snapshot header.
    pub fn cluster_state(&self) -> ClusterState {
        let sc = self.lock();
        ClusterState {
            storage_envelope_active: sc.storage_envelope_active,
            storage_cutover_index: sc.storage_cutover_index,
            raft_envelope_cutover_index: sc.raft_envelope_cutover_index,
            active: sc.active,
            keys: sc
                .keys
                .iter()
                .map(|(id, k)| (*id, ClusterKey { purpose: k.purpose, wrapped: k.wrapped.clone(), retired: k.retired }))
                .collect(),
        }
    }

    /// Adopts the cluster state of an installed snapshot whose last index is `index`: every DEK
    /// is unwrapped and checked before anything changes, then keystore → one sidecar write.
    ///
    /// A DEK this node already has keeps its local epoch. A DEK new to it gets
    /// `registry last_seen + 1` for this node (0 without a row), so it never reuses a nonce
    /// prefix the cluster recorded for it; `registry` must already hold the snapshot's rows.
    pub fn install_cluster_state(
        &self,
        state: &ClusterState,
        index: u64,
        registry: &dyn RegistryStore,
        full_node_id: u64,
    ) -> Result<(), ApplyError> {
        let w = self.wired()?;
        let mut sc = self.lock();
        // --- checks ---
        let mut unwrapped = Vec::new();
        for (id, k) in &state.keys {
            if let Some(mine) = sc.keys.get(id)
                && mine.purpose != k.purpose
            {
                return Err(ApplyError::PurposeMismatch { dek_id: *id, expected: mine.purpose, actual: k.purpose });
            }
            if k.retired {
                continue;
            }
            let bytes = unwrap(w.kek, k.purpose, *id, &k.wrapped)?;
            w.keystore.check_install(*id, k.purpose, &bytes)?;
            unwrapped.push((*id, k.purpose, bytes));
        }
        for p in Purpose::ALL {
            let id = state.active.get(p);
            if id != 0 && !unwrapped.iter().any(|(u, up, _)| *u == id && *up == p) {
                return Err(ApplyError::UnknownDek { dek_id: id });
            }
        }
        let n16 = node16(full_node_id);
        let mut epochs = BTreeMap::new();
        for id in state.keys.keys() {
            let epoch = match sc.keys.get(id) {
                Some(mine) => mine.local_epoch,
                None => match registry.get(RowKey { dek_id: *id, node16: n16 })? {
                    Some(row) if row.full_node_id == full_node_id => u32::from(row.last_seen_epoch) + 1,
                    _ => 0,
                },
            };
            epochs.insert(*id, epoch.min(0xFFFF));
        }
        // --- effects ---
        for (id, p, bytes) in &unwrapped {
            w.keystore.install(*id, *p, bytes)?;
        }
        for p in Purpose::ALL {
            let id = state.active.get(p);
            if id != 0 {
                w.keystore.set_active(p, id)?;
            }
        }
        let mut next = sc.clone();
        next.storage_envelope_active = state.storage_envelope_active;
        next.storage_cutover_index = state.storage_cutover_index;
        next.raft_envelope_cutover_index = state.raft_envelope_cutover_index;
        next.active = state.active;
        let created = now_rfc3339();
        for (id, k) in &state.keys {
            let prev = sc.keys.get(id);
            next.keys.insert(
                *id,
                KeyRecord {
                    purpose: k.purpose,
                    wrapped: k.wrapped.clone(),
                    created: prev.map_or_else(|| created.clone(), |p| p.created.clone()),
                    local_epoch: epochs.get(id).copied().unwrap_or(0),
                    retired: k.retired,
                },
            );
        }
        next.raft_applied_index = next.raft_applied_index.max(index);
        commit(w.dir, &mut sc, next)?;
        for (id, k) in &state.keys {
            if k.retired {
                // A retired key may never have been loaded here; absence is the goal.
                let _ = w.keystore.remove(*id);
            }
        }
        Ok(())
    }
}
