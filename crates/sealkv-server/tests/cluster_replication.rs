//! Writes through any node are readable from every node; SIGKILL of the leader loses no
//! acknowledged write; a restarted follower catches up from the log; and after all of it no
//! `(key id, nonce)` on any node's disk names two different envelopes.

mod common;

use common::*;

#[test]
fn writes_survive_leader_kill_and_followers_catch_up() {
    let mut c = Cluster::start(3, true, &[]);
    let mut acked = Vec::new();
    for k in 0..15 {
        let key = format!("k{k:02}");
        let value = format!("v{k}-{}", "x".repeat(k * 10));
        c.put_retry(&[k % 3], &key, &value);
        acked.push((key, value));
    }
    for i in 0..3 {
        for (k, v) in &acked {
            assert_eq!(c.get_retry(i, k).as_deref(), Some(v.as_str()), "read {k} via n{}", i + 1);
        }
    }

    // SIGKILL the leader: a new one is elected and every acknowledged write is still there.
    let old = c.leader(0);
    c.kill(old);
    let live: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let new = c.leader_other_than(live[0], Some(old));
    assert_ne!(new, old);
    for k in 15..30 {
        let key = format!("k{k:02}");
        let value = format!("after-kill-{k}");
        c.put_retry(&live, &key, &value);
        acked.push((key, value));
    }
    c.put_retry(&live, "k00", "overwritten");
    acked[0].1 = "overwritten".into();
    assert!(c.put(live[0], "gone", "soon"));
    assert!(sealkv(&["kv", "--endpoint", &c.nodes[live[1]].grpc, "del", "gone"]).status.success());
    for (k, v) in &acked {
        assert_eq!(c.get_retry(live[1], k).as_deref(), Some(v.as_str()));
    }
    assert_eq!(c.get_retry(live[0], "gone"), None);

    // The old leader restarts as a follower and catches up from the log.
    c.spawn(old, &[]);
    c.wait_caught_up(new, old);
    for (k, v) in &acked {
        assert_eq!(c.get_retry(old, k).as_deref(), Some(v.as_str()));
    }
    let scan = sealkv(&["kv", "--endpoint", &c.nodes[old].grpc, "scan", "k"]);
    assert_eq!(String::from_utf8(scan.stdout).unwrap().lines().count(), 30);

    // Nonces: after restarts and a leader change, no (key id, nonce) was used for two envelopes.
    c.stop_all();
    let dirs: Vec<_> = c.nodes.iter().map(|n| n.dir.clone()).collect();
    let distinct = assert_no_nonce_reuse(&dirs);
    assert!(distinct > 60, "expected store and raft envelopes on disk, saw {distinct}");
}
