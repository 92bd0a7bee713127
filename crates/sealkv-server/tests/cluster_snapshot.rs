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

/// Restarts `lagger` and waits until it applied what `leader` had, asserting that it got there
/// by installing a snapshot (its log was purged past it).
fn restart_and_expect_snapshot(c: &mut Cluster, leader: usize, lagger: usize) {
    let start = c.log_text(lagger).len();
    c.spawn(lagger, &[]);
    c.wait_caught_up(leader, lagger);
    let text = c.log_text(lagger)[start..].to_string();
    assert!(text.contains("installed snapshot"), "the lagging node should have caught up by snapshot:\n{text}");
}

/// Puts `keyNNN = value-N` for every N in `range` through the live nodes.
fn put_range(c: &Cluster, live: &[usize], range: std::ops::Range<u32>) {
    for k in range {
        c.put_retry(live, &format!("key{k:03}"), &format!("value-{k}"));
    }
}

#[test]
fn follower_behind_purged_log_catches_up_by_snapshot() {
    let mut c = Cluster::start(3, true, &["--snapshot-every", "40", "--keep-logs", "5"]);
    let leader = c.leader(0);
    let lagger = (0..3).find(|i| *i != leader).unwrap();
    let other = (0..3).find(|i| *i != leader && *i != lagger).unwrap();
    c.kill(lagger);
    put_range(&c, &[leader, other], 0..120);
    restart_and_expect_snapshot(&mut c, leader, lagger);

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

fn active(c: &Cluster, via: usize, node: &str) -> (u64, u64) {
    let n = c.encryption_of(via, node);
    (n["active_storage"].as_u64().unwrap(), n["active_raft"].as_u64().unwrap())
}

/// Both DEKs are rotated while a follower is down and the log is purged past the rotations: the
/// follower gets the new DEKs from the snapshot header (no manual step), reads values sealed
/// under the old and the new storage DEK, unwraps entries wrapped under the new raft DEK, seals
/// its own new values under the new storage DEK, and registers itself for the new DEKs.
#[test]
fn follower_catches_up_by_snapshot_across_a_key_rotation_it_never_saw() {
    let mut c = Cluster::start(3, true, &["--snapshot-every", "40", "--keep-logs", "5"]);
    let leader = c.leader(0);
    let lagger = (0..3).find(|i| *i != leader).unwrap();
    let other = (0..3).find(|i| *i != leader && *i != lagger).unwrap();
    let lag_name = c.nodes[lagger].name.clone();
    let (old_storage, old_raft) = active(&c, leader, &lag_name);
    c.kill(lagger);
    put_range(&c, &[leader, other], 0..60);
    let rotated: serde_json::Value = serde_json::from_str(
        &c.admin_retry(&[leader, other], &["encryption", "rotate-dek", "--purpose", "storage", "--json"]),
    )
    .unwrap();
    let new_storage = rotated["dek_id"].as_u64().unwrap();
    let rotated: serde_json::Value = serde_json::from_str(
        &c.admin_retry(&[leader, other], &["encryption", "rotate-dek", "--purpose", "raft", "--json"]),
    )
    .unwrap();
    let new_raft = rotated["dek_id"].as_u64().unwrap();
    assert!(new_storage != old_storage && new_raft != old_raft);
    put_range(&c, &[leader, other], 60..120);

    restart_and_expect_snapshot(&mut c, leader, lagger);
    assert_eq!(active(&c, lagger, &lag_name), (new_storage, new_raft), "new DEKs came with the snapshot");

    // In a quorum with the leader alone it must unwrap new-raft-DEK entries and seal new values.
    c.kill(other);
    c.put_retry(&[leader, lagger], "after", "rotation");
    assert_eq!(c.get_retry(lagger, "key010").as_deref(), Some("value-10"), "old storage DEK still reads");
    assert_eq!(c.get_retry(lagger, "key100").as_deref(), Some("value-100"));
    assert_eq!(c.get_retry(lagger, "after").as_deref(), Some("rotation"));

    // Path (c): it registered itself for both new DEKs.
    let me16 = sealkv_crypto::node16(sealkv_crypto::full_node_id(&lag_name)) as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s = c.encryption(leader);
        let rows = s["registry"].as_array().unwrap().clone();
        let has = |dek: u64| rows.iter().any(|r| r["dek_id"] == dek && r["node16"] == me16);
        if has(new_storage) && has(new_raft) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the lagger never registered for the new DEKs: {s}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    c.stop_all();
    let n = counts(&c.nodes[lagger].dir);
    assert_eq!(n["cleartext"], 0, "{n}");
    let by = n["by_key_id"].as_object().unwrap();
    assert!(by.get(&old_storage.to_string()).is_some_and(|v| v.as_u64().unwrap() >= 60), "old-DEK values kept: {n}");
    assert!(by.get(&new_storage.to_string()).is_some_and(|v| v.as_u64().unwrap() >= 61), "new-DEK values: {n}");
    let dirs: Vec<_> = c.nodes.iter().map(|n| n.dir.clone()).collect();
    assert!(assert_no_nonce_reuse(&dirs) > 0);
}
