//! Each startup guard that can be triggered from outside makes `sealkv server` exit non-zero
//! with its own message: sidecar without the flag, flag without a KEK, wrong KEK, exhausted
//! epoch, sidecar behind the log.

mod common;

use std::time::Duration;

use common::*;

fn run_refused(c: &mut Cluster, args: Vec<String>) -> String {
    let o = std::process::Command::new(BIN).args(&args).output().unwrap();
    assert!(!o.status.success(), "server should refuse to start with {args:?}");
    let _ = c;
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn without(args: &[String], drop: &[&str], drop_with_value: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        if drop_with_value.contains(&a.as_str()) {
            skip = true;
            continue;
        }
        if !drop.contains(&a.as_str()) {
            out.push(a.clone());
        }
    }
    out
}

#[test]
fn startup_guards_refuse_with_distinct_messages() {
    let mut c = Cluster::start(1, true, &[]);
    c.put_retry(&[0], "k", "v");
    c.stop_all();
    let args = c.server_args(0);
    let sidecar = c.nodes[0].dir.join("encryption/keys.json");
    let original = std::fs::read_to_string(&sidecar).unwrap();

    let e = run_refused(&mut c, without(&args, &["--encryption-enabled", "--encrypt-from-birth"], &["--kek-file"]));
    assert!(e.contains("SidecarPresentWithoutFlag"), "{e}");

    let e = run_refused(&mut c, without(&args, &["--encrypt-from-birth"], &["--kek-file"]));
    assert!(e.contains("KekRequired"), "{e}");

    let wrong = c.tmp.path().join("wrong-kek.bin");
    write_kek(&wrong, 0x5a);
    let mut a = without(&args, &[], &["--kek-file"]);
    a.extend(["--kek-file".into(), wrong.display().to_string()]);
    let e = run_refused(&mut c, a);
    assert!(e.contains("KekMismatch"), "{e}");

    let mut sc: serde_json::Value = serde_json::from_str(&original).unwrap();
    let active = sc["active"]["storage"].as_u64().unwrap().to_string();
    sc["keys"][&active]["local_epoch"] = 65535.into();
    std::fs::write(&sidecar, serde_json::to_vec(&sc).unwrap()).unwrap();
    let e = run_refused(&mut c, args.clone());
    assert!(e.contains("LocalEpochExhausted"), "{e}");

    let mut sc: serde_json::Value = serde_json::from_str(&original).unwrap();
    // The sidecar write of the enable-raft-envelope entry was lost: the sidecar claims less than
    // the log, and the gap holds an entry that changes it.
    let cutover = sc["raft_envelope_cutover_index"].as_u64().unwrap();
    sc["raft_applied_index"] = (cutover - 1).into();
    sc["raft_envelope_cutover_index"] = 0.into();
    std::fs::write(&sidecar, serde_json::to_vec(&sc).unwrap()).unwrap();
    let e = run_refused(&mut c, args.clone());
    assert!(e.contains("SidecarBehindRaftLog"), "{e}");

    // With the sidecar restored the node starts again and still serves its data.
    std::fs::write(&sidecar, &original).unwrap();
    c.spawn(0, &[]);
    assert_eq!(c.get_retry(0, "k").as_deref(), Some("v"));
    assert_eq!(c.wait_exit(0, Duration::from_millis(10)), None);
}
