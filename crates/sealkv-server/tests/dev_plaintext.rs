//! `sealkv dev`: prints `ready`, stops cleanly on SIGTERM, and leaves no plaintext canary in
//! any file under its directory — while the same run with `--no-encryption` does (so the check
//! can see plaintext).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn run_dev(encrypted: bool) -> Vec<std::path::PathBuf> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let base = free_ports(12); // gRPC on base..+2, Redis on base+4.., metrics on base+8..
    let mut cmd = Command::new(BIN);
    cmd.args(["dev", "--dir", &dir.display().to_string(), "--grpc-port", &base.to_string()]);
    cmd.args(["--redis-port", &(base + 4).to_string(), "--metrics-port", &(base + 8).to_string()]);
    if !encrypted {
        cmd.arg("--no-encryption");
    }
    let errfile = tmp.path().join("dev.stderr");
    let mut child = Dev(cmd.stdout(Stdio::piped()).stderr(std::fs::File::create(&errfile).unwrap()).spawn().unwrap());
    let child = &mut child.0;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("ready"),
        "expected a ready line, got {line:?}; stderr: {}\nnode logs:\n{}",
        std::fs::read_to_string(&errfile).unwrap_or_default(),
        (1..=3)
            .map(|i| tail(&std::fs::read_to_string(dir.join(format!("n{i}.log"))).unwrap_or_default(), 8))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(line.contains(if encrypted { "encryption=storage+raft" } else { "encryption=off" }), "{line}");
    let grpc = format!("127.0.0.1:{base}");
    let canaries: Vec<String> = (0..20).map(|i| format!("CANARY{i:02}-{:016x}", rand_u64(i))).collect();
    for (i, v) in canaries.iter().enumerate() {
        let endpoint = format!("127.0.0.1:{}", base + (i % 3) as u16);
        // `ready` means a leader was elected; on a loaded machine another election can follow.
        let o = sealkv_retrying(&["kv", "--endpoint", &endpoint, "put", &format!("key{i}"), v]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = sealkv_retrying(&["kv", "--endpoint", &grpc, "get", "key7"]);
    assert_eq!(String::from_utf8(o.stdout).unwrap(), canaries[7]);
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "sealkv dev did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "sealkv dev exited with {status}");
    // Every canary starts with the same tag, and a file holding any canary holds the tag: one
    // pass per file finds them all.
    let found = files_containing(&dir, b"CANARY");
    assert!(found.iter().all(|f| !f.ends_with("kek.bin")));
    found
}

/// Stops `sealkv dev` with SIGTERM (so it stops its nodes) even when the test fails.
struct Dev(std::process::Child);

impl Drop for Dev {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
            let _ = self.0.wait();
        }
    }
}

fn rand_u64(i: u64) -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    (t ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17)
}

#[test]
fn encrypted_dev_cluster_leaves_no_plaintext_and_cleartext_one_does() {
    let found = run_dev(true);
    assert!(found.is_empty(), "plaintext canaries on disk: {found:?}");
    let found = run_dev(false);
    assert!(!found.is_empty(), "the check found no canary in a cleartext cluster, so it cannot see plaintext");
}
