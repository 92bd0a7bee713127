//! Every node collects superseded versions on its own schedule: overwritten and deleted values
//! leave the disk on every replica, while each key's newest version (a tombstone included) stays,
//! so reads and applies give the same answers everywhere.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn gc_passes(c: &Cluster, i: usize) -> usize {
    c.log_text(i).matches("mvcc gc pass").count()
}

#[test]
fn superseded_versions_leave_every_node_and_the_newest_stay() {
    let mut c = Cluster::start(3, true, &["--gc-every-secs=1", "--gc-lag-secs=0"]);
    let leader = c.leader(0);
    for n in 0..20 {
        c.put_retry(&[leader], "k", &format!("value-{n}-{}", "x".repeat(200)));
    }
    for n in 0..5 {
        c.put_retry(&[leader], "gone", &format!("old-{n}"));
    }
    assert!(sealkv(&["kv", "--endpoint", &c.nodes[leader].grpc, "del", "gone"]).status.success());
    for i in 0..3 {
        c.wait_caught_up(leader, i);
    }

    // Two more passes everywhere: at least one started after the last write.
    let before: Vec<usize> = (0..3).map(|i| gc_passes(&c, i)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..3).any(|i| gc_passes(&c, i) < before[i] + 2) {
        assert!(Instant::now() < deadline, "GC passes did not run:\n{}", c.all_logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..3 {
        assert_eq!(c.get_retry(i, "k").as_deref(), Some(format!("value-19-{}", "x".repeat(200)).as_str()));
        assert_eq!(c.get_retry(i, "gone"), None);
    }
    c.stop_all();

    for i in 0..3 {
        let o = sealkv(&["debug", "counts", "--data-dir", &c.nodes[i].dir.display().to_string()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let counts: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let sealed: u64 = counts["by_key_id"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(sealed, 1, "n{}: only k's newest value should be left: {counts}", i + 1);
        assert_eq!(counts["cleartext"], 0, "n{}: {counts}", i + 1);
        assert_eq!(counts["tombstones"], 1, "n{}: gone's tombstone stays: {counts}", i + 1);
    }
}
