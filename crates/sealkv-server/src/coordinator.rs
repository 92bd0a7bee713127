//! The leader side of writes and reads: HLC timestamps with lease entries, encoding commands,
//! wrapping proposals in the raft envelope after the cutover, the quiescence barrier around the
//! cutover, and coalesced linearizable reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use sealkv_raft::command::{Command, Op};
use sealkv_raft::{ApplyResult, Payload, Raft, Shared, machine_payload};
use tokio::sync::{Mutex, RwLock};

use crate::api::ApiError;

/// How far ahead of the wall clock a lease lets timestamps run.
const LEASE_MS: i64 = 10_000;
/// Renew the lease when fewer than this many ms remain.
const RENEW_MS: i64 = 4_000;

/// Wall clock in ms.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

struct Hlc {
    /// Term this clock was fenced for; a new term re-fences.
    term: u64,
    last: u64,
    ceiling_ms: i64,
}

/// Coordinates proposals and reads on this node.
pub struct Coordinator {
    raft: Raft,
    shared: Arc<Shared>,
    me: u64,
    hlc: Mutex<Hlc>,
    /// Proposals hold it shared until applied; the raft cutover holds it exclusively from its
    /// proposal until it is applied here, so no entry above the cutover is ever proposed
    /// cleartext (spec 03 §1 quiescence barrier).
    intake: RwLock<()>,
    /// Client requests are served only while no hold is set (encrypted from birth: until both
    /// envelopes are on; restart: until this node's writer registrations committed). Each
    /// reason holds and releases independently.
    open: AtomicBool,
    holds: std::sync::Mutex<std::collections::BTreeMap<Hold, String>>,
    reads_started: AtomicU64,
    reads_done: AtomicU64,
    read_gate: Mutex<()>,
}

/// Why client intake is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hold {
    /// Encrypted from birth: bootstrap and both envelopes are not applied yet.
    Birth,
    /// This node's writer registrations (spec 03 §3 paths b and c) have not committed yet.
    Registration,
}

impl Coordinator {
    /// A coordinator for this node.
    pub fn new(raft: Raft, shared: Arc<Shared>, me: u64) -> Self {
        Coordinator {
            raft,
            shared,
            me,
            hlc: Mutex::new(Hlc { term: 0, last: 0, ceiling_ms: 0 }),
            intake: RwLock::new(()),
            open: AtomicBool::new(true),
            holds: std::sync::Mutex::new(Default::default()),
            reads_started: AtomicU64::new(0),
            reads_done: AtomicU64::new(0),
            read_gate: Mutex::new(()),
        }
    }

    /// Stops client intake for `hold` (clients get `Unavailable` with `reason`).
    pub fn hold(&self, hold: Hold, reason: &str) {
        let mut h = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        h.insert(hold, reason.to_owned());
        self.open.store(false, Ordering::Release);
    }

    /// Lifts one hold; intake reopens when none is left.
    pub fn release(&self, hold: Hold) {
        let mut h = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        h.remove(&hold);
        self.open.store(h.is_empty(), Ordering::Release);
    }

    /// Whether client requests are served.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let h = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        let why = h.values().next().cloned().unwrap_or_else(|| "intake is reopening; retry".into());
        Err(ApiError::new("Unavailable", why))
    }

    /// The leader's gRPC address when it is another node; `None` when this node leads.
    pub fn leader_elsewhere(&self) -> Result<Option<String>, ApiError> {
        // Borrow, not clone: this runs on every client request.
        let rx = self.raft.metrics();
        let m = rx.borrow();
        match m.current_leader {
            Some(l) if l == self.me => Ok(None),
            Some(l) => match m.membership_config.membership().get_node(&l) {
                Some(n) => Ok(Some(n.addr.clone())),
                None => Err(ApiError::new("Unavailable", "the leader is not in this node's membership yet; retry")),
            },
            None => Err(ApiError::new("Unavailable", "no leader yet (election in progress); retry in a second")),
        }
    }

    /// Waits until this leader has applied an entry of its own term, so every entry committed
    /// before it (a cutover among them) has applied here before it proposes anything.
    async fn leader_ready(&self) -> Result<u64, ApiError> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            {
                let m = rx.borrow_and_update();
                if m.current_leader != Some(self.me) {
                    return Err(ApiError::new("NotLeader", "leadership moved; retry"));
                }
                if let Err(e) = &m.running_state {
                    return Err(ApiError::new("Halted", e.to_string()));
                }
                if m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term) {
                    return Ok(m.current_term);
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(ApiError::new("Unavailable", "new leader is still applying its log; retry"));
            }
        }
    }

    /// Proposes `payload` as it is (wrapped once the cutover applied here) and waits until it
    /// is applied on this node. Returns the commit timestamp.
    pub async fn propose(&self, payload: Vec<u8>) -> Result<u64, ApiError> {
        self.propose_for_result(payload).await.map(|r| r.ts)
    }

    /// Like [`Coordinator::propose`], returning everything the apply produced.
    async fn propose_for_result(&self, payload: Vec<u8>) -> Result<ApplyResult, ApiError> {
        let data = if self.shared.cutover() != 0 {
            let Some(sealer) = self.shared.raft_sealer() else {
                return Err(ApiError::new(
                    "Internal",
                    "the raft envelope is on but no raft DEK is loaded here; nothing is proposed cleartext",
                ));
            };
            sealer.wrap_raft(&payload).map_err(|e| ApiError::new("Internal", format!("wrap failed: {e}")))?
        } else {
            payload
        };
        match self.raft.client_write(Payload(data)).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(ApiError::new("NotLeader", "leadership moved; retry"))
            }
            Err(e) => Err(ApiError::new("Unavailable", e.to_string())),
        }
    }

    /// An internal proposal (encryption entries, leases): not gated by client intake.
    pub async fn propose_internal(&self, payload: Vec<u8>) -> Result<u64, ApiError> {
        self.leader_ready().await?;
        let _g = self.intake.read().await;
        self.propose(payload).await
    }

    /// Proposes the raft-envelope cutover under the quiescence barrier: waits for in-flight
    /// proposals to apply, proposes `payload` cleartext, and waits until it applied here (the
    /// state machine then arms wrapping) before any other proposal goes out.
    pub async fn propose_cutover(&self, payload: Vec<u8>) -> Result<u64, ApiError> {
        self.leader_ready().await?;
        let _g = self.intake.write().await;
        self.propose(payload).await
    }

    /// Client writes, atomically in one entry.
    pub async fn write(&self, ops: Vec<Op>) -> Result<u64, ApiError> {
        self.check_open()?;
        let term = self.leader_ready().await?;
        let _g = self.intake.read().await;
        let ts = self.next_ts(term).await?;
        let payload = Command { ts, ops }.encode().map_err(|e| ApiError::new("InvalidArgument", e.to_string()))?;
        self.propose(payload).await
    }

    /// Client commands (Redis), evaluated at apply: proposes a 0x08 command-batch entry with
    /// `body` and returns what applying it produced (the encoded replies).
    pub async fn write_commands(&self, body: &[u8]) -> Result<ApplyResult, ApiError> {
        self.check_open()?;
        let term = self.leader_ready().await?;
        let _g = self.intake.read().await;
        let ts = self.next_ts(term).await?;
        self.propose_for_result(machine_payload(ts, body)).await
    }

    /// The next HLC timestamp (48-bit ms ‖ 16-bit logical). A new term first fences the clock
    /// above everything the previous leader could have issued (the applied lease ceiling and the
    /// highest applied timestamp), and every timestamp stays below a lease committed through
    /// Raft, so a later leader never goes backwards.
    async fn next_ts(&self, term: u64) -> Result<u64, ApiError> {
        let mut h = self.hlc.lock().await;
        if h.term != term {
            let ceiling = self.shared.store.hlc_ceiling().map_err(|e| ApiError::new("Internal", e.to_string()))?;
            let floor_ms = ceiling.unwrap_or(0).max(0) as u64;
            h.last = h.last.max(self.shared.store.max_committed_ts()).max(floor_ms << 16);
            h.ceiling_ms = 0;
            h.term = term;
        }
        let now = now_ms() as i64;
        let issued_ms = (h.last >> 16) as i64;
        if h.ceiling_ms - now.max(issued_ms) < RENEW_MS {
            let ceiling = now.max(issued_ms) + LEASE_MS;
            self.propose(sealkv_crypto::wire::encode_hlc_lease(ceiling).to_vec()).await?;
            h.ceiling_ms = ceiling;
        }
        let ts = ((now.max(0) as u64) << 16).max(h.last + 1);
        h.last = ts;
        Ok(ts)
    }

    /// A linearizable read barrier (ReadIndex). Concurrent readers share one quorum round: a
    /// barrier that started after a reader arrived serves it.
    pub async fn read_barrier(&self) -> Result<(), ApiError> {
        self.check_open()?;
        let arrived = self.reads_started.load(Ordering::Acquire);
        let _g = self.read_gate.lock().await;
        if self.reads_done.load(Ordering::Acquire) > arrived {
            return Ok(());
        }
        let id = self.reads_started.fetch_add(1, Ordering::AcqRel) + 1;
        match self.raft.ensure_linearizable().await {
            Ok(_) => {
                self.reads_done.store(id, Ordering::Release);
                Ok(())
            }
            Err(RaftError::APIError(_)) => Err(ApiError::new("NotLeader", "leadership moved; retry")),
            Err(e) => Err(ApiError::new("Unavailable", e.to_string())),
        }
    }
}
