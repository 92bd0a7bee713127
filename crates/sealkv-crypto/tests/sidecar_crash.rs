//! Crash durability of the sidecar write: a child process is SIGKILLed at every step of the
//! durable-write sequence; the file left behind is always the old or the new sidecar, whole.
//!
//! The child is this same test binary re-run with `SEALKV_SIDECAR_CHILD_DIR` set and a failpoint
//! armed in pause mode; it writes the "new" sidecar, stops at the failpoint, and the parent kills
//! it with SIGKILL there.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use sealkv_crypto::Purpose;
use sealkv_crypto::sidecar::{ActiveIds, KeyRecord, Sidecar};

const STEPS: [&str; 6] = [
    "sidecar.before_tmp_remove",
    "sidecar.after_tmp_create",
    "sidecar.after_tmp_write",
    "sidecar.after_tmp_fsync",
    "sidecar.after_rename",
    "sidecar.after_dir_fsync",
];

fn sidecar(index: u64, epoch: u32) -> Sidecar {
    let mut s = Sidecar { raft_applied_index: index, ..Sidecar::default() };
    s.active = ActiveIds { storage: 5, raft: 6 };
    for (id, p) in [(5, Purpose::Storage), (6, Purpose::Raft)] {
        s.keys.insert(
            id,
            KeyRecord {
                purpose: p,
                wrapped: vec![id as u8; 60],
                created: "2026-11-22T10:00:00Z".into(),
                local_epoch: epoch,
                retired: false,
            },
        );
    }
    s
}

fn old() -> Sidecar {
    sidecar(10, 1)
}

fn new() -> Sidecar {
    // Large enough that a torn write would be visible as invalid JSON.
    let mut s = sidecar(20, 2);
    for i in 100..400u32 {
        s.keys.insert(
            i,
            KeyRecord {
                purpose: Purpose::Storage,
                wrapped: vec![7; 60],
                created: "2026-11-22T10:00:00Z".into(),
                local_epoch: 2,
                retired: true,
            },
        );
    }
    s
}

/// Child mode: write `new()` into the directory the parent named. In a normal test run (no env
/// var) it checks the same write in-process instead.
#[test]
fn sidecar_write_child_or_inprocess() {
    match std::env::var_os("SEALKV_SIDECAR_CHILD_DIR") {
        Some(dir) => {
            new().store(Path::new(&dir)).unwrap();
            println!("child-done");
        }
        None => {
            let dir = tempfile::tempdir().unwrap();
            old().store(dir.path()).unwrap();
            new().store(dir.path()).unwrap();
            assert_eq!(Sidecar::load(dir.path()).unwrap().unwrap(), new());
        }
    }
}

#[test]
fn kill_at_every_step_leaves_old_or_new() {
    let exe = std::env::current_exe().unwrap();
    for (i, step) in STEPS.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        old().store(dir.path()).unwrap();
        let mut child = Command::new(&exe)
            .args(["--exact", "sidecar_write_child_or_inprocess", "--nocapture", "--test-threads=1"])
            .env("SEALKV_SIDECAR_CHILD_DIR", dir.path())
            .env("SEALKV_FAILPOINT", step)
            .env("SEALKV_FAILPOINT_ACTION", "pause")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let reached = lines.any(|l| l.is_ok_and(|l| l.contains(&format!("failpoint-paused {step}"))));
        assert!(reached, "child never reached {step}");
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success());

        let after = Sidecar::load(dir.path()).unwrap().expect("keys.json must survive every crash");
        let expect_new = i >= 4; // after the rename the new content is in place
        if expect_new {
            assert_eq!(after, new(), "step {step}");
        } else {
            assert_eq!(after, old(), "step {step}");
        }
        // The next write heals whatever temp file the crash left.
        new().store(dir.path()).unwrap();
        assert_eq!(Sidecar::load(dir.path()).unwrap().unwrap(), new());
        assert!(!dir.path().join("keys.json.tmp").exists());
    }
}
