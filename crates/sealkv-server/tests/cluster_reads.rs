//! The leader's read lease ends: once a quorum has not acknowledged the leader for longer than
//! the lease, reads wait for a quorum round again instead of being served from local state.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_leader_cut_off_from_its_quorum_stops_serving_reads_once_its_lease_ends() {
    let c = Cluster::start(3, false, &[]);
    let leader = c.leader(0);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    c.put_retry(&[leader], "k", "v1");
    assert_eq!(c.get_retry(leader, "k").as_deref(), Some("v1"));

    // Freeze both followers: no quorum can acknowledge the leader any more. Past the read lease
    // (1 s after the last quorum round) a read must not be answered from the leader's state.
    for f in &followers {
        c.signal(*f, "STOP");
    }
    std::thread::sleep(Duration::from_millis(1_500));
    let mut get = Command::new(BIN)
        .args(["kv", "--endpoint", &c.nodes[leader].grpc, "get", "k"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let answered = loop {
        if let Some(st) = get.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if let Some(st) = answered {
        let out = get.wait_with_output().unwrap();
        assert!(
            !st.success(),
            "a leader without a quorum answered a read after its lease ended: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        let _ = get.kill();
        let _ = get.wait();
    }

    // The quorum comes back: reads are served again, with the acknowledged value.
    for f in &followers {
        c.signal(*f, "CONT");
    }
    assert_eq!(c.get_retry(leader, "k").as_deref(), Some("v1"));
}
