//! The state machine on `sealkv-store`, and the apply hook: the only place that unwraps Raft
//! payloads.
//!
//! For each committed entry: Blank and Membership entries are openraft's own and never wrapped.
//! A Normal entry's payload is unwrapped iff `index > cutover` (strict: the cutover entry itself
//! is cleartext), then dispatched on its first byte (spec 02 §4): 0x00/0x01 KV command, 0x02 HLC
//! lease, 0x03–0x05 the applier, 0x06/0x07 reserved, 0x08 a command batch evaluated by the
//! node's [`Machine`] (the Redis data model), anything else unknown. Every failure HALTS:
//! the entries before the failing one commit with their applied index, the failing one does not,
//! one `error` line names the index, key id and reason, and openraft stops (the server process
//! watches for that and exits non-zero). A restart replays the same entry. The store seals a
//! batch's values when the batch commits, so a seal that fails there halts at the batch's first
//! entry, with none of the batch applied; so does a halt whose earlier entries cannot be committed
//! again. Either way the applied index stays just below the index the halt names.
//!
//! All writes of one `apply` call go into ONE store batch committed with the last entry's log id
//! (buffered: the next synced log append makes it durable, and a lost batch is re-applied).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use sealkv_crypto::applier::{Applied as Effect, Applier, ClusterState};
use sealkv_crypto::envelope::{self, Sealer};
use sealkv_crypto::{Keystore, NonceFactory, Purpose, wire};
use sealkv_store::{Applied, ApplyBatch, Durability, EncryptionSnapshot, SnapshotHeader, Store, StoreError};

use crate::codec;
use crate::command::{Command, Op};
use crate::machine_frame::{self, OP_MACHINE};
use crate::timing::Timing;
use crate::types::{ApplyResult, Entry, LogId, Member, SnapshotFile, StorageError, StoredMembership, TypeConfig};

/// Why apply stopped: the entry, the key it was about (0 when none) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halt {
    /// The entry that failed (never applied).
    pub index: u64,
    /// The DEK id involved, 0 if none.
    pub key_id: u32,
    /// What went wrong.
    pub reason: String,
}

impl std::fmt::Display for Halt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "apply halted at index {} (key id {}): {}", self.index, self.key_id, self.reason)
    }
}

impl std::error::Error for Halt {}

/// Evaluates command-batch entries (opcode 0x08) at apply time, on every replica alike: the
/// payload carries commands, not writes, so read-modify-write commands (INCR, SET NX, EXEC) see
/// exactly the state their log position implies. The raft crate knows nothing of what the
/// commands mean; the node installs the machine before Raft starts.
pub trait Machine: Send + Sync + 'static {
    /// Applies `body` (the payload after `0x08 ‖ ver ‖ ts`, inflated if it was compressed; see
    /// [`crate::machine_frame`]) into `batch` at commit timestamp
    /// `ts`. Must be deterministic in (`batch` contents, `ts`, `body`). `Ok` carries the output
    /// for the proposer; `Err` halts apply (a malformed body or a store failure — a command's own
    /// refusal, like a type error, is output, not an error).
    fn apply(&self, batch: &mut ApplyBatch<'_>, ts: u64, body: &[u8]) -> Result<Vec<u8>, String>;
}

/// What the state machine shares with the rest of the node (coordinator, admin, startup).
pub struct Shared {
    /// The store.
    pub store: Arc<Store>,
    /// The DEKs (the same keystore the store reads).
    pub keystore: Arc<Keystore>,
    /// The applier (unwired when encryption is off: every encryption entry halts).
    pub applier: Arc<Applier>,
    /// This node's full id.
    pub full_node_id: u64,
    cutover: AtomicU64,
    sealers: Mutex<HashMap<u32, Arc<Sealer>>>,
    raft_sealer: ArcSwapOption<Sealer>,
    halt: Mutex<Option<Halt>>,
    snapshot_dir: PathBuf,
    machine: std::sync::OnceLock<Arc<dyn Machine>>,
    applies: Timing,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("full_node_id", &self.full_node_id).field("cutover", &self.cutover()).finish()
    }
}

fn sm_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(ErrorSubject::StateMachine, ErrorVerb::Write, AnyError::error(e.to_string())).into()
}

fn snap_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(ErrorSubject::Snapshot(None), ErrorVerb::Write, AnyError::error(e.to_string())).into()
}

impl Shared {
    /// Wires the state machine's shared half. Re-arms the sealers the sidecar says are in use.
    pub fn new(
        store: Arc<Store>,
        keystore: Arc<Keystore>,
        applier: Arc<Applier>,
        full_node_id: u64,
        data_dir: &Path,
    ) -> std::io::Result<Arc<Self>> {
        let snapshot_dir = data_dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir)?;
        // Builds and receives interrupted by a crash leave `.tmp` files; none is in use yet.
        for e in std::fs::read_dir(&snapshot_dir)?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                std::fs::remove_file(e.path())?;
            }
        }
        let s = Arc::new(Shared {
            store,
            keystore,
            applier,
            full_node_id,
            cutover: AtomicU64::new(0),
            sealers: Mutex::new(HashMap::new()),
            raft_sealer: ArcSwapOption::empty(),
            halt: Mutex::new(None),
            snapshot_dir,
            machine: std::sync::OnceLock::new(),
            applies: Timing::default(),
        });
        s.rearm();
        Ok(s)
    }

    /// Re-reads the sidecar and points the store's sealer and the raft sealer at the active DEKs.
    fn rearm(&self) {
        let sc = self.applier.sidecar();
        self.cutover.store(sc.raft_envelope_cutover_index, Ordering::Release);
        if let Some(s) = self.sealer_for(sc.active.storage) {
            self.store.set_sealer(Some(s));
        }
        if sc.raft_envelope_cutover_index != 0 {
            self.raft_sealer.store(self.sealer_for(sc.active.raft));
        }
    }

    /// The sealer of DEK `id`, created once per process so its nonce counter is never restarted
    /// under the same `(DEK, node16, local_epoch)`.
    fn sealer_for(&self, id: u32) -> Option<Arc<Sealer>> {
        if id == 0 {
            return None;
        }
        let mut map = self.sealers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&id) {
            return Some(s.clone());
        }
        let dek = self.keystore.get(id)?;
        let epoch = self.applier.sidecar().local_epoch(id);
        let nonces = NonceFactory::new(sealkv_crypto::node16(self.full_node_id), epoch).ok()?;
        let s = Arc::new(Sealer::new(dek, nonces));
        map.insert(id, s.clone());
        Some(s)
    }

    /// Installs the command machine (once, before Raft starts). Without one, a 0x08 entry halts.
    pub fn set_machine(&self, machine: Arc<dyn Machine>) {
        let _ = self.machine.set(machine);
    }

    /// The raft envelope cutover index applied on this node (0 = none).
    pub fn cutover(&self) -> u64 {
        self.cutover.load(Ordering::Acquire)
    }

    /// The sealer proposals are wrapped with, once the cutover has applied here.
    pub fn raft_sealer(&self) -> Option<Arc<Sealer>> {
        self.raft_sealer.load_full()
    }

    /// How long apply calls took: each evaluates a run of committed entries and commits them as
    /// one store batch (halted ones included).
    pub fn apply_timing(&self) -> &Timing {
        &self.applies
    }

    /// Why apply halted, if it did.
    pub fn halted(&self) -> Option<Halt> {
        self.halt.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The snapshot directory.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }
}

/// The state machine.
pub struct StateMachine {
    shared: Arc<Shared>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    last_ts: u64,
    /// Where compressed command batches are inflated, kept from one to the next
    /// (`compress::decompress_into` says why); dropped after a batch grows it past
    /// [`KEEP_FRAME_BUF`].
    frame_buf: Vec<u8>,
}

/// The largest inflate buffer the apply loop keeps between batches: the proposer's usual entry
/// (up to 8 MiB of commands). A rarer, bigger one is freed after use rather than held.
const KEEP_FRAME_BUF: usize = 8 << 20;

/// What the store's opaque applied position holds for us.
type Position = (Option<LogId>, StoredMembership);

fn decode_position(a: &Applied) -> Result<Position, StorageError> {
    codec::decode(&a.log_id).map_err(|s| sm_err(format!("applied position: {}", s.message())))
}

/// The last applied log id and membership recorded in `store` (none for a new store).
pub fn applied_position(store: &Store) -> Result<(Option<LogId>, StoredMembership), StorageError> {
    match store.applied().map_err(sm_err)? {
        Some(a) => decode_position(&a),
        None => Ok((None, StoredMembership::default())),
    }
}

impl StateMachine {
    /// Opens the state machine over the shared half.
    pub fn new(shared: Arc<Shared>) -> Result<Self, StorageError> {
        let (last_applied, membership) = applied_position(&shared.store)?;
        let last_ts = shared.store.max_committed_ts();
        Ok(StateMachine { shared, last_applied, membership, last_ts, frame_buf: Vec::new() })
    }

    /// The shared half.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn halt(&self, index: u64, key_id: u32, reason: impl std::fmt::Display) -> Halt {
        Halt { index, key_id, reason: reason.to_string() }
    }

    /// Applies one command-batch payload (opcode 0x08) into `batch`, inflating it into `buf`.
    fn apply_machine(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        index: u64,
        key_id: u32,
        payload: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<ApplyResult, Halt> {
        let (ts, body) = machine_frame::decode(payload, buf).map_err(|e| self.halt(index, key_id, e))?;
        let Some(machine) = self.shared.machine.get() else {
            return Err(self.halt(index, key_id, "command batch entry but this node has no command machine"));
        };
        let ts = ts.max(self.last_ts.saturating_add(1));
        let out = machine.apply(batch, ts, body).map_err(|e| self.halt(index, key_id, e))?;
        self.last_ts = ts;
        Ok(ApplyResult { ts, out })
    }

    /// Applies one Normal payload into `batch`.
    fn apply_normal(&mut self, batch: &mut ApplyBatch<'_>, index: u64, raw: &[u8]) -> Result<ApplyResult, Halt> {
        let cutover = self.shared.cutover();
        let opened;
        let (payload, key_id) = if cutover != 0 && index > cutover {
            match envelope::unwrap_raft(&self.shared.keystore, raw) {
                Ok((kid, inner)) => {
                    opened = inner;
                    (&opened[..], kid)
                }
                Err(e) => return Err(self.halt(index, e.key_id().unwrap_or(0), format!("raft envelope: {e}"))),
            }
        } else {
            (raw, 0)
        };
        match payload.first().copied() {
            Some(0x00 | 0x01) => {
                let cmd = Command::decode(payload).map_err(|e| self.halt(index, key_id, e))?;
                // Commit timestamps never go backwards, whoever proposed: a deterministic clamp
                // every replica computes the same way (the HLC lease keeps it rarely needed).
                let ts = cmd.ts.max(self.last_ts.saturating_add(1));
                for op in &cmd.ops {
                    let r = match op {
                        Op::Put { key, value, expire_at_ms } => batch.put(key, ts, value, *expire_at_ms),
                        Op::Delete { key } => batch.delete(key, ts),
                    };
                    r.map_err(|e| self.halt(index, key_id, e))?;
                }
                self.last_ts = ts;
                Ok(ApplyResult { ts, out: Vec::new() })
            }
            Some(OP_MACHINE) => {
                let mut buf = std::mem::take(&mut self.frame_buf);
                let res = self.apply_machine(batch, index, key_id, payload, &mut buf);
                if buf.capacity() <= KEEP_FRAME_BUF {
                    self.frame_buf = buf;
                }
                res
            }
            Some(0x02) => {
                let ceiling = wire::decode_hlc_lease(payload).map_err(|e| self.halt(index, key_id, e))?;
                batch.set_hlc_ceiling(ceiling);
                Ok(ApplyResult::default())
            }
            Some(0x03..=0x05) => {
                let effect = self
                    .shared
                    .applier
                    .apply_payload(index, payload, batch)
                    .map_err(|e| self.halt(index, if e.key_id() != 0 { e.key_id() } else { key_id }, e))?;
                self.after_encryption(batch, effect);
                Ok(ApplyResult::default())
            }
            Some(op @ (0x06 | 0x07)) => Err(self.halt(index, key_id, format!("reserved encryption opcode {op:#04x}"))),
            Some(op) => Err(self.halt(index, key_id, format!("unknown payload opcode {op:#04x}"))),
            None => Err(self.halt(index, key_id, "empty payload")),
        }
    }

    /// Acts on what an encryption entry changed, at the same point of the apply stream on every
    /// replica.
    fn after_encryption(&self, batch: &mut ApplyBatch<'_>, effect: Effect) {
        let sh = &self.shared;
        match effect {
            Effect::StorageEnvelopeEnabled { .. } => {
                sh.store.set_sealer(sh.sealer_for(sh.keystore.active_id(Purpose::Storage)));
                batch.enable_storage_envelope();
            }
            Effect::Rotated { purpose: Purpose::Storage, dek_id, .. } => {
                sh.store.set_sealer(sh.sealer_for(dek_id));
            }
            Effect::Rotated { purpose: Purpose::Raft, dek_id, .. } => {
                if sh.cutover() != 0 {
                    sh.raft_sealer.store(sh.sealer_for(dek_id));
                }
            }
            Effect::RaftEnvelopeEnabled { cutover_index } => {
                sh.raft_sealer.store(sh.sealer_for(sh.keystore.active_id(Purpose::Raft)));
                sh.cutover.store(cutover_index, Ordering::Release);
            }
            Effect::Retired { dek_id } => {
                sh.sealers.lock().unwrap_or_else(|p| p.into_inner()).remove(&dek_id);
            }
            Effect::Registered(_) | Effect::Bootstrapped { .. } | Effect::Rewrapped { .. } => {}
        }
    }

    fn position(&self) -> Result<Vec<u8>, StorageError> {
        codec::encode(&(self.last_applied, &self.membership)).map_err(|s| sm_err(s.message()))
    }

    /// Applies `entries` into one batch; on a halt returns the halt and how many entries before
    /// it succeeded (their writes are in the batch, the failing one's are not yet known to be
    /// absent, so the caller rebuilds).
    fn apply_into(&mut self, batch: &mut ApplyBatch<'_>, entries: &[Entry]) -> Result<Vec<ApplyResult>, (usize, Halt)> {
        let mut out = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            match &e.payload {
                EntryPayload::Blank => out.push(ApplyResult::default()),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m.clone());
                    out.push(ApplyResult::default());
                }
                EntryPayload::Normal(p) => match self.apply_normal(batch, e.log_id.index, &p.0) {
                    Ok(r) => out.push(r),
                    Err(h) => return Err((i, h)),
                },
            }
            self.last_applied = Some(e.log_id);
        }
        Ok(out)
    }

    /// Applies `entries` as one store batch; on a halt, commits the entries before the failing
    /// one and records why (see the module docs).
    fn apply_all(&mut self, entries: Vec<Entry>) -> Result<Vec<ApplyResult>, StorageError> {
        sealkv_crypto::failpoint::hit("raft.apply.before_batch");
        let start = (self.last_applied, self.membership.clone(), self.last_ts);
        let shared = self.shared.clone();
        let mut batch = shared.store.batch();
        let (mut good, mut halt) = match self.apply_into(&mut batch, &entries) {
            Ok(out) => match self.commit(batch)? {
                None => return Ok(out),
                // The store seals a batch's values when it commits, so a seal that fails there
                // belongs to the batch as a whole: none of it is applied, and it halts at the
                // batch's first entry.
                Some(e) => {
                    let first = entries.first().map_or(0, |e| e.log_id.index);
                    let key_id = shared.keystore.active_id(Purpose::Storage);
                    (0, self.halt(first, key_id, format!("committing the batch: {e}")))
                }
            },
            Err((good, halt)) => {
                // The failing entry may have left partial writes in the batch: drop it and
                // re-apply the entries before it (deterministic, and encryption entries replay
                // idempotently), then commit those with their applied index.
                drop(batch);
                (good, halt)
            }
        };
        (self.last_applied, self.membership, self.last_ts) = start.clone();
        let prefix = entries.get(..good).unwrap_or_default();
        if !prefix.is_empty() {
            let mut redo = shared.store.batch();
            let redone = match self.apply_into(&mut redo, prefix) {
                Err((_, again)) => {
                    tracing::error!(index = again.index, "re-applying the entries before a halt failed");
                    false
                }
                Ok(_) => match self.commit(redo)? {
                    None => true,
                    Some(e) => {
                        tracing::error!(error = %e, "committing the entries before a halt failed");
                        false
                    }
                },
            };
            if !redone {
                // Nothing of the batch is applied, so the halt is at its first entry: the applied
                // index stays just below the index the halt names.
                (self.last_applied, self.membership, self.last_ts) = start;
                good = 0;
                halt.index = entries.first().map_or(halt.index, |e| e.log_id.index);
            }
        }
        tracing::error!(index = halt.index, key_id = halt.key_id, reason = %halt.reason, "apply halted");
        *shared.halt.lock().unwrap_or_else(|p| p.into_inner()) = Some(halt.clone());
        let failed = entries.get(good).map(|e| e.log_id).unwrap_or_default();
        Err(StorageIOError::apply(failed, AnyError::new(&halt)).into())
    }

    /// Commits `batch` at the last applied position. `Ok(Some(e))`: sealing its values failed, so
    /// nothing was written and the caller halts (an apply failure, not the store's I/O); `Err`:
    /// the store could not write.
    fn commit(&self, batch: ApplyBatch<'_>) -> Result<Option<StoreError>, StorageError> {
        let Some(last) = self.last_applied else { return Ok(None) };
        let applied = Applied { index: last.index, log_id: self.position()? };
        match batch.commit(&applied, Durability::Buffered) {
            Ok(()) => Ok(None),
            Err(e @ (StoreError::Seal(_) | StoreError::NoSealingKey)) => Ok(Some(e)),
            Err(e) => Err(sm_err(e)),
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let out = self.apply_all(entries.into_iter().collect());
        self.shared.applies.observe(started);
        out
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let path = self.shared.snapshot_dir.join(format!("recv-{}.tmp", unique()));
        std::fs::File::create(&path).map_err(snap_err)?;
        Ok(Box::new(SnapshotFile { path }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let shared = self.shared.clone();
        let path = snapshot.path.clone();
        let last_index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        tokio::task::spawn_blocking(move || install(&shared, &path, last_index)).await.map_err(snap_err)??;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.last_ts = self.shared.store.max_committed_ts();
        save_current(&self.shared.snapshot_dir, meta, &snapshot.path)?;
        tracing::info!(last_index, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        current(&self.shared.snapshot_dir)
    }
}

fn install(shared: &Shared, path: &Path, last_index: u64) -> Result<(), StorageError> {
    let store = &shared.store;
    store.wipe().map_err(snap_err)?;
    let file = std::fs::File::open(path).map_err(snap_err)?;
    // The snapshot's key state goes into the sidecar and keystore before the install counts: a
    // crash in between leaves a store that is wiped at the next open (and fetched again), never
    // sealed values whose DEKs this node does not have. Reading the registry here sees the
    // snapshot's rows, so DEKs new to this node get epochs above the cluster's record.
    store
        .install_snapshot_with(file, |header| {
            let Some(enc) = &header.encryption else { return Ok(()) };
            let state = ClusterState::decode(&enc.state).map_err(|e| e.to_string())?;
            let view = store.batch();
            shared
                .applier
                .install_cluster_state(&state, last_index, &view, shared.full_node_id)
                .map_err(|e| e.to_string())
        })
        .map_err(snap_err)?;
    shared.rearm();
    Ok(())
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{nanos:x}")
}

const CURRENT: &str = "current.meta";

/// Makes `data` the current snapshot with `meta`: the data file is renamed next to the pointer,
/// then the pointer file is replaced atomically, then older data files are removed. `.tmp` files
/// are left alone here: a snapshot may be building or arriving concurrently in one of them
/// (stale ones from a crash are removed when the node starts, see [`Shared::new`]).
fn save_current(dir: &Path, meta: &SnapshotMeta<u64, Member>, data: &Path) -> Result<(), StorageError> {
    let name = format!("snap-{}.data", meta.snapshot_id);
    let target = dir.join(&name);
    if data != target {
        std::fs::rename(data, &target).map_err(snap_err)?;
    }
    let pointer = codec::encode(&(meta, &name)).map_err(|s| snap_err(s.message()))?;
    let tmp = dir.join("current.meta.tmp");
    std::fs::write(&tmp, pointer).map_err(snap_err)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(snap_err)?;
    std::fs::rename(&tmp, dir.join(CURRENT)).map_err(snap_err)?;
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(snap_err)?;
    for e in std::fs::read_dir(dir).map_err(snap_err)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n != name && n.starts_with("snap-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// The current snapshot of a node, if it has one.
pub fn current(dir: &Path) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
    let bytes = match std::fs::read(dir.join(CURRENT)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(snap_err(e)),
    };
    let (meta, name): (SnapshotMeta<u64, Member>, String) = codec::decode(&bytes).map_err(|s| snap_err(s.message()))?;
    if name.contains('/') {
        return Err(snap_err("snapshot pointer names a path"));
    }
    Ok(Some(Snapshot { meta, snapshot: Box::new(SnapshotFile { path: dir.join(name) }) }))
}

/// Builds snapshots from a consistent view of the store.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let shared = self.shared.clone();
        let id = unique();
        let path = shared.snapshot_dir.join(format!("build-{id}.tmp"));
        let p = path.clone();
        let stats = tokio::task::spawn_blocking(move || -> Result<_, StorageError> {
            let f = std::fs::File::create(&p).map_err(snap_err)?;
            let stats = shared
                .store
                .write_snapshot_with(&f, |applied| {
                    // Read after the store's consistent view: the applier writes the sidecar before
                    // the apply batch commits, so this state holds every DEK a value in the view
                    // was sealed under (a superset is harmless). A cutover the view has not
                    // reached yet is left out of the header; the follower applies that entry.
                    let sc = shared.applier.sidecar();
                    let upto = applied.map_or(0, |a| a.index);
                    let cut = sc.raft_envelope_cutover_index;
                    let encryption = (sc.bootstrapped() || sc.raft_applied_index != 0).then(|| EncryptionSnapshot {
                        raft_cutover_index: if cut <= upto { cut } else { 0 },
                        state: shared.applier.cluster_state().encode(),
                    });
                    Ok(SnapshotHeader { hlc_ceiling_ms: shared.store.hlc_ceiling()?.unwrap_or(0), encryption })
                })
                .map_err(snap_err)?;
            f.sync_all().map_err(snap_err)?;
            Ok(stats)
        })
        .await
        .map_err(snap_err)??;
        let (last_log_id, last_membership) = match &stats.applied {
            Some(a) => decode_position(a)?,
            None => (None, StoredMembership::default()),
        };
        let snapshot_id = format!("{}-{id}", last_log_id.map(|l| l.index).unwrap_or(0));
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        save_current(&self.shared.snapshot_dir, &meta, &path)?;
        tracing::info!(index = last_log_id.map(|l| l.index).unwrap_or(0), bytes = stats.bytes, "built snapshot");
        current(&self.shared.snapshot_dir)?.ok_or_else(|| snap_err("snapshot vanished after it was saved"))
    }
}
