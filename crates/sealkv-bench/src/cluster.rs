//! A `sealkv dev` cluster run as a child process for the length of one measurement.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running `sealkv dev`.
pub struct DevCluster {
    child: Child,
    /// The leader's gRPC address from the `ready` line.
    pub leader: String,
}

impl DevCluster {
    /// Starts `sealkv dev` and waits for its `ready` line.
    pub fn start(sealkv: &Path, dir: &Path, nodes: u16, grpc_port: u16, encrypted: bool) -> anyhow::Result<Self> {
        let mut cmd = Command::new(sealkv);
        cmd.arg("dev")
            .arg("--dir")
            .arg(dir)
            .arg("--nodes")
            .arg(nodes.to_string())
            .arg("--grpc-port")
            .arg(grpc_port.to_string())
            .arg("--redis-port")
            .arg((grpc_port + 100).to_string())
            .arg("--metrics-port")
            .arg((grpc_port + 200).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if !encrypted {
            cmd.arg("--no-encryption");
        }
        let mut child = cmd.spawn().with_context(|| format!("cannot run {}", sealkv.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut lines = BufReader::new(stdout).lines();
        let ready = loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("ready") => break l,
                Some(Ok(_)) => {}
                _ => bail!("sealkv dev exited before it was ready; see {}/nN.log", dir.display()),
            }
            if Instant::now() > deadline {
                bail!("sealkv dev was not ready within 180 s");
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let field =
            |k: &str| ready.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_owned).unwrap_or_default();
        let nodes: Vec<String> = field("grpc=").split(',').map(str::to_owned).collect();
        let leader_name = field("leader=");
        let leader = leader_name
            .strip_prefix('n')
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| nodes.get(i - 1).cloned())
            .with_context(|| format!("cannot find the leader's address in {ready:?}"))?;
        Ok(DevCluster { child, leader })
    }

    /// SIGTERM, then waits for every node to stop.
    pub fn stop(mut self) -> anyhow::Result<()> {
        // kill(1) rather than libc::kill keeps this crate free of unsafe.
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status()?;
        self.child.wait()?;
        Ok(())
    }
}

/// The `sealkv` binary next to this one (both are built into the same target directory).
pub fn sibling_sealkv() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let p = me.with_file_name("sealkv");
    if !p.exists() {
        bail!("{} not found; build it first: cargo build --release -p sealkv-server", p.display());
    }
    Ok(p)
}
