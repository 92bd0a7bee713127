//! Membership changes on an encrypted cluster (spec 03 §3 path d) and the restart epoch fence.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn node16_of(name: &str) -> u64 {
    u64::from(sealkv_crypto::node16(sealkv_crypto::full_node_id(name)))
}

fn registered(status: &serde_json::Value, dek: u64, name: &str) -> Option<u64> {
    let n16 = node16_of(name);
    status["registry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dek_id"] == dek && r["node16"] == n16)
        .map(|r| r["last_seen_epoch"].as_u64().unwrap())
}

fn node<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["nodes"].as_array().unwrap().iter().find(|n| n["id"] == name).unwrap_or_else(|| panic!("{status}"))
}

fn local_epoch(status: &serde_json::Value, name: &str, dek: u64) -> u64 {
    node(status, name)["keys"].as_array().unwrap().iter().find(|k| k["id"] == dek).unwrap()["local_epoch"]
        .as_u64()
        .unwrap()
}

/// An encryption-capable node is registered for every DEK before it joins, catches up, can be
/// promoted and serves in a quorum; a node without encryption is refused with
/// `PeerNotEncryptionCapable` and never becomes a member.
#[test]
fn encrypted_cluster_admits_capable_nodes_and_refuses_plain_ones() {
    let mut c = Cluster::start(3, true, &[]);
    let leader = c.leader(0);
    for k in 0..10 {
        c.put_retry(&[leader], &format!("k{k}"), &format!("v{k}"));
    }
    let n4 = c.start_joiner("n4", false);
    let addr = c.nodes[n4].grpc.clone();
    c.admin_retry(&[leader], &["cluster", "add-learner", "n4", &addr]);
    let s = c.encryption(leader);
    let (storage, raft) =
        (node(&s, "n1")["active_storage"].as_u64().unwrap(), node(&s, "n1")["active_raft"].as_u64().unwrap());
    assert!(
        registered(&s, storage, "n4").is_some() && registered(&s, raft, "n4").is_some(),
        "n4 registered before joining: {s}"
    );
    c.wait_caught_up(leader, n4);
    c.admin_retry(&[leader], &["cluster", "promote", "n4"]);
    c.wait_status(leader, "n4 a voter", |s| {
        s["members"].as_array().unwrap().iter().any(|m| m["id"] == "n4" && m["voter"] == true)
    });
    // With one original follower down, n4 is needed for the quorum.
    let down = (0..3).find(|i| *i != leader).unwrap();
    c.kill(down);
    c.put_retry(&[leader, n4], "joined", "yes");
    assert_eq!(c.get_retry(n4, "joined").as_deref(), Some("yes"));
    assert_eq!(c.get_retry(n4, "k3").as_deref(), Some("v3"));
    c.spawn(down, &[]);

    // A plain node is refused, with the error naming what to do, and is not added.
    let n5 = c.start_joiner("n5", true);
    let addr5 = c.nodes[n5].grpc.clone();
    let o = c.admin(leader, &["cluster", "add-learner", "n5", &addr5]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("PeerNotEncryptionCapable") && err.contains("--encryption-enabled"), "{err}");
    let st = c.status(leader).unwrap();
    assert!(!st["members"].as_array().unwrap().iter().any(|m| m["id"] == "n5"), "{st}");
    // A candidate that is not running is refused too (no capability report).
    let o = c.admin(leader, &["cluster", "add-learner", "n6", "127.0.0.1:1"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("PeerNotEncryptionCapable"));

    // n4 leaves; a fresh data dir under the same --node-id would restart at epoch 0 under DEKs
    // it already sealed with, so it is refused; its old data dir may come back.
    c.admin_retry(&[leader], &["cluster", "remove", "n4"]);
    c.kill(n4);
    let kept = c.tmp.path().join("n4-kept");
    std::fs::rename(&c.nodes[n4].dir, &kept).unwrap();
    c.spawn(n4, &[]);
    c.wait_up(n4);
    let o = c.admin(leader, &["cluster", "add-learner", "n4", &addr]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("PeerNotEncryptionRegistered") && err.contains("another --node-id"), "{err}");
    c.kill(n4);
    std::fs::remove_dir_all(&c.nodes[n4].dir).unwrap();
    std::fs::rename(&kept, &c.nodes[n4].dir).unwrap();
    c.spawn(n4, &[]);
    c.wait_up(n4);
    c.admin_retry(&[leader], &["cluster", "add-learner", "n4", &addr]);
    c.wait_caught_up(leader, n4);

    c.stop_all();
    let dirs: Vec<_> = c.nodes.iter().filter(|n| n.name != "n5").map(|n| n.dir.clone()).collect();
    assert!(assert_no_nonce_reuse(&dirs) > 0);
}

/// A data dir restored from a copy taken before a later run passes the local guards (its own
/// registry copy is as old as its sidecar), but the epoch fence asks the peers, sees that the
/// cluster registered a higher epoch for it, and lifts its epochs above that before it applies
/// or seals anything. Without the fence it would reuse the later run's nonces.
#[test]
fn restored_data_dir_is_fenced_above_the_clusters_epochs() {
    let mut c = Cluster::start(3, true, &[]);
    let leader = c.leader(0);
    let f = (0..3).find(|i| *i != leader).unwrap();
    let name = c.nodes[f].name.clone();
    let storage = c.encryption_of(leader, &name)["active_storage"].as_u64().unwrap();

    // Stop it cleanly and keep a copy of its data dir (the "backup").
    c.kill(f);
    let backup = c.tmp.path().join("backup");
    copy_dir(&c.nodes[f].dir, &backup);
    let backup_epoch = local_epoch_on_disk(&backup, storage);

    // Two more runs: each bumps and registers a new epoch; writes are sealed under them.
    for run in 0..2 {
        c.spawn(f, &[]);
        wait_registered_at_least(&c, leader, storage, &name, backup_epoch + 1 + run);
        c.put_retry(&[leader], &format!("run{run}"), "x");
        c.wait_caught_up(leader, f);
        c.kill(f);
    }
    let seen = registered(&c.encryption(leader), storage, &name).unwrap();
    assert!(seen >= backup_epoch + 2, "the cluster saw epoch {seen}");

    // Restore the backup over the data dir and start it.
    std::fs::remove_dir_all(&c.nodes[f].dir).unwrap();
    copy_dir(&backup, &c.nodes[f].dir);
    let start = c.log_text(f).len();
    c.spawn(f, &[]);
    wait_registered_at_least(&c, leader, storage, &name, seen + 1);
    let text = c.log_text(f)[start..].to_string();
    assert!(text.contains("epoch fence"), "the fence should have raised the epochs:\n{text}");
    let e = local_epoch(&c.encryption(f), &name, storage);
    assert!(e > seen, "local epoch {e} must be above the cluster's {seen}");
    c.put_retry(&[leader], "after-restore", "y");
    c.wait_caught_up(leader, f);
    c.stop_all();
    let dirs: Vec<_> = c.nodes.iter().map(|n| n.dir.clone()).collect();
    assert!(assert_no_nonce_reuse(&dirs) > 0);
}

fn wait_registered_at_least(c: &Cluster, leader: usize, dek: u64, name: &str, epoch: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if registered(&c.encryption(leader), dek, name).is_some_and(|e| e >= epoch) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never registered epoch {epoch}; logs:\n{}", c.all_logs());
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn local_epoch_on_disk(data_dir: &std::path::Path, dek: u64) -> u64 {
    let sc = sealkv_crypto::sidecar::Sidecar::load(&sealkv_crypto::sidecar::Sidecar::dir(data_dir)).unwrap().unwrap();
    u64::from(sc.local_epoch(u32::try_from(dek).unwrap()))
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let o = std::process::Command::new("cp").arg("-a").arg(from).arg(to).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
