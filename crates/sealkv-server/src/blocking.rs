//! Runs synchronous work that can take long (a Redis read that walks a collection or the
//! keyspace) without stalling the node's other async tasks.
//!
//! Why: a node runs its Raft core, replication streams, gRPC server and Redis connections on a
//! runtime with one worker thread per core. Work done inline on a worker holds that worker's
//! queued tasks until it returns; with two workers, two `KEYS *` over a million keys leave
//! nothing to send heartbeats or answer AppendEntries (whose per-RPC timeout is one heartbeat
//! interval, 150 ms) for seconds. `block_in_place` hands the worker's queue to another thread
//! for the duration, so those tasks keep running.
//!
//! It is not free: the hand-off wakes a thread. Wrapping every log fsync and apply batch in it
//! cost about 15% more CPU per request at `SET -P 1` (measured), so the write path stays inline
//! and only reads that may take long come here ([`sealkv_redis::machine::may_take_long`]).

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f` on the current thread, first handing this worker's other tasks to another thread
/// when called on a multi-thread runtime's worker. Anywhere else (a current-thread runtime, as
/// in `#[tokio::test]`, a blocking-pool thread, no runtime) it simply calls `f`.
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::run;

    #[test]
    fn outside_a_runtime_it_just_calls() {
        assert_eq!(run(|| 7), 7);
    }

    #[tokio::test]
    async fn on_a_current_thread_runtime_it_just_calls() {
        assert_eq!(run(|| 8), 8);
    }

    /// On the runtime's only worker, a task queued there before the blocking call still runs
    /// while it blocks: the worker's queue moved to another thread. Inline, the task would wait
    /// for the call to return, and the call would give up waiting for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn on_a_worker_other_tasks_keep_running_while_it_blocks() {
        let observed = tokio::spawn(async {
            let ran = Arc::new(AtomicBool::new(false));
            let seen = ran.clone();
            tokio::spawn(async move { seen.store(true, Ordering::SeqCst) });
            run(|| {
                let deadline = Instant::now() + Duration::from_secs(3);
                while !ran.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                ran.load(Ordering::SeqCst)
            })
        })
        .await
        .expect("the blocking task panicked");
        assert!(observed, "the queued task did not run while the worker blocked");
    }
}
