//! The leader's expiry sweep: expired keys already read as absent everywhere; this removes them
//! from disk through Raft (an internal `__EXPIREDEL` command, which re-checks at apply that each
//! key is still due, so a TTL changed meanwhile is respected).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sealkv_redis::layout;
use sealkv_redis::{Group, Reply};
use sealkv_store::{Direction, KeyRange};

use super::Core;
use crate::coordinator::now_ms;

/// How often the leader looks for due keys when the last round found them all.
const EVERY: Duration = Duration::from_millis(250);
/// The most keys one sweep entry removes.
const PER_ROUND: usize = 512;

/// Runs forever; does work only while this node leads.
pub async fn run(core: Arc<Core>) {
    let mut wait = EVERY;
    loop {
        tokio::time::sleep(wait).await;
        wait = EVERY;
        if !matches!(core.coordinator.leader_elsewhere(), Ok(None)) || !core.coordinator.is_open() {
            continue;
        }
        let started = Instant::now();
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
                wait = next_wait(n, started.elapsed());
            }
            Err(e) => tracing::debug!(error = %e, "expiry sweep not proposed; retrying next round"),
        }
    }
}

/// After a round that found `found` due keys and took `took` (scan, proposal and apply): a full
/// round means more are due, so the next one follows after three times as long as this one took,
/// at most [`EVERY`]. A fixed pace (512 every 250 ms is 2048 a second) would let keys that expire
/// faster pile up on disk; going at once would take the write pipeline from clients (measured:
/// SET at 45% of its rate while a wave of 150,000 expired keys was swept). Waiting 3× keeps the
/// sweep's entry in the pipeline at most a quarter of the time, as Redis bounds its active expiry
/// to 25% of its time, and a loaded cluster, where rounds take longer, is swept more slowly.
fn next_wait(found: usize, took: Duration) -> Duration {
    if found >= PER_ROUND { took.saturating_mul(3).min(EVERY) } else { EVERY }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_round_is_followed_after_three_times_its_length_and_a_partial_one_waits() {
        let ms = Duration::from_millis;
        assert_eq!(next_wait(PER_ROUND, ms(5)), ms(15));
        assert_eq!(next_wait(PER_ROUND, ms(200)), EVERY, "never slower than the fixed pace");
        assert_eq!(next_wait(PER_ROUND - 1, ms(5)), EVERY);
        assert_eq!(next_wait(0, ms(1)), EVERY);
    }
}
