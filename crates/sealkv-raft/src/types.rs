//! openraft's type configuration for sealkv.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A cluster member as Raft knows it: its name (`--node-id`) and its gRPC address. The Raft node
/// id is the 64-bit FNV-1a hash of the name (`sealkv_crypto::full_node_id`), the same id the
/// writer registry uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `--node-id`.
    pub name: String,
    /// `host:port` of its gRPC listener.
    pub addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// The application data of a Raft entry: the FSM payload, or after the cutover the raft envelope
/// of it. Debug prints only the length, because before the cutover the bytes are user data.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What applying one entry produced: the commit timestamp given to its writes (0 for entries
/// that write no user data), and for command entries ([`crate::Machine`]) the machine's output
/// (the replies, returned to the proposer only; never persisted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// The MVCC commit timestamp.
    pub ts: u64,
    /// The machine's output for a command entry; empty otherwise.
    #[serde(with = "serde_bytes")]
    pub out: Vec<u8>,
}

/// A snapshot on disk: the spec 02 §8 stream in one file, streamed to followers in chunks and
/// installed from the file, so no snapshot is ever held in memory.
#[derive(Debug)]
pub struct SnapshotFile {
    /// The file.
    pub path: PathBuf,
}

openraft::declare_raft_types!(
    /// sealkv's Raft types.
    pub TypeConfig:
        D = Payload,
        R = ApplyResult,
        NodeId = u64,
        Node = Member,
        SnapshotData = SnapshotFile,
);

/// A Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<u64>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// Membership as stored with the applied index.
pub type StoredMembership = openraft::StoredMembership<u64, Member>;
/// Storage failures as openraft wants them.
pub type StorageError = openraft::StorageError<u64>;
