//! Bounds each node's Raft log in bytes, next to openraft's entry-count policy.
//!
//! Why: the Redis proposer packs up to 8 MiB of commands into one entry, so `--snapshot-every`
//! (entries) alone let a write-heavy node hold gigabytes of log before its first snapshot, and
//! `--keep-logs` entries behind each one. This task asks for a snapshot once the log past the
//! last snapshot reaches `--snapshot-log-mib`, and purges what lies below the snapshot beyond
//! `--keep-log-mib`. Both go through openraft's triggers, so openraft still decides what is safe:
//! it never builds two snapshots at once, never purges past its snapshot, and delays a purge
//! while a replication stream is reading those entries.

use std::time::Duration;

use sealkv_raft::log_store::LogStore;
use sealkv_raft::types::Raft;

/// The two byte budgets of a node's log.
#[derive(Debug, Clone, Copy)]
pub struct LogBudget {
    /// Build a snapshot once the entries past the last one reach this many bytes.
    pub snapshot_after_bytes: u64,
    /// Keep at most this many bytes of entries the last snapshot already covers.
    pub keep_bytes: u64,
}

/// What one check asks openraft to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actions {
    /// The log past the last snapshot reached the snapshot budget.
    pub snapshot: bool,
    /// Purge up to this index to bring what the snapshot covers within the keep budget.
    pub purge_upto: Option<u64>,
}

/// Decides from the log's sizes, the last snapshot's index and the last purged index.
pub fn check(log: &LogStore, budget: LogBudget, snapshot: u64, purged: u64) -> Actions {
    log.sizes(|s| Actions {
        snapshot: s.bytes_after(snapshot) >= budget.snapshot_after_bytes,
        purge_upto: s.purge_point(snapshot, budget.keep_bytes).filter(|&upto| upto > purged),
    })
}

/// Checks twice a second, forever. A trigger fails only when Raft has stopped, and then the
/// node is on its way out anyway.
pub async fn run(raft: Raft, log: LogStore, budget: LogBudget) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The snapshot index when this task last asked for a snapshot, and when: a build takes a
    // while, and asking again before it lands would only repeat the log line.
    let mut asked: Option<(u64, tokio::time::Instant)> = None;
    loop {
        tick.tick().await;
        let (snapshot, purged) = {
            let m = raft.metrics();
            let m = m.borrow();
            (m.snapshot.map_or(0, |l| l.index), m.purged.map_or(0, |l| l.index))
        };
        let act = check(&log, budget, snapshot, purged);
        let waiting = asked.is_some_and(|(at, when)| at == snapshot && when.elapsed() < Duration::from_secs(30));
        if act.snapshot && !waiting {
            asked = Some((snapshot, tokio::time::Instant::now()));
            let bytes = log.sizes(|s| s.bytes_after(snapshot));
            tracing::info!(log_bytes_past_snapshot = bytes, "raft log over --snapshot-log-mib; building a snapshot");
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
        if let Some(upto) = act.purge_upto
            && raft.trigger().purge_log(upto).await.is_err()
        {
            return;
        }
    }
}
