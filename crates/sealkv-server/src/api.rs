//! The KV and admin calls carried by the `Call` method of the node's gRPC service.
//!
//! Requests and responses are bincode-encoded serde enums (bounded decoding, see
//! `sealkv_raft::codec`). A node that is not the leader forwards writes and linearizable reads
//! to the leader once (`forwarded` stops loops) and returns the leader's answer. Redis reads
//! are the exception: a follower asks the leader only for a `ReadIndex` and reads itself.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use sealkv_raft::codec;
use sealkv_raft::network::{channel, client};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

/// A call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Set by a follower forwarding to the leader.
    pub forwarded: bool,
    /// The request.
    pub request: Request,
}

/// One write of a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WriteOp {
    /// Put, with an optional time-to-live in ms.
    Put {
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// TTL.
        ttl_ms: Option<u64>,
    },
    /// Delete.
    Delete {
        /// Key.
        key: Vec<u8>,
    },
}

/// KV and admin requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Linearizable read of one key.
    Get {
        /// Key.
        key: Vec<u8>,
    },
    /// Linearizable scan of a key prefix (at most `limit` pairs).
    Scan {
        /// Prefix.
        prefix: Vec<u8>,
        /// Max pairs.
        limit: u32,
    },
    /// Writes applied atomically in one Raft entry.
    Write {
        /// The writes.
        ops: Vec<WriteOp>,
    },
    /// Redis commands (`body` = a sealkv-redis command-batch body): writes go through Raft as one
    /// entry, reads run on the leader after a read barrier.
    Redis {
        /// Whether the commands write.
        write: bool,
        /// The encoded groups.
        body: Vec<u8>,
    },
    /// Cluster status as seen from the answering node (members' applied indexes fetched live).
    ClusterStatus,
    /// This node alone.
    LocalStatus,
    /// Adds a learner.
    AddLearner {
        /// Its `--node-id`.
        name: String,
        /// Its gRPC address.
        addr: String,
    },
    /// Promotes a learner to voter.
    Promote {
        /// Its `--node-id`.
        name: String,
    },
    /// Removes a member.
    Remove {
        /// Its `--node-id`.
        name: String,
    },
    /// Proposes an encryption entry built by a node for itself (a writer registration at
    /// startup). Leader only; the payload must be a registration.
    Register {
        /// The encoded 0x03 entry.
        payload: Vec<u8>,
    },
    /// Generates a new DEK for `purpose` (`storage` or `raft`) on the leader, wraps it under the
    /// KEK and proposes rotate-dek (spec 03 §2).
    RotateDek {
        /// `storage` or `raft`.
        purpose: String,
    },
    /// Every member's encryption state, gathered by the answering node.
    EncryptionStatus,
    /// This node's encryption state alone.
    LocalEncryption,
    /// The leader's writer-registry rows for one node (the epoch fence of spec 03 §3).
    RegistryRows {
        /// The asking node's full id.
        full_node_id: u64,
    },
    /// What this node can do (membership path (d) of spec 03 §3). Answered locally.
    Capability,
    /// ReadIndex: the leader runs its read barrier and answers with the index its store has
    /// applied; the asking follower answers a Redis read itself once it has applied that index.
    ReadIndex,
}

/// One writer-registry row, as the epoch fence and status see it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegistryRow {
    /// The DEK.
    pub dek_id: u32,
    /// The nonce node id (low 16 bits of the full id).
    pub node16: u16,
    /// The full node id that owns the slot.
    pub full_node_id: u64,
    /// First registered epoch.
    pub first_seen_epoch: u16,
    /// Highest registered epoch.
    pub last_seen_epoch: u16,
}

/// One DEK as a node's sidecar records it (never key bytes; not even wrapped ones).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DekStatus {
    /// Key id.
    pub id: u32,
    /// `storage` or `raft`.
    pub purpose: String,
    /// Whether it is the active key of its purpose.
    pub active: bool,
    /// Retired keys are kept only as records.
    pub retired: bool,
    /// This node's writer epoch for it.
    pub local_epoch: u32,
}

/// One node's encryption state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeEncryption {
    /// `--node-id`.
    pub id: String,
    /// Whether the node runs with `--encryption-enabled` and a KEK.
    pub enabled: bool,
    /// Active storage DEK id (0: none).
    pub active_storage: u32,
    /// Active raft DEK id (0: none).
    pub active_raft: u32,
    /// Whether the storage envelope is on.
    pub storage_envelope: bool,
    /// Raft envelope cutover index (0: off).
    pub raft_cutover_index: u64,
    /// The sidecar's last applied encryption entry index.
    pub sidecar_applied_index: u64,
    /// Every DEK the sidecar records.
    pub keys: Vec<DekStatus>,
}

/// `admin encryption status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncryptionStatus {
    /// Each member's state (`None` fields mean unreachable, see `unreachable`).
    pub nodes: Vec<NodeEncryption>,
    /// Members that did not answer.
    pub unreachable: Vec<String>,
    /// The replicated writer registry as the answering node applied it.
    pub registry: Vec<RegistryRow>,
}

/// What a node reports about itself before it is added to a cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Capability {
    /// FNV-1a 64 of its `--node-id`.
    pub full_node_id: u64,
    /// Started with `--encryption-enabled` and a loaded KEK.
    pub encryption_capable: bool,
    /// `(DEK id, local epoch)` for every DEK its sidecar holds (empty for a fresh data dir).
    pub epochs: Vec<(u32, u32)>,
}

/// What went wrong, as a kind scripts can match and a message people can act on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    /// Stable kind: `NotLeader`, `Unavailable`, `InvalidArgument`, `Halted`, `Internal`.
    pub kind: String,
    /// Human message naming what to do.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// A new error.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        ApiError { kind: kind.to_owned(), message: message.into() }
    }
}

/// One member in a status report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    /// `--node-id`.
    pub id: String,
    /// `leader`, `follower`, `candidate`, `learner`, `shutdown`, or `unreachable`.
    pub role: String,
    /// gRPC address.
    pub address: String,
    /// Last applied log index (None when unreachable).
    pub applied_index: Option<u64>,
    /// Voter (true) or learner.
    pub voter: bool,
    /// Raft envelope cutover index applied on it (None when unreachable).
    pub raft_cutover_index: Option<u64>,
    /// Whether its store seals new values.
    pub storage_envelope: Option<bool>,
    /// Set when the member's apply loop halted.
    pub halted: Option<String>,
    /// Whether this member's coordinator accepts client requests (false while encryption is
    /// being switched on from birth or a restarted node registers its writer epoch).
    pub serving: Option<bool>,
}

/// Cluster status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The leader's `--node-id`, if one is known.
    pub leader: Option<String>,
    /// Current term.
    pub term: u64,
    /// Every voter and learner.
    pub members: Vec<MemberStatus>,
}

/// Responses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// A value, or none.
    Value(Option<Vec<u8>>),
    /// Key/value pairs in key order.
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    /// A write's commit timestamp.
    Written {
        /// Commit ts.
        ts: u64,
    },
    /// Cluster status.
    Cluster(ClusterStatus),
    /// One member's status.
    Local(MemberStatus),
    /// Done.
    Ok,
    /// A rotate-dek entry was applied.
    Rotated {
        /// `storage` or `raft`.
        purpose: String,
        /// The new active DEK id.
        dek_id: u32,
    },
    /// Encryption status of the cluster.
    Encryption(EncryptionStatus),
    /// One node's encryption state.
    LocalEncryption(NodeEncryption),
    /// Registry rows.
    Rows(Vec<RegistryRow>),
    /// A capability report.
    Capability(Capability),
    /// Replies to a `Redis` request, encoded (one per group).
    Redis {
        /// The encoded replies.
        replies: Vec<u8>,
    },
    /// The answer to `ReadIndex`.
    ReadIndex {
        /// The leader's applied index after its read barrier.
        index: u64,
    },
    /// Failed.
    Error(ApiError),
}

/// One HTTP/2 channel per address for the life of the process: forwarded requests and load
/// generators multiplex over it instead of opening a connection per call. A channel reconnects
/// by itself after its peer restarts.
fn pooled(addr: &str) -> Result<Channel, tonic::transport::Error> {
    static POOL: OnceLock<Mutex<HashMap<String, Channel>>> = OnceLock::new();
    let mut pool = POOL.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ch) = pool.get(addr) {
        return Ok(ch.clone());
    }
    let ch = channel(addr)?;
    pool.insert(addr.to_owned(), ch.clone());
    Ok(ch)
}

/// Sends `request` to the node at `addr` and returns its response.
pub async fn call(addr: &str, request: Request, forwarded: bool) -> Result<Response, ApiError> {
    let unavailable = |e: String| ApiError::new("Unavailable", format!("cannot reach {addr}: {e}"));
    let ch = pooled(addr).map_err(|e| unavailable(e.to_string()))?;
    let mut c = client(ch);
    let bytes = codec::encode(&Envelope { forwarded, request }).map_err(|s| ApiError::new("Internal", s.message()))?;
    let mut req = tonic::Request::new(bytes);
    req.set_timeout(std::time::Duration::from_secs(30));
    let resp = c.call(req).await.map_err(|s| unavailable(s.message().to_owned()))?;
    codec::decode(resp.get_ref()).map_err(|s| ApiError::new("Internal", s.message()))
}
