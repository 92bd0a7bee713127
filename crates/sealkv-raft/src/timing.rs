//! Where a write's time goes: each stage of the write path (log append, AppendEntries round
//! trip, apply, the whole proposal) adds its durations to a [`Timing`], and the metrics endpoint
//! serves them as Prometheus summaries. A slow fsync, a slow network or a slow apply then shows
//! as one stage's mean (`rate(_sum) / rate(_count)`) instead of as "writes are slow".
//!
//! Observations are per Raft entry or per RPC, not per client command, and cost two relaxed
//! atomic adds, so timing stays on in production.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Total time and count of one stage's observations since this process started.
#[derive(Debug, Default)]
pub struct Timing {
    nanos: AtomicU64,
    count: AtomicU64,
}

impl Timing {
    /// Adds the time since `started`.
    pub fn observe(&self, started: Instant) {
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Total seconds observed.
    pub fn seconds(&self) -> f64 {
        self.nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Observations made.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn observations_add_their_durations_and_count() {
        let t = Timing::default();
        assert_eq!((t.count(), t.seconds()), (0, 0.0));
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        t.observe(started);
        t.observe(Instant::now());
        assert_eq!(t.count(), 2);
        assert!(t.seconds() >= 0.005, "{}", t.seconds());
    }
}
