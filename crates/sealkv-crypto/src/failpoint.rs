//! Crash-test hooks: named points in multi-step durable operations where a test can stop the
//! process.
//!
//! Set `SEALKV_FAILPOINT=<name>` to act at that point. With `SEALKV_FAILPOINT_ACTION=pause` the
//! process prints `failpoint-paused <name>` on stdout and sleeps forever, so a parent can
//! `SIGKILL` it at exactly that step; any other action (or none) aborts the process. Unset, a
//! hit costs one atomic load and a string compare.

use std::io::Write;
use std::sync::OnceLock;

struct Armed {
    name: String,
    pause: bool,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let name = std::env::var("SEALKV_FAILPOINT").ok()?;
            let pause = std::env::var("SEALKV_FAILPOINT_ACTION").is_ok_and(|a| a == "pause");
            Some(Armed { name, pause })
        })
        .as_ref()
}

/// Stops the process here if the failpoint `name` is armed; does nothing otherwise.
pub fn hit(name: &str) {
    let Some(armed) = armed() else { return };
    if armed.name != name {
        return;
    }
    if armed.pause {
        let mut out = std::io::stdout().lock();
        // Best effort: if stdout is gone the parent cannot see us anyway.
        let _ = writeln!(out, "failpoint-paused {name}");
        let _ = out.flush();
        drop(out);
        loop {
            std::thread::park();
        }
    }
    std::process::abort();
}
