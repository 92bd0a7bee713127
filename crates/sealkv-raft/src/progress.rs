//! How far this node's log appends have got: the last index an append started to write, and the
//! last one fsynced.
//!
//! openraft 0.9's core awaits each append's fsync before it does anything else (replicating that
//! entry, handling AppendEntries replies, committing), so one leader can only usefully have one
//! append in its disk's hands at a time. A proposer that batches client writes paces itself by
//! this: the next entry is worth proposing once the one before it is on disk, which is well
//! before it is replicated and applied. Only a pacing signal: nothing here decides what is
//! durable or acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// Shared by the log store (which advances it) and its readers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FlushProgress {
    started: Arc<AtomicU64>,
    flushed: Arc<watch::Sender<u64>>,
}

impl Default for FlushProgress {
    fn default() -> Self {
        FlushProgress { started: Arc::default(), flushed: Arc::new(watch::channel(0).0) }
    }
}

impl FlushProgress {
    /// The last index an append has started to write, fsynced or not (0 before any).
    pub fn started_to(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    /// Returns once an append ending at `index` or beyond has been fsynced. It may never return
    /// (nothing more is appended, or the log was truncated below `index`), so callers race it
    /// against what they are really waiting for.
    pub async fn flushed(&self, index: u64) {
        let mut rx = self.flushed.subscribe();
        // `self` holds the sender, so the channel cannot close while this waits.
        let _ = rx.wait_for(|&f| f >= index).await;
    }

    /// An append of entries up to `last` is about to be written.
    pub(crate) fn started(&self, last: u64) {
        self.started.store(last, Ordering::Release);
    }

    /// An append of entries up to `last` is on disk. After a truncation this can move back,
    /// which only makes waiters wait for their own entry's outcome instead.
    pub(crate) fn flushed_to(&self, last: u64) {
        self.flushed.send_replace(last);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_waiter_returns_once_its_index_is_flushed_and_not_before() {
        let p = FlushProgress::default();
        p.started(7);
        assert_eq!(p.started_to(), 7);
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.flushed(7).await }
        });
        p.flushed_to(6);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "index 6 on disk does not cover a wait for 7");
        p.flushed_to(9);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("flushed past 7").unwrap();
        // Already covered: returns at once.
        tokio::time::timeout(Duration::from_secs(5), p.flushed(9)).await.expect("9 is on disk");
    }
}
