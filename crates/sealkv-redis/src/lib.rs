//! sealkv's Redis face, without I/O: the RESP request parser and reply encoder, the layout of
//! Redis keys on the store, and the command machine.
//!
//! Commands that write are not turned into writes by the node that receives them: they travel
//! through Raft as commands (a 0x08 command-batch entry, [`entry`]) and every replica evaluates
//! them at apply time against the same state ([`machine::CommandMachine`]), so INCR, SET NX and
//! EXEC are atomic and identical everywhere. Reads run the same command code against a
//! read-only view on the leader after a read barrier.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![warn(missing_docs)]

pub mod cmd;
pub mod cursor;
pub mod db;
pub mod entry;
pub mod keyspace;
pub mod layout;
pub mod longdouble;
pub mod machine;
pub mod reply;
pub mod reply_list;
pub mod resp;
pub mod rules;
pub mod strtod;
mod wire;

pub use cmd::{Spec, lookup};
pub use entry::Group;
pub use reply::Reply;
