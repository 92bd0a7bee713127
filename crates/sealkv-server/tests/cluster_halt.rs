//! A follower whose log holds a tampered post-cutover entry halts at exactly that index: its
//! applied index does not move, it exits non-zero naming the index, and it halts again at the
//! same index after a restart — while the leader and the other follower keep serving.

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::*;

fn applied(dir: &std::path::Path) -> u64 {
    let o = sealkv(&["debug", "applied", "--data-dir", &dir.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().parse().unwrap()
}

fn wait_for_line(path: &std::path::Path, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(f) = std::fs::File::open(path)
            && BufReader::new(f).lines().map_while(Result::ok).any(|l| l.contains(needle))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn tampered_log_entry_halts_the_follower_at_that_index() {
    let mut c = Cluster::start(3, true, &[]);
    let leader = c.leader(0);
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let other = (0..3).find(|i| *i != leader && *i != victim).unwrap();
    c.put_retry(&[leader], "before", "1");

    // Stop the victim's apply loop at its next batch, let entries reach its log, then kill it.
    c.kill(victim);
    let log_len_before = c.log_text(victim).len();
    c.spawn(victim, &[("SEALKV_FAILPOINT", "raft.apply.before_batch"), ("SEALKV_FAILPOINT_ACTION", "pause")]);
    for k in 0..5 {
        c.put_retry(&[leader], &format!("during{k}"), "v");
    }
    assert!(
        wait_for_line(&c.nodes[victim].log, "failpoint-paused raft.apply.before_batch", Duration::from_secs(30)),
        "victim never reached its apply failpoint:\n{}",
        &c.log_text(victim)[log_len_before..]
    );
    std::thread::sleep(Duration::from_millis(500));
    c.kill(victim);
    let dir = c.nodes[victim].dir.display().to_string();
    let before = applied(&c.nodes[victim].dir);
    let o = sealkv(&["debug", "flip-log-byte", "--data-dir", &dir, "--after", &before.to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bad: u64 = String::from_utf8(o.stdout).unwrap().trim().parse().unwrap();
    assert_eq!(bad, before + 1, "the first unapplied entry should carry a payload");

    for round in 0..2 {
        let start = c.log_text(victim).len();
        c.spawn(victim, &[]);
        let code = c.wait_exit(victim, Duration::from_secs(60));
        let text = c.log_text(victim)[start..].to_string();
        assert!(matches!(code, Some(x) if x != 0), "round {round}: victim should exit non-zero, got {code:?}:\n{text}");
        let needle = format!("apply halted at index {bad}");
        assert!(text.contains(&needle), "round {round}: no halt line naming index {bad}:\n{text}");
        assert!(text.contains("raft envelope"), "round {round}: the reason should name the raft envelope:\n{text}");
        assert_eq!(applied(&c.nodes[victim].dir), before, "round {round}: applied index moved past the halt");
        // The rest of the cluster keeps serving.
        c.put_retry(&[leader, other], &format!("after{round}"), "ok");
        assert_eq!(c.get_retry(other, &format!("after{round}")).as_deref(), Some("ok"));
    }
    assert_eq!(c.get_retry(leader, "during4").as_deref(), Some("v"));
}
