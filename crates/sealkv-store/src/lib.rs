//! sealkv's MVCC store on fjall.
//!
//! One fjall database holds three keyspaces: `data` (MVCC versions), `meta` (applied position,
//! activation state, cursors) and `registry` (writer-registry rows). Every apply commits its data
//! and the new applied position in one atomic batch ([`ApplyBatch`]).
//!
//! This crate is the only place that seals values: when the storage envelope is active (a
//! decision taken at apply time, so every replica takes it at the same index), a value is
//! compressed if that helps and sealed with AAD = envelope header ‖ value header ‖ MVCC key.
//! Reads dispatch on the value header's encryption state and fail closed: a version that does not
//! pass every check is a [`StoreError::Integrity`], never other bytes and never "absent".
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![warn(missing_docs)]

mod background;
mod batch;
pub mod compress;
mod error;
mod gc;
pub mod key;
mod latest;
mod meta;
mod rewrite;
mod row_cache;
mod seal;
mod snapshot;
mod store;
pub mod value;

pub use background::EngineStats;
pub use batch::{ApplyBatch, Durability, MergedScan, Savepoint};
pub use compress::DecompressError;
pub use error::{IntegrityReason, StoreError};
pub use gc::{GcReport, SealedVersion, ValueCounts};
pub use key::KeyRange;
pub use meta::{Applied, MAX_LOG_ID_LEN, RewriteTarget};
pub use rewrite::{RewriteOptions, RewriteProgress};
pub use row_cache::RowCacheStats;
pub use snapshot::{EncryptionSnapshot, Record, SnapshotError, SnapshotHeader, SnapshotReader, SnapshotStats};
pub use store::{DEFAULT_ROW_CACHE_BYTES, Direction, KeyValue, Scan, ScanItem, Store, StoreOptions, Version, live_at};

/// The largest value the store accepts: Redis's default `proto-max-bulk-len` (512 MiB), plus room
/// for the few bytes of header a layer above puts in front of its data (a Redis string of
/// 512 MiB is stored with one).
pub const MAX_VALUE_LEN: usize = (512 << 20) + 64;
