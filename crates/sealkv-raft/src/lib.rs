//! sealkv's replication layer: openraft 0.9 over fjall.
//!
//! - [`log_store`]: the durable Raft log, in the store's own fjall database.
//! - [`state_machine`]: the state machine on `sealkv-store` and the apply hook — the only place
//!   that unwraps Raft payloads, and the place every apply failure halts.
//! - [`command`]: the KV command payloads (opcodes 0x00/0x01).
//! - [`network`]: the gRPC transport (one service per node for Raft, KV and admin calls).

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
pub mod state_machine;
pub mod types;

pub use machine_frame::encode as machine_payload;
pub use state_machine::{Halt, Machine, Shared, StateMachine};
pub use types::{ApplyResult, Member, Payload, Raft, TypeConfig};
