//! The startup refusal guards (spec 03 §5), in order. Each is a function over plain inputs so
//! that the server runs them all and tests can trigger each one alone; each failure is its own
//! [`GuardError`] variant whose message names the flag or admin command that fixes it.
//!
//! [`run`] executes the whole sequence: 1 flag, 2 KEK source, 3 KEK unwraps every DEK, 4 epochs
//! not exhausted, 5 durability probe, 6 member node16s distinct, 7 registry agrees with local
//! epochs, 8 bump + fsync local epochs (before any write path opens), 9 sidecar not behind the
//! log, 10 snapshot cutover agrees with the sidecar.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cipher::Purpose;
use crate::envelope;
use crate::kek::{DekIdentity, KekProvider};
use crate::keystore::Keystore;
use crate::nonce::{EPOCH_EXHAUSTED, EPOCH_WARN, node16};
use crate::registry::{RegistryStore, RowKey};
use crate::sidecar::{self, Sidecar, SidecarError};
use crate::wire;

/// A refusal to start. Each message says what to run next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// Guard 1.
    #[error(
        "SidecarPresentWithoutFlag: {path} exists, so this node holds encrypted data, but \
         --encryption-enabled is not set. Restart with --encryption-enabled and the cluster's KEK \
         (--kek-file PATH or --kek-uri URI). Encryption cannot be switched off in place; see \
         docs/runbook.md (disabling encryption) for the dump-and-reload procedure."
    )]
    SidecarPresentWithoutFlag {
        /// The sidecar file.
        path: PathBuf,
    },
    /// Guard 2.
    #[error(
        "KekRequired: --encryption-enabled needs a KEK; pass --kek-file PATH (32 raw bytes, mode 0600) or --kek-uri URI"
    )]
    KekRequired,
    /// Guard 3.
    #[error(
        "KekMismatch: the KEK ({kek}) does not unwrap {purpose} DEK {dek_id} in the sidecar ({reason}). \
         Start with the KEK that wrapped it; if the cluster's KEK was rotated while this node was \
         down, run `sealkv admin encryption resync-sidecar` for this node."
    )]
    KekMismatch {
        /// The provider (never its key).
        kek: String,
        /// The DEK.
        dek_id: u32,
        /// Its purpose.
        purpose: Purpose,
        /// The provider's error.
        reason: String,
    },
    /// Guard 4.
    #[error(
        "LocalEpochExhausted: active {purpose} DEK {dek_id} has used all 65535 process-load epochs on \
         this node. Rotate it from a running node (`sealkv admin encryption rotate-dek --purpose \
         {purpose}`), then run `sealkv admin encryption resync-sidecar` for this node."
    )]
    LocalEpochExhausted {
        /// The DEK.
        dek_id: u32,
        /// Its purpose.
        purpose: Purpose,
    },
    /// Guard 5.
    #[error("UnsupportedFilesystem: {0}")]
    UnsupportedFilesystem(SidecarError),
    /// Guard 6.
    #[error(
        "NodeIdCollision: members {a:?} and {b:?} share nonce node id {node16:#06x}; give one of them \
         another --node-id before it joins"
    )]
    NodeIdCollision {
        /// One member's name.
        a: String,
        /// The other's.
        b: String,
        /// The shared low 16 bits.
        node16: u16,
    },
    /// Guard 7.
    #[error(
        "LocalEpochRollback: {detail}. This data dir is older than the cluster's record of it \
         (restored from a backup or copied from another node). Run `sealkv admin encryption \
         resync-sidecar` for this node, or wipe the data dir and rejoin."
    )]
    LocalEpochRollback {
        /// What disagreed.
        detail: String,
    },
    /// Guard 9.
    #[error(
        "SidecarBehindRaftLog: the sidecar was last written at index {sidecar_index}, but the log \
         holds an encryption entry at index {entry_index} that is already applied. Run `sealkv admin \
         encryption resync-sidecar` for this node."
    )]
    SidecarBehindRaftLog {
        /// The sidecar's index.
        sidecar_index: u64,
        /// The first encryption entry in the gap.
        entry_index: u64,
    },
    /// Guard 10.
    #[error(
        "EnvelopeCutoverDivergence: the latest snapshot says the raft-envelope cutover is at \
         {snapshot}, the sidecar says {sidecar}. Run `sealkv admin encryption resync-sidecar` for \
         this node, or wipe the data dir and rejoin."
    )]
    EnvelopeCutoverDivergence {
        /// The snapshot's cutover.
        snapshot: u64,
        /// The sidecar's cutover.
        sidecar: u64,
    },
    /// Reading or writing the sidecar failed.
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    /// Reading the registry or the log failed.
    #[error("startup check could not read {what}: {reason}")]
    Read {
        /// What.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// Guard 1.
pub fn sidecar_needs_flag(sidecar_dir: &Path, encryption_enabled: bool) -> Result<(), GuardError> {
    if !encryption_enabled && Sidecar::exists(sidecar_dir) {
        return Err(GuardError::SidecarPresentWithoutFlag { path: sidecar_dir.join(sidecar::FILE_NAME) });
    }
    Ok(())
}

/// Guard 2.
pub fn kek_required(encryption_enabled: bool, kek_configured: bool) -> Result<(), GuardError> {
    if encryption_enabled && !kek_configured {
        return Err(GuardError::KekRequired);
    }
    Ok(())
}

/// Guard 3: unwraps every unretired DEK and returns a keystore holding them with the sidecar's
/// active ids.
pub fn unwrap_all(sc: &Sidecar, kek: &dyn KekProvider) -> Result<Keystore, GuardError> {
    let ks = Keystore::new();
    unwrap_into(sc, kek, &ks)?;
    Ok(ks)
}

/// Guard 3, installing into `ks`: the keystore the node's store and applier already share, so
/// the unwrapped DEKs are never copied between keystores.
pub fn unwrap_into(sc: &Sidecar, kek: &dyn KekProvider, ks: &Keystore) -> Result<(), GuardError> {
    for (id, k) in sc.keys.iter().filter(|(_, k)| !k.retired) {
        let bytes = kek.unwrap(DekIdentity { purpose: k.purpose, dek_id: *id }, &k.wrapped).map_err(|e| {
            GuardError::KekMismatch { kek: kek.describe(), dek_id: *id, purpose: k.purpose, reason: e.to_string() }
        })?;
        ks.install(*id, k.purpose, &bytes).map_err(|e| GuardError::KekMismatch {
            kek: kek.describe(),
            dek_id: *id,
            purpose: k.purpose,
            reason: e.to_string(),
        })?;
    }
    for p in Purpose::ALL {
        let id = sc.active.get(p);
        if id != 0 {
            ks.set_active(p, id).map_err(|e| GuardError::KekMismatch {
                kek: kek.describe(),
                dek_id: id,
                purpose: p,
                reason: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// Guard 4 (warns above 0xFF00).
pub fn epochs_not_exhausted(sc: &Sidecar) -> Result<(), GuardError> {
    for p in Purpose::ALL {
        let id = sc.active.get(p);
        if id == 0 {
            continue;
        }
        let e = sc.local_epoch(id);
        if e == EPOCH_EXHAUSTED {
            return Err(GuardError::LocalEpochExhausted { dek_id: id, purpose: p });
        }
        if e > EPOCH_WARN {
            tracing::warn!(dek_id = id, purpose = %p, local_epoch = e, "local_epoch is close to exhaustion; rotate this DEK soon");
        }
    }
    Ok(())
}

/// Guard 5.
pub fn filesystem_durable(sidecar_dir: &Path) -> Result<(), GuardError> {
    sidecar::probe(sidecar_dir).map_err(|e| match e {
        e @ SidecarError::UnsupportedFilesystem { .. } => GuardError::UnsupportedFilesystem(e),
        other => GuardError::Sidecar(other),
    })
}

/// Guard 6: `members` are (name, full node id) of voters and learners.
pub fn members_distinct(members: &[(String, u64)]) -> Result<(), GuardError> {
    let mut seen: BTreeMap<u16, &(String, u64)> = BTreeMap::new();
    for m in members {
        let n16 = node16(m.1);
        match seen.get(&n16) {
            Some(prev) if prev.0 != m.0 => {
                return Err(GuardError::NodeIdCollision { a: prev.0.clone(), b: m.0.clone(), node16: n16 });
            }
            _ => {
                seen.insert(n16, m);
            }
        }
    }
    Ok(())
}

/// Guard 7: for every unretired DEK, this node's registry row (if any) must be its own and not
/// ahead of the local epoch.
pub fn registry_agrees(sc: &Sidecar, registry: &dyn RegistryStore, full_node_id: u64) -> Result<(), GuardError> {
    for (id, k) in sc.keys.iter().filter(|(_, k)| !k.retired) {
        let row = registry
            .get(RowKey { dek_id: *id, node16: node16(full_node_id) })
            .map_err(|e| GuardError::Read { what: "writer registry", reason: e.to_string() })?;
        let Some(row) = row else { continue };
        if row.full_node_id != full_node_id {
            return Err(GuardError::LocalEpochRollback {
                detail: format!(
                    "the registry row for DEK {id} and this node's nonce id belongs to node {:#018x}, not this node ({full_node_id:#018x})",
                    row.full_node_id
                ),
            });
        }
        if k.local_epoch < u32::from(row.last_seen_epoch) {
            return Err(GuardError::LocalEpochRollback {
                detail: format!(
                    "{} DEK {id}: local_epoch {} is below the registry's last_seen {}",
                    k.purpose, k.local_epoch, row.last_seen_epoch
                ),
            });
        }
    }
    Ok(())
}

/// Guard 8: bumps every active DEK's local_epoch and makes it durable before anything seals.
pub fn bump_epochs(sc: &mut Sidecar, sidecar_dir: &Path) -> Result<Vec<(u32, u16)>, GuardError> {
    let bumped =
        sc.bump_active_epochs().map_err(|(dek_id, purpose)| GuardError::LocalEpochExhausted { dek_id, purpose })?;
    if !bumped.is_empty() {
        sc.store(sidecar_dir)?;
    }
    Ok(bumped)
}

/// The epoch fence at restart (spec 03 §3): raises each active DEK's local_epoch above the
/// cluster's `last_seen` for this node, so a data dir restored from an old backup never replays
/// under an epoch the cluster has seen. Guard 8 already bumped past the local registry copy; this
/// covers registrations the local copy has not applied yet. `cluster` holds the highest row per
/// key that the peers reported. Returns the `(DEK, epoch)` pairs it raised; the sidecar is
/// durable before it returns.
pub fn epoch_fence(
    sc: &mut Sidecar,
    sidecar_dir: &Path,
    full_node_id: u64,
    cluster: &BTreeMap<RowKey, crate::registry::Row>,
) -> Result<Vec<(u32, u16)>, GuardError> {
    let mut raised = Vec::new();
    for purpose in Purpose::ALL {
        let id = sc.active.get(purpose);
        if id == 0 {
            continue;
        }
        let Some(row) = cluster.get(&RowKey { dek_id: id, node16: node16(full_node_id) }) else { continue };
        if row.full_node_id != full_node_id {
            return Err(GuardError::LocalEpochRollback {
                detail: format!(
                    "the cluster's registry row for {purpose} DEK {id} and this node's nonce id belongs to \
                     node {:#018x}, not this node ({full_node_id:#018x})",
                    row.full_node_id
                ),
            });
        }
        let Some(k) = sc.keys.get_mut(&id) else { continue };
        if k.local_epoch > u32::from(row.last_seen_epoch) {
            continue;
        }
        let next = u32::from(row.last_seen_epoch) + 1;
        if next >= u32::from(EPOCH_EXHAUSTED) {
            return Err(GuardError::LocalEpochExhausted { dek_id: id, purpose });
        }
        k.local_epoch = next;
        raised.push((id, u16::try_from(next).unwrap_or(EPOCH_EXHAUSTED)));
    }
    if !raised.is_empty() {
        sc.store(sidecar_dir)?;
    }
    Ok(raised)
}

/// Reads committed FSM payloads of the local log (Blank and membership entries are skipped by
/// the implementation).
pub trait LogScanner {
    /// Calls `visit(index, payload)` for each entry with `after < index <= upto`, in order, until
    /// `visit` returns false.
    fn scan(&self, after: u64, upto: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), String>;
}

/// Guard 9: if the log applied past the sidecar, the gap must hold no entry that would have
/// changed the sidecar (opcodes 0x04–0x07), looking through raft envelopes after the cutover. An
/// envelope that does not open with the loaded keys counts as such an entry (it may be the
/// rotation this sidecar missed).
pub fn sidecar_not_behind(
    sc: &Sidecar,
    keys: &Keystore,
    log: &dyn LogScanner,
    applied_index: u64,
) -> Result<(), GuardError> {
    if applied_index <= sc.raft_applied_index {
        return Ok(());
    }
    let cutover = sc.raft_envelope_cutover_index;
    let mut found = None;
    log.scan(sc.raft_applied_index, applied_index, &mut |index, payload| {
        let relevant = if cutover != 0 && index > cutover {
            match envelope::unwrap_raft(keys, payload) {
                Ok((_, inner)) => wire::touches_sidecar(&inner),
                Err(_) => true,
            }
        } else {
            wire::touches_sidecar(payload)
        };
        if relevant {
            found = Some(index);
        }
        !relevant
    })
    .map_err(|reason| GuardError::Read { what: "raft log", reason })?;
    match found {
        Some(entry_index) => {
            Err(GuardError::SidecarBehindRaftLog { sidecar_index: sc.raft_applied_index, entry_index })
        }
        None => Ok(()),
    }
}

/// What the latest local snapshot says (from its v2 header; a v1 header has cutover 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The last log index the snapshot covers.
    pub last_index: u64,
    /// Its raft-envelope cutover index (0 = none).
    pub raft_cutover_index: u64,
}

/// Guard 10: a snapshot that covers the sidecar's cutover must carry the same cutover; one taken
/// before it must carry none; a snapshot with a cutover the sidecar lacks is divergence too.
pub fn snapshot_cutover_agrees(sc: &Sidecar, snapshot: Option<SnapshotInfo>) -> Result<(), GuardError> {
    let Some(s) = snapshot else { return Ok(()) };
    let side = sc.raft_envelope_cutover_index;
    let expected = if side != 0 && side <= s.last_index { side } else { 0 };
    if s.raft_cutover_index != expected {
        return Err(GuardError::EnvelopeCutoverDivergence { snapshot: s.raft_cutover_index, sidecar: side });
    }
    Ok(())
}

/// Everything the startup sequence needs.
pub struct StartupInputs<'a> {
    /// `--encryption-enabled`.
    pub encryption_enabled: bool,
    /// The KEK, if one was configured (and loaded).
    pub kek: Option<Arc<dyn KekProvider>>,
    /// `<data-dir>/encryption`.
    pub sidecar_dir: &'a Path,
    /// This node's full id.
    pub full_node_id: u64,
    /// Voters and learners as (name, full id).
    pub members: &'a [(String, u64)],
    /// The local registry copy.
    pub registry: &'a dyn RegistryStore,
    /// The local log.
    pub log: &'a dyn LogScanner,
    /// The state machine's applied index.
    pub applied_index: u64,
    /// The latest local snapshot.
    pub snapshot: Option<SnapshotInfo>,
    /// Where guard 3 installs the unwrapped DEKs (the keystore the node will run with).
    pub keystore: Arc<Keystore>,
}

/// What a node that passed the guards starts with.
pub struct Started {
    /// The sidecar after the epoch bump (`None` when encryption is off).
    pub sidecar: Option<Sidecar>,
    /// The unwrapped DEKs.
    pub keystore: Arc<Keystore>,
    /// The epochs bumped by guard 8 as (DEK id, new epoch).
    pub bumped: Vec<(u32, u16)>,
}

/// Runs guards 1–10 in order.
pub fn run(inputs: StartupInputs<'_>) -> Result<Started, GuardError> {
    sidecar_needs_flag(inputs.sidecar_dir, inputs.encryption_enabled)?;
    kek_required(inputs.encryption_enabled, inputs.kek.is_some())?;
    let Some(kek) = inputs.kek.as_deref().filter(|_| inputs.encryption_enabled) else {
        members_distinct(inputs.members)?;
        return Ok(Started { sidecar: None, keystore: inputs.keystore, bumped: Vec::new() });
    };
    let mut sc = Sidecar::load(inputs.sidecar_dir)?.unwrap_or_default();
    let keystore = inputs.keystore;
    unwrap_into(&sc, kek, &keystore)?;
    epochs_not_exhausted(&sc)?;
    filesystem_durable(inputs.sidecar_dir)?;
    members_distinct(inputs.members)?;
    registry_agrees(&sc, inputs.registry, inputs.full_node_id)?;
    let bumped = bump_epochs(&mut sc, inputs.sidecar_dir)?;
    sidecar_not_behind(&sc, &keystore, inputs.log, inputs.applied_index)?;
    snapshot_cutover_agrees(&sc, inputs.snapshot)?;
    Ok(Started { sidecar: Some(sc), keystore, bumped })
}
