//! SCAN cursors. Redis's cursor is a position in a hash table; ours is a handle to the store key
//! the next call resumes at, kept on the node that serves the reads (the leader). The table is
//! bounded: the oldest handles are forgotten first, and a forgotten or foreign cursor is refused
//! with `ERR invalid cursor` rather than restarting silently.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// How many cursors a node remembers.
const CAPACITY: usize = 16_384;

/// The cursor table.
#[derive(Debug)]
pub struct Cursors {
    inner: Mutex<(u64, BTreeMap<u64, Vec<u8>>)>,
}

impl Default for Cursors {
    fn default() -> Self {
        // Start from the clock so a new leader's cursors do not collide with an old leader's.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1)
            & ((1 << 52) - 1);
        Cursors { inner: Mutex::new((start.max(1), BTreeMap::new())) }
    }
}

impl Cursors {
    /// Remembers where to resume; the cursor to hand out.
    pub fn save(&self, resume_at: Vec<u8>) -> u64 {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let id = g.0;
        g.1.insert(id, resume_at);
        while g.1.len() > CAPACITY {
            g.1.pop_first();
        }
        id
    }

    /// Where cursor `id` resumes, if this node still knows it.
    pub fn resume(&self, id: u64) -> Option<Vec<u8>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1.get(&id).cloned()
    }
}
