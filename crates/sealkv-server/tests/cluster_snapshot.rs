//! A follower kept down while the log is purged behind snapshots catches up by snapshot: it
//! installs the leader's spec-format snapshot (sealed values stay sealed, the wrapped DEKs come
//! in its header), reaches the leader's applied index, and then serves in a quorum.

mod common;

use common::*;

fn counts(dir: &std::path::Path) -> serde_json::Value {
    let o = sealkv(&["debug", "counts", "--data-dir", &dir.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn follower_behind_purged_log_catches_up_by_snapshot() {
    let mut c = Cluster::start(3, true, &["--snapshot-every", "40", "--keep-logs", "5"]);
    let leader = c.leader(0);
    let lagger = (0..3).find(|i| *i != leader).unwrap();
    let other = (0..3).find(|i| *i != leader && *i != lagger).unwrap();
    c.kill(lagger);
    for k in 0..120 {
        c.put_retry(&[leader, other], &format!("key{k:03}"), &format!("value-{k}"));
    }
    let start = c.log_text(lagger).len();
    c.spawn(lagger, &[]);
    c.wait_caught_up(leader, lagger);
    let text = c.log_text(lagger)[start..].to_string();
    assert!(text.contains("installed snapshot"), "the lagging node should have caught up by snapshot:\n{text}");

    // It serves in a quorum: with the other follower down, leader + lagger still commit and read.
    c.kill(other);
    c.put_retry(&[leader, lagger], "after", "snapshot");
    assert_eq!(c.get_retry(lagger, "key077").as_deref(), Some("value-77"));
    assert_eq!(c.get_retry(lagger, "after").as_deref(), Some("snapshot"));

    // Its own store holds every value, sealed, under the cluster's storage DEK.
    c.stop_all();
    let n = counts(&c.nodes[lagger].dir);
    assert_eq!(n["cleartext"], 0, "{n}");
    let sealed: u64 = n["by_key_id"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert!(sealed >= 121, "expected ≥ 121 sealed values on the caught-up node, got {n}");
    let ids: Vec<&String> = n["by_key_id"].as_object().unwrap().keys().collect();
    assert_eq!(ids.len(), 1, "one storage DEK in this cluster: {n}");
    assert!(counts(&c.nodes[leader].dir)["by_key_id"].get(ids[0]).is_some(), "same DEK id on the leader");
}
