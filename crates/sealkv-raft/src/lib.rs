//! sealkv's replication layer: openraft 0.9 over fjall.
//!
//! - [`log_store`]: the durable Raft log, in the store's own fjall database.
//! - [`state_machine`]: the state machine on `sealkv-store` and the apply hook — the only place
//!   that unwraps Raft payloads, and the place every apply failure halts.
//! - [`command`]: the KV command payloads (opcodes 0x00/0x01).
//! - [`network`]: the gRPC transport (one service per node for Raft, KV and admin calls).
//! - [`timing`]: how long each stage of the write path takes, for the metrics endpoint.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![warn(missing_docs)]
// The error types here are openraft's `StorageError` and tonic's `Status`, fixed by the traits
// we implement; boxing them would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod command;
pub mod log_store;
pub mod machine_frame;
pub mod network;
pub mod progress;
pub mod state_machine;
pub mod timing;
pub mod types;

pub use machine_frame::encode as machine_payload;

/// The largest FSM payload one Raft entry may carry; the coordinator refuses bigger writes.
///
/// Why: every entry must reach a follower inside one AppendEntries message
/// ([`codec::MAX_MESSAGE_LEN`], 64 MiB, which also bounds the log codec) and within openraft's
/// per-RPC timeout of one heartbeat interval, fsync included. A larger write used to stop the
/// leader's Raft core at log append ("size limit has been reached").
pub const MAX_ENTRY_PAYLOAD: usize = 16 << 20;

/// How many bytes of entries one AppendEntries carries at most (one entry always goes, however
/// large): a lagging follower catches up in RPCs that finish inside the heartbeat-interval
/// timeout, instead of one huge RPC that times out and is sent again.
pub const MAX_APPEND_BYTES: u64 = 4 << 20;
pub use state_machine::{Halt, Machine, Shared, StateMachine};
pub use types::{ApplyResult, Member, Payload, Raft, TypeConfig};
