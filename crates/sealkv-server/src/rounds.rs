//! One round shared by concurrent callers: each caller is served by the first round that began
//! after it arrived, so callers that arrive together cost one round, not one each. The leader's
//! ReadIndex quorum round and a follower's ReadIndex call to the leader both work this way.
//!
//! Why "began after it arrived": a round's answer covers what had happened when the round
//! began (a write acknowledged before then is at or below the index it yields). A round already
//! running when a caller arrived may have begun before a write that caller saw acknowledged, so
//! it cannot serve that caller; the next one can.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;

/// Rounds numbered from 1, at most one running at a time.
pub struct SharedRounds<T> {
    /// How many rounds have begun.
    started: AtomicU64,
    /// The number and answer of the last round that succeeded. Held while a round runs, so the
    /// callers that arrive meanwhile wait here, then take that round's answer if it began after
    /// they arrived.
    last: Mutex<(u64, Option<T>)>,
}

impl<T: Clone> Default for SharedRounds<T> {
    fn default() -> Self {
        SharedRounds { started: AtomicU64::new(0), last: Mutex::new((0, None)) }
    }
}

impl<T: Clone> SharedRounds<T> {
    /// The answer of a round that began after this call: the one this call runs (`round`), or
    /// one that another caller ran meanwhile. A failed round serves no one; its caller gets the
    /// error, and the callers waiting behind it run the next round.
    pub async fn run<E, F, Fut>(&self, round: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let arrived = self.started.load(Ordering::Acquire);
        let mut last = self.last.lock().await;
        if last.0 > arrived
            && let Some(answer) = &last.1
        {
            return Ok(answer.clone());
        }
        let id = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        let answer = round().await?;
        *last = (id, Some(answer.clone()));
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn callers_that_arrive_during_a_round_share_the_next_one_never_the_running_one() {
        let rounds = Arc::new(SharedRounds::<u64>::default());
        let ran = Arc::new(AtomicUsize::new(0));
        // A slow first round; ten callers arrive while it runs.
        let first = {
            let (rounds, ran) = (rounds.clone(), ran.clone());
            tokio::spawn(async move {
                rounds
                    .run(|| async move {
                        ran.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, ()>(1)
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut waiters = Vec::new();
        for _ in 0..10 {
            let (rounds, ran) = (rounds.clone(), ran.clone());
            waiters.push(tokio::spawn(async move {
                rounds
                    .run(|| async move {
                        let n = ran.fetch_add(1, Ordering::SeqCst) as u64 + 1;
                        Ok::<_, ()>(n)
                    })
                    .await
            }));
        }
        assert_eq!(first.await.unwrap(), Ok(1));
        for w in waiters {
            // Served by the round after the first: the one that began after they arrived.
            assert_eq!(w.await.unwrap(), Ok(2));
        }
        assert_eq!(ran.load(Ordering::SeqCst), 2, "eleven callers, two rounds");
    }

    #[tokio::test]
    async fn a_failed_round_serves_no_one_and_the_next_caller_runs_its_own() {
        let rounds = SharedRounds::<u64>::default();
        assert_eq!(rounds.run(|| async { Err::<u64, _>("down") }).await, Err("down"));
        assert_eq!(rounds.run(|| async { Ok::<_, &str>(7) }).await, Ok(7));
        // A caller arriving after that round began needs a round of its own.
        assert_eq!(rounds.run(|| async { Ok::<_, &str>(8) }).await, Ok(8));
    }
}
