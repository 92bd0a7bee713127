//! The Redis frontend of a node: the RESP listener and connections ([`conn`]), the leader's
//! command batcher ([`proposer`]), the expiry sweep ([`sweep`]) and the server-level replies
//! (INFO, CONFIG, COMMAND, CLIENT: [`info`]).
//!
//! Routing: a connection sends each run of consecutive data commands to the leader as one
//! request (forwarded over gRPC when this node is a follower). On the leader, writes join the
//! proposer's next command-batch entry and their replies come from the apply; reads wait for a
//! read barrier and run against the applied store.

pub mod conn;
pub mod info;
pub mod proposer;
pub mod sweep;

use std::sync::Arc;
use std::time::Instant;

use sealkv_raft::Shared;
use sealkv_raft::timing::Timing;
use sealkv_redis::cursor::Cursors;
use sealkv_redis::machine;
use sealkv_redis::reply_list::{decode_replies, encode_replies};
use sealkv_redis::{Group, Reply, entry};

use crate::api::{self, ApiError, Request, Response};
use crate::coordinator::{Coordinator, now_ms};

/// The leader-side half, owned by the node's `App`.
pub struct Core {
    coordinator: Arc<Coordinator>,
    shared: Arc<Shared>,
    proposer: proposer::Proposer,
    cursors: Cursors,
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
            writes: Timing::default(),
            reads: Timing::default(),
            long_reads: Timing::default(),
        })
    }

    /// Runs groups on this node, which leads: one reply per group.
    pub async fn lead(&self, write: bool, groups: Vec<Group>) -> Result<Vec<Reply>, ApiError> {
        let started = Instant::now();
        if write {
            // Refused here, alone (local and forwarded writes both come this way): inside a
            // batch it would fail every command it was packed with.
            proposer::check_size(&groups)?;
            let out = self.proposer.submit(groups).await;
            self.writes.observe(started);
            return out;
        }
        let barrier = self.coordinator.read_barrier().await;
        let out = barrier.map(|()| {
            let cmds: Vec<Vec<Vec<u8>>> = groups.into_iter().flat_map(|g| g.cmds).collect();
            let seed = now_ms() ^ cmds.len() as u64;
            let read = || machine::read(&self.shared.store, now_ms(), seed, &self.cursors, &cmds);
            if !machine::may_take_long(&cmds) {
                return read();
            }
            let evaluating = Instant::now();
            let replies = crate::blocking::run(read);
            self.long_reads.observe(evaluating);
            replies
        });
        self.reads.observe(started);
        out
    }

    /// Answers a forwarded `Redis` request.
    pub async fn lead_encoded(&self, write: bool, body: &[u8]) -> Result<Response, ApiError> {
        let groups = entry::decode(body).map_err(|e| ApiError::new("InvalidArgument", e.to_string()))?;
        let replies = self.lead(write, groups).await?;
        Ok(Response::Redis { replies: encode_replies(&replies) })
    }
}

/// Runs groups wherever the leader is: locally, or forwarded once over gRPC.
pub async fn route(core: &Core, write: bool, groups: Vec<Group>) -> Result<Vec<Reply>, ApiError> {
    let n = groups.len();
    let replies = match core.coordinator.leader_elsewhere()? {
        None => core.lead(write, groups).await?,
        Some(addr) => forward(&addr, write, &groups).await?,
    };
    if replies.len() != n {
        return Err(ApiError::new("Internal", format!("{} replies for {n} commands", replies.len())));
    }
    Ok(replies)
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
