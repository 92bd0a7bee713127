//! The Redis frontend of a node: the RESP listener and connections ([`conn`]), the leader's
//! command batcher ([`proposer`]), the expiry sweep ([`sweep`]) and the server-level replies
//! (INFO, CONFIG, COMMAND, CLIENT: [`info`]).
//!
//! Routing: a connection sends each run of consecutive data commands to the leader as one
//! request. On the leader, writes join the proposer's next command-batch entry and their replies
//! come from the apply; reads wait for a read barrier and run against the applied store. A
//! follower forwards writes over gRPC, and answers reads itself: it asks the leader for a
//! ReadIndex (the leader's barrier, then its applied index), waits until it has applied that
//! index, and reads its own store. Why not forward reads too: their replies have no size bound
//! but the reply budget, far above what one gRPC message may carry (a 75 MiB string, or a
//! pipeline of GETs, failed that way), and the leader would do every read of the cluster.

pub mod conn;
pub mod info;
pub mod proposer;
pub mod sweep;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sealkv_raft::Shared;
use sealkv_raft::timing::Timing;
use sealkv_redis::cursor::Cursors;
use sealkv_redis::machine;
use sealkv_redis::reply_list::{decode_replies, encode_replies};
use sealkv_redis::{Group, Reply, entry};

use crate::api::{self, ApiError, Request, Response};
use crate::coordinator::{Coordinator, now_ms};
use crate::rounds::SharedRounds;

/// How long a follower waits to apply the leader's ReadIndex before it forwards the read to the
/// leader instead. A follower in step applies it within a round trip or two; one that is further
/// behind (catching up after a restart, or halted) still answers, through the leader.
const FOLLOWER_READ_WAIT: Duration = Duration::from_secs(1);

/// The leader-side half, owned by the node's `App`.
pub struct Core {
    coordinator: Arc<Coordinator>,
    shared: Arc<Shared>,
    proposer: proposer::Proposer,
    cursors: Cursors,
    /// This node's ReadIndex calls to the leader while it follows, shared by the reads that
    /// arrive together (at -P 1, fifty clients' GETs take one call, not fifty).
    read_index: SharedRounds<u64>,
    /// Writes this node ran as leader, one observation per `lead` call (a connection's run of
    /// pipelined commands): group-commit wait, proposal and apply.
    pub(crate) writes: Timing,
    /// Reads this node ran as leader, one observation per `lead` call: the read barrier (or
    /// lease) and the evaluation.
    pub(crate) reads: Timing,
    /// The evaluation of the reads among those that may take long (KEYS, whole-collection reads,
    /// long pipelines: [`machine::may_take_long`]), which run off the async workers.
    pub(crate) long_reads: Timing,
}

impl Core {
    /// Starts the proposer, which paces its entries by `progress` (the local log's appends).
    pub fn new(
        coordinator: Arc<Coordinator>,
        shared: Arc<Shared>,
        progress: sealkv_raft::progress::FlushProgress,
    ) -> Arc<Core> {
        let proposer = proposer::Proposer::start(coordinator.clone(), progress);
        Arc::new(Core {
            coordinator,
            shared,
            proposer,
            cursors: Cursors::default(),
            read_index: SharedRounds::default(),
            writes: Timing::default(),
            reads: Timing::default(),
            long_reads: Timing::default(),
        })
    }

    /// Runs groups on this node, which leads: one reply per group for writes; for reads, one per
    /// group of a prefix of them (see [`Core::lead_read`]).
    pub async fn lead(&self, write: bool, groups: Vec<Group>) -> Result<Vec<Reply>, ApiError> {
        if write { self.lead_write(groups).await } else { self.lead_read(&groups).await }
    }

    /// Runs write groups through the proposer: one reply per group.
    async fn lead_write(&self, groups: Vec<Group>) -> Result<Vec<Reply>, ApiError> {
        let started = Instant::now();
        // Refused here, alone (local and forwarded writes both come this way): inside a batch it
        // would fail every command it was packed with.
        proposer::check_size(&groups)?;
        let out = self.proposer.submit(groups).await;
        self.writes.observe(started);
        out
    }

    /// Runs read groups (one command each) after the read barrier: the replies of all of them,
    /// or of the first ones, whose replies reached [`machine::RUN_REPLY_BYTES`].
    async fn lead_read(&self, groups: &[Group]) -> Result<Vec<Reply>, ApiError> {
        let started = Instant::now();
        let barrier = self.coordinator.read_barrier().await;
        let out = barrier.map(|()| self.read_here(groups));
        self.reads.observe(started);
        out
    }

    /// Runs read groups against this node's applied store, once it is known to be current (after
    /// the leader's barrier, or a follower's wait for the ReadIndex): one reply per group, for
    /// all of them or a prefix ([`machine::read`]).
    fn read_here(&self, groups: &[Group]) -> Vec<Reply> {
        let cmds: Vec<&Vec<Vec<u8>>> = groups.iter().flat_map(|g| &g.cmds).collect();
        let seed = now_ms() ^ cmds.len() as u64;
        let read = || machine::read(&self.shared.store, now_ms(), seed, &self.cursors, &cmds);
        if !machine::may_take_long(&cmds) {
            return read();
        }
        let evaluating = Instant::now();
        let replies = crate::blocking::run(read);
        self.long_reads.observe(evaluating);
        replies
    }

    /// Runs read groups on this follower, as linearizable as on the leader at `addr`: the
    /// leader's ReadIndex covers every write acknowledged before the read arrived, and this
    /// node reads once it has applied that index. A follower that cannot catch up within
    /// [`FOLLOWER_READ_WAIT`], or a leader that does not know ReadIndex (an older version during
    /// an upgrade), falls back to forwarding the reads.
    async fn follower_read(&self, addr: &str, groups: &[Group]) -> Result<Vec<Reply>, ApiError> {
        let started = Instant::now();
        let asked = self
            .read_index
            .run(|| async {
                match api::call(addr, Request::ReadIndex, true).await {
                    Ok(Response::ReadIndex { index }) => Ok(index),
                    Ok(Response::Error(e)) | Err(e) => Err(e),
                    Ok(other) => Err(ApiError::new("Internal", format!("unexpected answer {other:?}"))),
                }
            })
            .await;
        let index = match asked {
            Ok(index) => Some(index),
            Err(e) if e.kind == "NotLeader" => return Err(e),
            Err(_) => None,
        };
        let caught_up = match index {
            Some(index) => self.coordinator.wait_applied(index, FOLLOWER_READ_WAIT).await,
            None => false,
        };
        if !caught_up {
            return forward(addr, false, groups).await;
        }
        let replies = self.read_here(groups);
        self.reads.observe(started);
        Ok(replies)
    }

    /// Answers a forwarded `Redis` request.
    pub async fn lead_encoded(&self, write: bool, body: &[u8]) -> Result<Response, ApiError> {
        let groups = entry::decode(body).map_err(|e| ApiError::new("InvalidArgument", e.to_string()))?;
        let replies = self.lead(write, groups).await?;
        Ok(Response::Redis { replies: encode_replies(&replies) })
    }
}

/// Runs groups wherever the leader is: locally, or forwarded once over gRPC. One reply per
/// group; for callers that send a single group, or writes.
pub async fn route(core: &Core, write: bool, groups: Vec<Group>) -> Result<Vec<Reply>, ApiError> {
    let n = groups.len();
    let (replies, rest) = route_run(core, write, groups).await?;
    if !rest.is_empty() {
        return Err(ApiError::new("Internal", format!("{} replies for {n} commands", replies.len())));
    }
    Ok(replies)
}

/// Runs a connection's run of groups: the replies, and the groups not run yet. Writes all run.
/// Reads stop once their replies reach [`machine::RUN_REPLY_BYTES`] (after at least one), and
/// the connection sends the replies so far before it runs the rest.
pub async fn route_run(core: &Core, write: bool, mut groups: Vec<Group>) -> Result<(Vec<Reply>, Vec<Group>), ApiError> {
    let n = groups.len();
    let leader = core.coordinator.leader_elsewhere()?;
    let miscount = |answered: usize| ApiError::new("Internal", format!("{answered} replies for {n} commands"));
    if write {
        let replies = match leader {
            None => core.lead_write(groups).await?,
            Some(addr) => forward(&addr, true, &groups).await?,
        };
        return if replies.len() == n { Ok((replies, Vec::new())) } else { Err(miscount(replies.len())) };
    }
    let replies = match leader {
        None => core.lead_read(&groups).await?,
        Some(addr) => core.follower_read(&addr, &groups).await?,
    };
    // A prefix, never nothing: a run that made no progress would be sent again forever.
    if replies.len() > n || (replies.is_empty() && n > 0) {
        return Err(miscount(replies.len()));
    }
    let rest = groups.split_off(replies.len());
    Ok((replies, rest))
}

/// Sends groups to the leader at `addr`. An oversize write is refused here and never travels.
async fn forward(addr: &str, write: bool, groups: &[Group]) -> Result<Vec<Reply>, ApiError> {
    if write {
        proposer::check_size(groups)?;
    }
    match api::call(addr, Request::Redis { write, body: entry::encode(groups) }, true).await? {
        Response::Redis { replies } => decode_replies(&replies)
            .map_err(|e| ApiError::new("Internal", format!("the leader's replies did not decode: {e}"))),
        Response::Error(e) => Err(e),
        other => Err(ApiError::new("Internal", format!("unexpected answer {other:?}"))),
    }
}

/// A routing failure as a Redis error reply: retryable kinds become `TRYAGAIN`.
pub fn error_reply(e: &ApiError) -> Reply {
    match e.kind.as_str() {
        "NotLeader" | "Unavailable" => Reply::err(format!("TRYAGAIN {}", e.message)),
        "Halted" => Reply::err(format!("ERR node halted: {}", e.message)),
        "TooLarge" => Reply::err(format!("ERR {}", e.message)),
        kind => Reply::err(format!("ERR {kind}: {}", e.message)),
    }
}
