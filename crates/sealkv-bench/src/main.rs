//! `sealkv-bench`: measures a sealkv cluster from outside, the way clients see it.
//!
//! `sealkv-bench kv` starts a `sealkv dev` cluster cleartext, then encrypted from birth (same
//! machine, same run, same load), drives 1 KiB puts from N concurrent clients through the gRPC KV
//! API for a fixed window after a warm-up, and prints throughput and p50/p99 for each, the
//! encrypted/cleartext ratios, and the disk's raw append+fdatasync latency for reference.

mod cluster;
mod fsync;
mod load;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::stats::{Summary, ms};

#[derive(Debug, Parser)]
#[command(name = "sealkv-bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Puts against a 3-node loopback cluster: cleartext vs encrypted from birth.
    Kv(KvArgs),
}

#[derive(Debug, clap::Args)]
struct KvArgs {
    /// Concurrent clients (each waits for its put before the next).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Distinct keys written.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Measured seconds per cluster.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Unmeasured seconds before each window.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Rounds; each round measures cleartext then encrypted, and the table shows every round.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Where the clusters' data dirs go (a fresh subdirectory per cluster; removed afterwards).
    #[arg(long, default_value = "./sealkv-bench-data")]
    dir: PathBuf,
    /// First gRPC port of the clusters.
    #[arg(long, default_value_t = 17379)]
    grpc_port: u16,
    /// The `sealkv` binary (defaults to the one next to this binary).
    #[arg(long)]
    sealkv: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let Cmd::Kv(a) = Cli::parse().command;
    kv(a)
}

fn kv(a: KvArgs) -> anyhow::Result<()> {
    let sealkv = match &a.sealkv {
        Some(p) => p.clone(),
        None => cluster::sibling_sealkv()?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows: Vec<(String, Summary)> = Vec::new();
    for round in 1..=a.rounds {
        for encrypted in [false, true] {
            let label = if encrypted { "encrypted" } else { "cleartext" };
            let dir = a.dir.join(format!("{label}-{round}"));
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("round {round}: starting a {}-node {label} cluster in {}", a.nodes, dir.display());
            let c = cluster::DevCluster::start(&sealkv, &dir, a.nodes, a.grpc_port, encrypted)?;
            eprintln!(
                "round {round}: {label}: {} clients, {} B values, {} s warm-up + {} s measured against the leader {}",
                a.clients, a.value_size, a.warmup, a.seconds, c.leader
            );
            let spec = load::Spec {
                target: c.leader.clone(),
                clients: a.clients,
                value_size: a.value_size,
                keys: a.keys,
                warmup: Duration::from_secs(a.warmup),
                window: Duration::from_secs(a.seconds),
            };
            let s = rt.block_on(load::puts(spec));
            c.stop()?;
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!(
                "round {round}: {label}: {:.0} puts/s, p50 {} ms, p99 {} ms",
                s.ops_per_sec,
                ms(s.p50),
                ms(s.p99)
            );
            rows.push((format!("{label} (round {round})"), s));
        }
    }
    eprintln!("measuring raw append + fdatasync latency in {}", a.dir.display());
    let f = fsync::measure(&a.dir, 4096, Duration::from_secs(5))?;
    let _ = std::fs::remove_dir(&a.dir);

    println!();
    println!(
        "{} clients, {} B puts, 3-node loopback cluster, {} s per measurement after {} s warm-up",
        a.clients, a.value_size, a.seconds, a.warmup
    );
    println!("{:<24} {:>12} {:>10} {:>10} {:>10} {:>8}", "run", "ops/s", "p50 ms", "p99 ms", "ops", "errors");
    for (label, s) in &rows {
        println!(
            "{label:<24} {:>12.0} {:>10} {:>10} {:>10} {:>8}",
            s.ops_per_sec,
            ms(s.p50),
            ms(s.p99),
            s.ops,
            s.errors
        );
    }
    println!(
        "{:<24} {:>12.0} {:>10} {:>10} {:>10} {:>8}",
        "raw 4 KiB fdatasync",
        f.ops_per_sec,
        ms(f.p50),
        ms(f.p99),
        f.ops,
        "-"
    );
    let mean = |enc: bool, pick: &dyn Fn(&Summary) -> f64| -> f64 {
        let v: Vec<f64> =
            rows.iter().filter(|(l, _)| l.starts_with("encrypted") == enc).map(|(_, s)| pick(s)).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let thr = mean(true, &|s| s.ops_per_sec) / mean(false, &|s| s.ops_per_sec);
    let p99 = mean(true, &|s| s.p99.as_secs_f64()) / mean(false, &|s| s.p99.as_secs_f64());
    let p50 = mean(true, &|s| s.p50.as_secs_f64()) / mean(false, &|s| s.p50.as_secs_f64());
    println!();
    println!("encrypted / cleartext throughput: {:.1}%   (goal >= 90%)", thr * 100.0);
    println!("encrypted / cleartext p50:        {:.1}%", p50 * 100.0);
    println!("encrypted / cleartext p99:        {:.1}%   (goal <= 110%)", p99 * 100.0);
    Ok(())
}
