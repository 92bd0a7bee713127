//! `sealkv dev`: a local cluster of real `sealkv server` processes for trying sealkv out.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::process::{Child, Command};

use crate::api::{self, Request, Response};

/// `sealkv dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Where the nodes' data dirs (n1, n2, …) and the dev KEK live.
    #[arg(long, default_value = "./sealkv-dev")]
    dir: PathBuf,
    /// Redis port of node 1 (node i listens on this + i - 1).
    #[arg(long, default_value_t = 6379)]
    redis_port: u16,
    /// gRPC port of node 1.
    #[arg(long, default_value_t = 7379)]
    grpc_port: u16,
    /// Metrics port of node 1.
    #[arg(long, default_value_t = 9379)]
    metrics_port: u16,
    /// A cleartext cluster, for comparison.
    #[arg(long)]
    no_encryption: bool,
    /// Extra flags passed to every `sealkv server` (e.g. `--snapshot-every=100`).
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
}

/// Creates the dev KEK (32 random bytes, 0600) unless it exists.
fn ensure_kek(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    sealkv_crypto::cipher::random_fill(bytes.as_mut()).context("cannot draw random KEK bytes")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes.as_ref())?;
    f.sync_all()?;
    Ok(())
}

fn port(base: u16, i: u16) -> anyhow::Result<u16> {
    base.checked_add(i).context("port out of range")
}

/// Runs the dev cluster until SIGINT/SIGTERM.
pub async fn run(a: DevArgs) -> anyhow::Result<()> {
    if a.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("cannot create --dir {}", a.dir.display()))?;
    let kek = a.dir.join("kek.bin");
    if !a.no_encryption {
        ensure_kek(&kek)?;
        eprintln!(
            "sealkv dev: the KEK is a plain file at {} — fine for trying sealkv out, NOT for real data \
             (keep a real KEK off the data disk: tmpfs, an HSM or a KMS; see docs/runbook.md)",
            kek.display()
        );
    }
    let exe = std::env::current_exe().context("cannot find the sealkv binary")?;
    let mut grpc = Vec::new();
    let mut members = Vec::new();
    for i in 0..a.nodes {
        let addr = format!("127.0.0.1:{}", port(a.grpc_port, i)?);
        members.push(format!("n{}={addr}", i + 1));
        grpc.push(addr);
    }
    let mut children: Vec<Child> = Vec::new();
    for i in 0..a.nodes {
        let name = format!("n{}", i + 1);
        let data = a.dir.join(&name);
        std::fs::create_dir_all(&data)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(a.dir.join(format!("{name}.log")))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("server")
            .arg("--node-id")
            .arg(&name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-grpc")
            .arg(&grpc[usize::from(i)])
            .arg("--listen-redis")
            .arg(format!("127.0.0.1:{}", port(a.redis_port, i)?))
            .arg("--listen-metrics")
            .arg(format!("127.0.0.1:{}", port(a.metrics_port, i)?))
            .arg("--initial-members")
            .arg(members.join(","));
        if i == 0 {
            cmd.arg("--init");
        }
        if !a.no_encryption {
            cmd.arg("--encryption-enabled").arg("--kek-file").arg(&kek).arg("--encrypt-from-birth");
        }
        cmd.args(&a.server_arg);
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
        children.push(cmd.spawn().with_context(|| format!("cannot start node {name}"))?);
    }
    let ready = wait_ready(&grpc, !a.no_encryption);
    tokio::select! {
        exited = first_exit(&mut children) => {
            stop(&mut children).await;
            bail!("node {exited} before the cluster was ready; see {}/nN.log", a.dir.display());
        }
        r = ready => {
            let leader = match r {
                Ok(l) => l,
                Err(e) => {
                    stop(&mut children).await;
                    return Err(e);
                }
            };
            println!(
                "ready leader={leader} grpc={} encryption={} dir={}",
                grpc.join(","),
                if a.no_encryption { "off" } else { "storage+raft" },
                a.dir.display()
            );
            std::io::stdout().flush()?;
        }
        _ = crate::node::shutdown_signal() => {
            stop(&mut children).await;
            bail!("interrupted before the cluster was ready");
        }
    }
    tokio::select! {
        _ = crate::node::shutdown_signal() => {}
        exited = first_exit(&mut children) => {
            eprintln!("sealkv dev: a node exited ({exited}); stopping the others; see {}/nN.log", a.dir.display());
        }
    }
    stop(&mut children).await;
    eprintln!("sealkv dev: stopped");
    Ok(())
}

async fn first_exit(children: &mut [Child]) -> String {
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if let Ok(Some(st)) = c.try_wait() {
                return format!("n{} {st}", i + 1);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM to every child, then waits (SIGKILL after 10 s).
async fn stop(children: &mut [Child]) {
    for c in children.iter() {
        if let Some(pid) = c.id() {
            // kill(1) rather than libc::kill keeps this crate free of unsafe; a stale pid is harmless.
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
    }
    for c in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
}

/// Waits until a leader exists and (when encrypted) every node applied both envelopes.
async fn wait_ready(grpc: &[String], encrypted: bool) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if tokio::time::Instant::now() > deadline {
            bail!("the cluster did not become ready within 120 s; see the nN.log files in the dev dir");
        }
        if let Ok(Response::Cluster(s)) = api::call(&grpc[0], Request::ClusterStatus, false).await
            && let Some(leader) = &s.leader
            && s.members.len() == grpc.len()
            && s.members.iter().all(|m| {
                m.applied_index.is_some()
                    && (Some(m.id.as_str()) != s.leader.as_deref() || m.serving == Some(true))
                    && (!encrypted || (m.raft_cutover_index.unwrap_or(0) != 0 && m.storage_envelope == Some(true)))
            })
        {
            return Ok(leader.clone());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
