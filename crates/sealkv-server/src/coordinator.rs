//! The leader side of writes and reads: HLC timestamps with lease entries, encoding commands,
//! wrapping proposals in the raft envelope after the cutover, the quiescence barrier around the
//! cutover, and coalesced linearizable reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use sealkv_raft::command::{Command, Op};
use sealkv_raft::timing::Timing;
use sealkv_raft::{ApplyResult, Payload, Raft, Shared, machine_payload};
use tokio::sync::{Mutex, RwLock};

use crate::api::ApiError;
use crate::rounds::SharedRounds;

/// How far ahead of the wall clock a lease lets timestamps run.
const LEASE_MS: i64 = 10_000;
/// Renew the lease when fewer than this many ms remain.
const RENEW_MS: i64 = 4_000;

/// How long after a quorum acknowledged this leader its reads skip the ReadIndex round.
///
/// Sound because openraft 0.9 followers keep a lease of their own: a voter that accepted the
/// leader's AppendEntries or heartbeat refuses every vote request for `leader_lease`
/// (= `election_timeout_max`) after receiving it, and a restarted voter counts that lease from its
/// start. A quorum round (a read barrier or a committed write) that began at `t` therefore means
/// no other leader can exist before `t + leader_lease` on the followers' clocks; using half of it
/// leaves room for clock-rate drift and scheduling delay.
pub const READ_LEASE: Duration = Duration::from_millis(crate::node::ELECTION_TIMEOUT_MAX_MS / 2);

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
    /// ReadIndex quorum rounds, shared by the readers that arrive together.
    read_rounds: SharedRounds<()>,
    lease: std::sync::Mutex<Option<ReadLease>>,
    /// Per raft DEK id, the newest log index this process proposed under it (while it led), for
    /// `sealkv_encryption_last_proposed_index`. Other leaders, and this node's earlier processes,
    /// may have proposed under the same DEK at other indexes: the figure is this process's own.
    last_proposed: std::sync::Mutex<std::collections::BTreeMap<u32, u64>>,
    /// How long proposals took, from `client_write` until applied here.
    proposals: Timing,
}

/// A quorum acknowledged this leader in `term` under the membership applied at `membership`, in a
/// round that began no earlier than `until - READ_LEASE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReadLease {
    term: u64,
    membership: Option<(u64, u64)>,
    until: Instant,
}

/// What a lease is checked against: the node's own view, from its raft metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LeaderView {
    leading: bool,
    term: u64,
    membership: Option<(u64, u64)>,
}

impl ReadLease {
    /// Whether a read arriving at `now` may skip the quorum round.
    fn covers(&self, view: LeaderView, now: Instant) -> bool {
        view.leading && view.term == self.term && view.membership == self.membership && now < self.until
    }
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
            read_rounds: SharedRounds::default(),
            lease: std::sync::Mutex::new(None),
            last_proposed: std::sync::Mutex::new(Default::default()),
            proposals: Timing::default(),
        }
    }

    /// How long this node's proposals took while it led: from `client_write` until the entry
    /// applied here (leader log append, replication to a quorum, commit, apply), failures
    /// included.
    pub fn propose_timing(&self) -> &Timing {
        &self.proposals
    }

    /// `(raft DEK id, newest log index proposed under it)` for every raft DEK this node proposed
    /// under since it started.
    pub fn last_proposed(&self) -> Vec<(u32, u64)> {
        let m = self.last_proposed.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
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
        if payload.len() > sealkv_raft::MAX_ENTRY_PAYLOAD {
            return Err(too_large(payload.len()));
        }
        let (data, key_id) = if self.shared.cutover() != 0 {
            let Some(sealer) = self.shared.raft_sealer() else {
                return Err(ApiError::new(
                    "Internal",
                    "the raft envelope is on but no raft DEK is loaded here; nothing is proposed cleartext",
                ));
            };
            let wrapped =
                sealer.wrap_raft(&payload).map_err(|e| ApiError::new("Internal", format!("wrap failed: {e}")))?;
            (wrapped, Some(sealer.key_id()))
        } else {
            (payload, None)
        };
        let (started, before) = (Instant::now(), self.view());
        let written = self.raft.client_write(Payload(data)).await;
        self.proposals.observe(started);
        match written {
            Ok(r) => {
                // Committed: a quorum accepted an AppendEntries sent after `started`.
                if r.log_id.leader_id.term == before.term {
                    self.renew_lease(started, before);
                }
                if let Some(id) = key_id {
                    let mut m = self.last_proposed.lock().unwrap_or_else(|p| p.into_inner());
                    let newest = m.entry(id).or_default();
                    *newest = (*newest).max(r.log_id.index);
                }
                Ok(r.data)
            }
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

    /// A linearizable read barrier. Within [`READ_LEASE`] of a quorum round of this leader's term
    /// the leader's applied state is already current (every acknowledged write applied here before
    /// it was acknowledged, and no other leader can exist yet), so the read goes ahead at once.
    /// Otherwise ReadIndex: concurrent readers share one quorum round (a barrier that started
    /// after a reader arrived serves it), and that round renews the lease.
    pub async fn read_barrier(&self) -> Result<(), ApiError> {
        self.check_open()?;
        if self.lease_covers(Instant::now()) {
            return Ok(());
        }
        self.read_rounds
            .run(|| async {
                let (started, before) = (Instant::now(), self.view());
                match self.raft.ensure_linearizable().await {
                    Ok(_) => {
                        self.renew_lease(started, before);
                        Ok(())
                    }
                    Err(RaftError::APIError(_)) => Err(ApiError::new("NotLeader", "leadership moved; retry")),
                    Err(e) => Err(ApiError::new("Unavailable", e.to_string())),
                }
            })
            .await
    }

    /// ReadIndex for a read served by a follower: after this leader's read barrier, the index its
    /// store has applied. Why the store's index and not openraft's metrics: a write is
    /// acknowledged once its apply batch has committed here, which records the applied index in
    /// the same batch, while the metrics catch up a moment later. So every write acknowledged
    /// before the read arrived is at or below this index, and a follower that has applied it
    /// sees them all.
    pub async fn read_index(&self) -> Result<u64, ApiError> {
        self.read_barrier().await?;
        let applied = self.shared.store.applied().map_err(|e| ApiError::new("Internal", e.to_string()))?;
        Ok(applied.map_or(0, |a| a.index))
    }

    /// Whether this node has applied `index` within `wait` (false too once its Raft core has
    /// stopped, a halt among the reasons). Why openraft's metrics here: they move only after the
    /// store has committed the apply, so a node that reports `index` applied can already read it.
    pub async fn wait_applied(&self, index: u64, wait: Duration) -> bool {
        self.raft.wait(Some(wait)).applied_index_at_least(Some(index), "a follower read").await.is_ok()
    }

    /// This node's view of its leadership, for checking and renewing the read lease.
    fn view(&self) -> LeaderView {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        LeaderView {
            leading: m.current_leader == Some(self.me) && m.running_state.is_ok(),
            term: m.current_term,
            membership: m.membership_config.log_id().map(|l| (l.leader_id.term, l.index)),
        }
    }

    fn lease_covers(&self, now: Instant) -> bool {
        let lease = *self.lease.lock().unwrap_or_else(|p| p.into_inner());
        lease.is_some_and(|l| l.covers(self.view(), now))
    }

    /// Records a quorum round that began at `started` with this node's view `before`. Only when
    /// the node led then and still leads with the same term and membership: a round that spans a
    /// term or membership change proves nothing about the quorum of the new one.
    fn renew_lease(&self, started: Instant, before: LeaderView) {
        if !before.leading || self.view() != before {
            return;
        }
        let (term, membership) = (before.term, before.membership);
        let fresh = ReadLease { term, membership, until: started + READ_LEASE };
        let mut lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        if lease.is_none_or(|l| l.term != term || l.membership != membership || l.until < fresh.until) {
            *lease = Some(fresh);
        }
    }
}

/// The refusal of a write bigger than one Raft entry may be ([`sealkv_raft::MAX_ENTRY_PAYLOAD`]).
pub fn too_large(bytes: usize) -> ApiError {
    ApiError::new(
        "TooLarge",
        format!(
            "a write of {bytes} bytes exceeds the {} MiB limit of one replicated entry; \
             split it: APPEND or SETRANGE a large value in parts, or use smaller MSET or MULTI batches",
            sealkv_raft::MAX_ENTRY_PAYLOAD >> 20
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(term: u64) -> LeaderView {
        LeaderView { leading: true, term, membership: Some((1, 1)) }
    }

    #[test]
    fn a_lease_covers_reads_only_in_its_term_membership_and_window() {
        let t0 = Instant::now();
        let lease = ReadLease { term: 3, membership: Some((1, 1)), until: t0 + READ_LEASE };
        assert!(lease.covers(view(3), t0));
        assert!(lease.covers(view(3), t0 + READ_LEASE - Duration::from_millis(1)));
        assert!(!lease.covers(view(3), t0 + READ_LEASE), "the window is half-open");
        assert!(!lease.covers(view(4), t0), "a new term needs its own quorum round");
        assert!(!lease.covers(LeaderView { leading: false, ..view(3) }, t0), "a follower never reads on a lease");
        assert!(!lease.covers(LeaderView { membership: Some((3, 9)), ..view(3) }, t0), "a membership change drops it");
    }
}
