//! Node-local MVCC garbage collection: every write leaves the version it replaced on disk (a Redis
//! key's meta record is rewritten by every write to the key), so each node periodically drops the
//! versions no read can reach any more.
//!
//! Only superseded versions go ([`Store::gc_superseded`]): every key keeps its newest version, a
//! tombstone included, so what an apply reads is the same on a replica that has run a pass and
//! on one that has not. Values that were deleted or expired (and swept) leave the disk; their
//! tombstones, a few bytes each, stay.

use std::sync::Arc;
use std::time::Duration;

use sealkv_store::Store;

use crate::coordinator::now_ms;

/// How often a node collects, and how far behind its clock the horizon stays.
#[derive(Debug, Clone, Copy)]
pub struct GcSchedule {
    pub every: Duration,
    /// Reads run at a cut taken when they start; a read that runs longer than this could find a
    /// version it needs already collected.
    pub lag: Duration,
}

/// The HLC timestamp below which versions superseded before it are collected: `lag` behind the
/// wall clock, never above what this node has applied.
pub fn horizon(now_ms: u64, lag: Duration, max_committed_ts: u64) -> u64 {
    let ms = now_ms.saturating_sub(lag.as_millis() as u64);
    (ms << 16).min(max_committed_ts)
}

/// A pass walks every stored version whatever it finds, so its cost grows with the data, not
/// with the writes; passes get at most one part in this many of the node's time.
const DUTY_DIVISOR: u32 = 20;

/// How long to wait after a pass that took `took` before the next: `every`, or longer when the
/// pass was long, so a large store never collects back to back (1M versions take ~1–1.5 s here;
/// 100M would otherwise keep a core busy collecting).
pub fn next_wait(every: Duration, took: Duration) -> Duration {
    every.max(took.saturating_mul(DUTY_DIVISOR))
}

/// Runs passes forever on a blocking thread, one at a time.
pub async fn run(store: Arc<Store>, schedule: GcSchedule) {
    let mut wait = schedule.every;
    loop {
        tokio::time::sleep(wait).await;
        wait = schedule.every;
        let store = store.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let h = horizon(now_ms(), schedule.lag, store.max_committed_ts());
            let started = std::time::Instant::now();
            store.gc_superseded(h).map(|r| (r, started.elapsed()))
        })
        .await;
        match pass {
            Ok(Ok((r, took))) => {
                wait = next_wait(schedule.every, took);
                tracing::info!(
                    scanned = r.versions_scanned,
                    removed = r.versions_removed,
                    ms = took.as_millis() as u64,
                    next_in_s = wait.as_secs(),
                    "mvcc gc pass"
                )
            }
            Ok(Err(e)) => tracing::error!(error = %e, "mvcc gc pass failed; the next pass retries"),
            Err(e) => tracing::error!(error = %e, "mvcc gc task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_trails_the_clock_and_never_passes_the_applied_state() {
        let lag = Duration::from_secs(60);
        assert_eq!(horizon(100_000, lag, u64::MAX), 40_000 << 16);
        assert_eq!(horizon(100_000, lag, 7), 7, "never above what this node applied");
        assert_eq!(horizon(10_000, lag, u64::MAX), 0, "a clock below the lag collects nothing");
    }

    #[test]
    fn long_passes_stretch_the_wait_to_keep_collection_a_twentieth_of_the_time() {
        let every = Duration::from_secs(60);
        assert_eq!(next_wait(every, Duration::from_millis(1500)), every, "a short pass keeps the schedule");
        assert_eq!(next_wait(every, Duration::from_secs(3)), every, "exactly a twentieth");
        assert_eq!(next_wait(every, Duration::from_secs(10)), Duration::from_secs(200));
        assert_eq!(next_wait(every, Duration::MAX), Duration::MAX, "saturates, never wraps");
    }
}
