//! The node's side of the encryption lifecycle that needs a running cluster: encryption from
//! birth, writer registration (spec 03 §3 paths b, c, d), the restart epoch fence, DEK rotation
//! and status. Every change to key state is a Raft entry; this module only builds and proposes
//! them. The applier (sealkv-crypto) and the apply hook (sealkv-raft) carry them out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sealkv_crypto::kek::{DekIdentity, KekProvider};
use sealkv_crypto::registry::{RegistryStore, Row, RowKey};
use sealkv_crypto::sidecar::Sidecar;
use sealkv_crypto::wire::{Bootstrap, EncryptionEntry, Registration, WrappedDek};
use sealkv_crypto::{Purpose, cipher, node16};

use crate::api::{self, ApiError, Capability, DekStatus, NodeEncryption, RegistryRow, Request, Response};
use crate::coordinator::Hold;
use crate::node::{App, internal};

/// The whole applied registry, as this node sees it.
pub fn all_rows(app: &App) -> Result<Vec<RegistryRow>, ApiError> {
    let rows = app.shared.store.batch().rows().map_err(internal)?;
    Ok(rows
        .into_iter()
        .map(|(k, r)| RegistryRow {
            dek_id: k.dek_id,
            node16: k.node16,
            full_node_id: r.full_node_id,
            first_seen_epoch: r.first_seen_epoch,
            last_seen_epoch: r.last_seen_epoch,
        })
        .collect())
}

/// This node's applied registry rows for the nonce id of `full_node_id` (answers a restarting
/// peer's epoch fence).
pub fn rows_for(app: &App, full_node_id: u64) -> Result<Vec<RegistryRow>, ApiError> {
    let n16 = node16(full_node_id);
    Ok(all_rows(app)?.into_iter().filter(|r| r.node16 == n16).collect())
}

/// This node's encryption state (ids and epochs only; no key material, not even wrapped).
pub fn local_state(app: &App) -> NodeEncryption {
    let sc = app.shared.applier.sidecar();
    NodeEncryption {
        id: app.name.clone(),
        enabled: app.kek.is_some(),
        active_storage: sc.active.storage,
        active_raft: sc.active.raft,
        storage_envelope: sc.storage_envelope_active,
        raft_cutover_index: sc.raft_envelope_cutover_index,
        sidecar_applied_index: sc.raft_applied_index,
        keys: sc
            .keys
            .iter()
            .map(|(id, k)| DekStatus {
                id: *id,
                purpose: k.purpose.to_string(),
                active: sc.active.get(k.purpose) == *id,
                retired: k.retired,
                local_epoch: k.local_epoch,
            })
            .collect(),
    }
}

/// What this node tells a leader that is about to add it.
pub fn capability(app: &App) -> Capability {
    let sc = app.shared.applier.sidecar();
    Capability {
        full_node_id: app.me,
        encryption_capable: app.kek.is_some(),
        epochs: sc.keys.iter().map(|(id, k)| (*id, k.local_epoch)).collect(),
    }
}

fn purpose_arg(s: &str) -> Result<Purpose, ApiError> {
    Purpose::from_name(s)
        .ok_or_else(|| ApiError::new("InvalidArgument", format!("--purpose {s:?}: expected storage or raft")))
}

/// A fresh DEK from the CSPRNG under an id none of `taken` uses, wrapped under the KEK bound to
/// its purpose and id. The cleartext key is zeroized when this returns; only the wrap leaves.
fn new_wrapped_dek(kek: &dyn KekProvider, purpose: Purpose, taken: &[u32]) -> Result<WrappedDek, ApiError> {
    let dek_id = cipher::random_key_id(taken).map_err(internal)?;
    let bytes = cipher::generate_dek_bytes().map_err(internal)?;
    let wrapped = kek.wrap(DekIdentity { purpose, dek_id }, &bytes).map_err(internal)?;
    Ok(WrappedDek { dek_id, purpose, wrapped })
}

fn kek_of(app: &App) -> Result<&Arc<dyn KekProvider>, ApiError> {
    app.kek.as_ref().ok_or_else(|| {
        ApiError::new(
            "KekNotConfigured",
            "the leader runs without --encryption-enabled and a KEK, so it cannot create or wrap DEKs; \
             restart it with --encryption-enabled --kek-file PATH",
        )
    })
}

/// rotate-dek (leader): a fresh DEK from the CSPRNG, wrapped under the KEK with its identity,
/// proposed with the leader's registration for it. Returns once the entry applied here; every
/// replica seals (storage) or wraps (raft) under the new DEK from that entry on, and each
/// follower registers itself for it through [`registrar`].
pub async fn rotate(app: &App, purpose: &str) -> Result<Response, ApiError> {
    let p = purpose_arg(purpose)?;
    let kek = kek_of(app)?;
    let sc = app.shared.applier.sidecar();
    let old = sc.active.get(p);
    if old == 0 {
        return Err(ApiError::new(
            "NotBootstrapped",
            "encryption is not bootstrapped on this cluster, so there is no DEK to rotate; start it with \
             --encryption-enabled --encrypt-from-birth (see docs/runbook.md)",
        ));
    }
    let taken: Vec<u32> = sc.keys.keys().copied().collect();
    let dek = new_wrapped_dek(kek.as_ref(), p, &taken)?;
    let dek_id = dek.dek_id;
    let proposer = Registration { dek_id, full_node_id: app.me, local_epoch: sc.local_epoch(old) };
    let entry = EncryptionEntry::RotateDek { dek, proposer };
    app.coordinator.propose_internal(entry.encode().map_err(internal)?).await?;
    tracing::info!(purpose = %p, dek_id, previous = old, "rotated DEK");
    Ok(Response::Rotated { purpose: p.to_string(), dek_id })
}

/// Membership path (d): before a candidate joins (or is promoted), check that it can follow an
/// encrypted cluster and register it for every unretired DEK, so its nonce id is claimed before
/// it ever seals. A cluster that never bootstrapped encryption admits anyone.
pub async fn admit(app: &App, candidate: u64, addr: &str) -> Result<(), ApiError> {
    let sc = app.shared.applier.sidecar();
    if !sc.bootstrapped() {
        return Ok(());
    }
    let cap = match tokio::time::timeout(Duration::from_secs(5), api::call(addr, Request::Capability, true)).await {
        Ok(Ok(Response::Capability(c))) => c,
        Ok(Ok(Response::Error(e)) | Err(e)) => {
            return Err(ApiError::new(
                "PeerNotEncryptionCapable",
                format!("cannot get the capability report of the node at {addr} ({e}); start it first"),
            ));
        }
        Ok(Ok(other)) => return Err(internal(format!("unexpected capability answer {other:?}"))),
        Err(_) => {
            return Err(ApiError::new(
                "PeerNotEncryptionCapable",
                format!("the node at {addr} did not answer its capability report within 5 s; start it first"),
            ));
        }
    };
    if cap.full_node_id != candidate {
        return Err(ApiError::new(
            "InvalidArgument",
            format!(
                "the node at {addr} runs with another --node-id than the one given (full id {:#018x})",
                cap.full_node_id
            ),
        ));
    }
    if !cap.encryption_capable {
        return Err(ApiError::new(
            "PeerNotEncryptionCapable",
            format!(
                "the node at {addr} runs without --encryption-enabled and a KEK; this cluster is encrypted, so \
                 restart it with --encryption-enabled --kek-file PATH (the cluster's KEK) and retry"
            ),
        ));
    }
    let registry = app.shared.store.batch();
    let member = app.raft.metrics().borrow().membership_config.membership().get_node(&candidate).is_some();
    for (dek_id, _) in sc.keys.iter().filter(|(_, k)| !k.retired) {
        let key = RowKey { dek_id: *dek_id, node16: node16(candidate) };
        match registry.get(key).map_err(internal)? {
            // The node id was a member before and sealed under this DEK up to `last_seen`. A
            // fresh data dir under the same id would start again at epoch 0 (it gets the DEK by
            // replaying the bootstrap or rotation entry) and reuse those nonces; only the old
            // data dir, whose sidecar is at or past that epoch (its guards and epoch fence keep
            // it there), may come back under this id.
            Some(row)
                if row.full_node_id == candidate
                    && !member
                    && !cap.epochs.iter().any(|(id, e)| id == dek_id && *e >= u32::from(row.last_seen_epoch)) =>
            {
                return Err(ApiError::new(
                    "PeerNotEncryptionRegistered",
                    format!(
                        "this --node-id was a member before and its nonce slots under DEK {dek_id} are used up to \
                         epoch {}, but the node at {addr} does not hold that epoch (a fresh data dir would \
                         reuse them); start the new node with another --node-id",
                        row.last_seen_epoch
                    ),
                ));
            }
            Some(row) if row.full_node_id != candidate => {
                return Err(ApiError::new(
                    "PeerNotEncryptionRegistered",
                    format!(
                        "the candidate's nonce node id {:#06x} is already registered to node {:#018x} for DEK \
                         {dek_id}; give the new node another --node-id",
                        key.node16, row.full_node_id
                    ),
                ));
            }
            Some(_) => {}
            None => {
                let r = Registration { dek_id: *dek_id, full_node_id: candidate, local_epoch: 0 };
                let payload = EncryptionEntry::Register(r).encode().map_err(internal)?;
                app.coordinator.propose_internal(payload).await?;
            }
        }
    }
    Ok(())
}

/// Registrations this node still owes: every active DEK whose registry row for this node is
/// missing or below the epoch the node seals with. A row owned by another node, or one above
/// the local epoch, is never proposed over (applying it would halt every replica); the first is
/// logged, the second cannot happen after the guards and the fence.
fn owed(app: &App, sc: &Sidecar) -> Result<Vec<Registration>, String> {
    let registry = app.shared.store.batch();
    let mut out = Vec::new();
    for p in Purpose::ALL {
        let dek_id = sc.active.get(p);
        if dek_id == 0 {
            continue;
        }
        let epoch = sc.local_epoch(dek_id);
        let key = RowKey { dek_id, node16: node16(app.me) };
        match registry.get(key).map_err(|e| e.to_string())? {
            Some(Row { full_node_id, .. }) if full_node_id != app.me => {
                return Err(format!(
                    "the registry row for {p} DEK {dek_id} and this node's nonce id belongs to node {full_node_id:#018x}"
                ));
            }
            Some(row) if row.last_seen_epoch >= epoch => {}
            _ => out.push(Registration { dek_id, full_node_id: app.me, local_epoch: epoch }),
        }
    }
    Ok(out)
}

async fn propose_via_leader(app: &App, payload: Vec<u8>) -> Result<(), ApiError> {
    match app.coordinator.leader_elsewhere()? {
        None => app.coordinator.propose_internal(payload).await.map(|_| ()),
        Some(leader) => match api::call(&leader, Request::Register { payload }, true).await? {
            Response::Ok => Ok(()),
            Response::Error(e) => Err(e),
            other => Err(internal(format!("unexpected answer {other:?}"))),
        },
    }
}

/// Keeps this node's writer registrations current for as long as it runs: after a restart
/// (guard 8 and the fence moved its epochs; path b), after a rotation or a snapshot brought new
/// DEKs (path c). While `Hold::Registration` is set, client intake waits for the first complete
/// pass, so a restarted node accepts no write before its new epochs are registered.
pub async fn registrar(app: Arc<App>) {
    let mut warned = false;
    loop {
        let sc = app.shared.applier.sidecar();
        let pending = if sc.bootstrapped() { owed(&app, &sc) } else { Ok(Vec::new()) };
        let mut done = true;
        match pending {
            Ok(list) => {
                for r in list {
                    let Ok(payload) = EncryptionEntry::Register(r).encode() else { continue };
                    match propose_via_leader(&app, payload).await {
                        Ok(()) => tracing::info!(dek_id = r.dek_id, epoch = r.local_epoch, "registered writer epoch"),
                        Err(e) => {
                            tracing::debug!(error = %e, dek_id = r.dek_id, "writer registration not committed yet; retrying");
                            done = false;
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                done = false;
                if !warned {
                    tracing::error!(error = %e, "cannot register this node's writer epochs; give it another --node-id");
                    warned = true;
                }
            }
        }
        if done {
            app.coordinator.release(Hold::Registration);
        }
        tokio::time::sleep(Duration::from_millis(if done { 500 } else { 300 })).await;
    }
}

/// The epoch fence at restart (spec 03 §3): ask every reachable peer for its applied registry
/// rows for this node, keep the highest `last_seen` per DEK, and lift local epochs above it
/// before the Raft node starts applying. With no peer answering (whole-cluster cold start) the
/// local copy, already checked by guard 7, stands; that is logged.
pub async fn fence(
    sc: &mut Sidecar,
    sidecar_dir: &std::path::Path,
    me: u64,
    peers: &[String],
) -> anyhow::Result<Vec<(u32, u16)>> {
    if !sc.bootstrapped() || peers.is_empty() {
        return Ok(Vec::new());
    }
    let asks = peers.iter().map(|addr| async move {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            api::call(addr, Request::RegistryRows { full_node_id: me }, true),
        )
        .await;
        match r {
            Ok(Ok(Response::Rows(rows))) => Some(rows),
            _ => None,
        }
    });
    let answers: Vec<Vec<RegistryRow>> = futures::future::join_all(asks).await.into_iter().flatten().collect();
    if answers.is_empty() {
        tracing::warn!(
            "epoch fence: no peer answered; relying on this node's own registry copy (expected only when the \
             whole cluster starts at once)"
        );
        return Ok(Vec::new());
    }
    let mut cluster: BTreeMap<RowKey, Row> = BTreeMap::new();
    for r in answers.into_iter().flatten() {
        let key = RowKey { dek_id: r.dek_id, node16: r.node16 };
        let row = Row {
            full_node_id: r.full_node_id,
            first_seen_epoch: r.first_seen_epoch,
            last_seen_epoch: r.last_seen_epoch,
        };
        let e = cluster.entry(key).or_insert(row);
        // A foreign owner wins (the fence refuses on it); otherwise the highest epoch does.
        let foreign = row.full_node_id != me;
        if foreign || (e.full_node_id == me && row.last_seen_epoch > e.last_seen_epoch) {
            *e = row;
        }
    }
    let raised = sealkv_crypto::guards::epoch_fence(sc, sidecar_dir, me, &cluster)?;
    if !raised.is_empty() {
        tracing::warn!(?raised, "epoch fence: the cluster had seen this node's epochs; raised them above it");
    }
    Ok(raised)
}

/// The first leader of a cluster born encrypted proposes bootstrap (registering every member),
/// enable-storage-envelope and enable-raft-envelope, then opens client intake. Followers just
/// wait for the cutover to apply locally.
pub async fn encrypt_from_birth(app: Arc<App>) {
    loop {
        if app.shared.cutover() != 0 {
            app.coordinator.release(Hold::Birth);
            tracing::info!("encrypted from birth: storage and raft envelopes are on");
            return;
        }
        if app.raft.metrics().borrow().current_leader == Some(app.me)
            && let Some(kek) = &app.kek
            && let Err(e) = birth_steps(&app, kek.as_ref()).await
        {
            tracing::warn!(error = %e, "encrypt-from-birth step failed; retrying");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn birth_steps(app: &App, kek: &dyn KekProvider) -> Result<(), ApiError> {
    let co = &app.coordinator;
    let sc = app.shared.applier.sidecar();
    if !sc.bootstrapped() {
        let storage = new_wrapped_dek(kek, Purpose::Storage, &[])?;
        let raft = new_wrapped_dek(kek, Purpose::Raft, &[storage.dek_id])?;
        let (storage_id, raft_id) = (storage.dek_id, raft.dek_id);
        let members: Vec<u64> =
            app.raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
        let mut registrations = Vec::new();
        for id in members {
            for dek_id in [storage_id, raft_id] {
                registrations.push(Registration { dek_id, full_node_id: id, local_epoch: 0 });
            }
        }
        let entry = EncryptionEntry::Bootstrap(Bootstrap {
            storage_dek_id: storage_id,
            wrapped_storage: storage.wrapped,
            raft_dek_id: raft_id,
            wrapped_raft: raft.wrapped,
            registrations,
        });
        co.propose_internal(entry.encode().map_err(internal)?).await?;
    }
    let sc = app.shared.applier.sidecar();
    if !sc.storage_envelope_active {
        let dek_id = sc.active.storage;
        let proposer = Registration { dek_id, full_node_id: app.me, local_epoch: sc.local_epoch(dek_id) };
        let entry = EncryptionEntry::EnableStorageEnvelope { dek_id, proposer };
        co.propose_internal(entry.encode().map_err(internal)?).await?;
    }
    let sc = app.shared.applier.sidecar();
    if sc.raft_envelope_cutover_index == 0 {
        let dek_id = sc.active.raft;
        let proposer = Registration { dek_id, full_node_id: app.me, local_epoch: sc.local_epoch(dek_id) };
        let entry = EncryptionEntry::EnableRaftEnvelope { dek_id, proposer };
        co.propose_cutover(entry.encode().map_err(internal)?).await?;
    }
    Ok(())
}
