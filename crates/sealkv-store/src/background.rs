//! The storage engine's background work, seen from outside: what memtables hold, what flushes
//! and compactions are under way, and a way to flush every memtable now.
//!
//! Why it exists: fjall writes a memtable out only once it is full, and compacts afterwards. A
//! node that took writes and went quiet keeps them in memory and in its journal, and the work of
//! flushing them lands in whatever the node does next. Operators see that work here (`INFO
//! persistence`, `/metrics`), and `SAVE` does it on demand (before a planned restart or a
//! filesystem snapshot; benchmarks use it so that one test's deferred flush is not billed to the
//! next).

use std::time::{Duration, Instant};

use fjall::KeyspaceCreateOptions;

use crate::error::StoreError;
use crate::store::Store;

/// How long [`Store::flush`] waits for the memtables it sealed to be written out. A flush that
/// takes longer means the disk is failing or full, and a caller should hear that rather than hang.
const FLUSH_WAIT: Duration = Duration::from_secs(120);

/// A point-in-time view of the engine's background work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Bytes held by memtables (active and sealed) of every keyspace: written, not yet in tables.
    pub memtable_bytes: u64,
    /// Sealed memtables queued for a flush.
    pub flushes_pending: u64,
    /// Compactions running now.
    pub compactions_running: u64,
    /// Compactions finished since the store opened.
    pub compactions_completed: u64,
    /// Journal files on disk (the active one included).
    pub journal_files: u64,
}

impl Store {
    /// Writes the memtable of every keyspace in the store's database out as tables, and returns
    /// once they are on disk. That includes keyspaces other layers keep in the same database (the
    /// Raft log), so afterwards no memtable holds anything written before the call.
    ///
    /// Writes that arrive meanwhile go on; they land in new memtables. Fails if a sealed memtable
    /// is still unwritten after two minutes (the flush itself failed: see the log).
    pub fn flush(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        // Keyspaces are never deleted, so every listed name opens the existing keyspace (the
        // create options are unused).
        let keyspaces = self
            .db
            .list_keyspace_names()
            .iter()
            .map(|name| self.db.keyspace(name, KeyspaceCreateOptions::default))
            .collect::<Result<Vec<_>, _>>()?;
        for ks in &keyspaces {
            ks.rotate_memtable()?;
        }
        for ks in &keyspaces {
            while ks.sealed_memtable_count() > 0 {
                if started.elapsed() > FLUSH_WAIT {
                    return Err(StoreError::FlushTimeout { secs: FLUSH_WAIT.as_secs() });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// The engine's background work now, for `INFO persistence` and `/metrics`.
    pub fn engine_stats(&self) -> EngineStats {
        EngineStats {
            memtable_bytes: self.db.write_buffer_size(),
            flushes_pending: self.db.outstanding_flushes() as u64,
            compactions_running: self.db.active_compactions() as u64,
            compactions_completed: self.db.compactions_completed() as u64,
            journal_files: self.db.journal_count() as u64,
        }
    }
}
