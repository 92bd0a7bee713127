//! The leader's expiry sweep: expired keys already read as absent everywhere; this removes them
//! from disk through Raft (an internal `__EXPIREDEL` command, which re-checks at apply that each
//! key is still due, so a TTL changed meanwhile is respected).

use std::sync::Arc;
use std::time::Duration;

use sealkv_redis::layout;
use sealkv_redis::{Group, Reply};
use sealkv_store::{Direction, KeyRange};

use super::Core;
use crate::coordinator::now_ms;

/// How often the leader looks for due keys.
const EVERY: Duration = Duration::from_millis(250);
/// The most keys one sweep entry removes.
const PER_ROUND: usize = 512;

/// Runs forever; does work only while this node leads.
pub async fn run(core: Arc<Core>) {
    loop {
        tokio::time::sleep(EVERY).await;
        if !matches!(core.coordinator.leader_elsewhere(), Ok(None)) || !core.coordinator.is_open() {
            continue;
        }
        let due = due_keys(&core, now_ms());
        if due.is_empty() {
            continue;
        }
        let n = due.len() / 2;
        let mut args = vec![b"__expiredel".to_vec()];
        args.extend(due);
        match core.proposer.submit(vec![Group::single(args)]).await {
            Ok(r) => {
                if let Some(Reply::Int(removed)) = r.first() {
                    tracing::debug!(due = n, removed, "expiry sweep");
                }
            }
            Err(e) => tracing::debug!(error = %e, "expiry sweep not proposed; retrying next round"),
        }
    }
}

/// `ms, key` pairs of due expiry index entries, oldest first.
fn due_keys(core: &Core, now: u64) -> Vec<Vec<u8>> {
    let (lo, hi) = layout::expiry_due(now);
    let mut out = Vec::new();
    for item in core.shared.store.scan(&KeyRange::Bounds(lo, hi), u64::MAX, 0, Direction::Forward).take(PER_ROUND) {
        let Ok((k, _)) = item else { break };
        if let Some((ms, key)) = layout::split_expiry(&k) {
            out.push(ms.to_string().into_bytes());
            out.push(key.to_vec());
        }
    }
    out
}
