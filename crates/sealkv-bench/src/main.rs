//! `sealkv-bench`: measures a sealkv cluster from outside, the way clients see it.
//!
//! `sealkv-bench kv` starts a `sealkv dev` cluster cleartext, then encrypted from birth (same
//! machine, same run, same load), drives 1 KiB puts from N concurrent clients through the gRPC KV
//! API for a fixed window after a warm-up, and prints throughput and p50/p99 for each, the
//! encrypted/cleartext ratios, and the disk's raw append+fdatasync latency for reference. With
//! `--etcd` it also measures a 3-member etcd cluster under the same load: the baseline the Redis
//! SET goal is stated against. `sealkv-bench etcd` measures only that baseline (the Redis
//! benchmark script runs it next to redis-benchmark).

mod cluster;
mod etcd;
mod fsync;
mod load;
mod stats;

use std::path::{Path, PathBuf};
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
    /// Puts against a 3-node loopback cluster: cleartext vs encrypted from birth (and etcd).
    Kv(KvArgs),
    /// Puts against a 3-member loopback etcd cluster only (the SET goal's baseline).
    Etcd(EtcdArgs),
}

/// The load, shared by every target.
#[derive(Debug, Clone, clap::Args)]
struct LoadArgs {
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
    /// Where the clusters' data dirs go (a fresh subdirectory per cluster; removed afterwards).
    #[arg(long, default_value = "./sealkv-bench-data")]
    dir: PathBuf,
    /// The `etcd` binary (etcdctl is looked for next to it, then on PATH; default: PATH).
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// First client port of the etcd cluster (peer ports are 100 above).
    #[arg(long, default_value_t = 18379)]
    etcd_port: u16,
}

impl LoadArgs {
    fn spec(&self, target: load::Target) -> load::Spec {
        load::Spec {
            target,
            clients: self.clients,
            value_size: self.value_size,
            keys: self.keys,
            warmup: Duration::from_secs(self.warmup),
            window: Duration::from_secs(self.seconds),
        }
    }
}

#[derive(Debug, clap::Args)]
struct KvArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Rounds; each round measures cleartext then encrypted (then etcd), and the table shows every round.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// First gRPC port of the clusters.
    #[arg(long, default_value_t = 17379)]
    grpc_port: u16,
    /// The `sealkv` binary (defaults to the one next to this binary).
    #[arg(long)]
    sealkv: Option<PathBuf>,
    /// Also measure a 3-member etcd cluster under the same load in every round.
    #[arg(long)]
    etcd: bool,
}

#[derive(Debug, clap::Args)]
struct EtcdArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Print one CSV row (`ops_per_sec,p50_ms,p99_ms,ops,errors`) instead of a sentence.
    #[arg(long)]
    csv: bool,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Kv(a) => kv(a),
        Cmd::Etcd(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let s = measure_etcd(&rt, &a.load, &a.load.dir.join("etcd"))?;
            let _ = std::fs::remove_dir(&a.load.dir);
            if a.csv {
                println!("{:.0},{},{},{},{}", s.ops_per_sec, ms(s.p50), ms(s.p99), s.ops, s.errors);
            } else {
                println!(
                    "etcd, 3 members: {:.0} puts/s, p50 {} ms, p99 {} ms ({} clients, {} B values, {} errors)",
                    s.ops_per_sec,
                    ms(s.p50),
                    ms(s.p99),
                    a.load.clients,
                    a.load.value_size,
                    s.errors
                );
            }
            Ok(())
        }
    }
}

/// Starts a fresh 3-member etcd cluster in `dir`, runs the load against its leader, and removes it.
fn measure_etcd(rt: &tokio::runtime::Runtime, a: &LoadArgs, dir: &Path) -> anyhow::Result<Summary> {
    let (etcd_bin, etcdctl) = etcd::binaries(a.etcd_bin.as_deref())?;
    let _ = std::fs::remove_dir_all(dir);
    eprintln!("starting a 3-member etcd cluster in {}", dir.display());
    let c = etcd::EtcdCluster::start(&etcd_bin, &etcdctl, dir, 3, a.etcd_port)?;
    eprintln!(
        "etcd: {} clients, {} B values, {} s warm-up + {} s measured against the leader {}",
        a.clients, a.value_size, a.warmup, a.seconds, c.leader
    );
    let s =
        rt.block_on(async { Ok::<_, anyhow::Error>(load::puts(a.spec(load::Target::etcd(&c.leader).await?)).await) });
    c.stop()?;
    let _ = std::fs::remove_dir_all(dir);
    let s = s?;
    eprintln!("etcd: {:.0} puts/s, p50 {} ms, p99 {} ms", s.ops_per_sec, ms(s.p50), ms(s.p99));
    Ok(s)
}

fn kv(a: KvArgs) -> anyhow::Result<()> {
    let sealkv = match &a.sealkv {
        Some(p) => p.clone(),
        None => cluster::sibling_sealkv()?,
    };
    if a.etcd {
        etcd::binaries(a.load.etcd_bin.as_deref())?;
    }
    let l = &a.load;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows: Vec<(String, Summary)> = Vec::new();
    for round in 1..=a.rounds {
        for encrypted in [false, true] {
            let label = if encrypted { "encrypted" } else { "cleartext" };
            let dir = l.dir.join(format!("{label}-{round}"));
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("round {round}: starting a {}-node {label} cluster in {}", a.nodes, dir.display());
            let c = cluster::DevCluster::start(&sealkv, &dir, a.nodes, a.grpc_port, encrypted)?;
            eprintln!(
                "round {round}: {label}: {} clients, {} B values, {} s warm-up + {} s measured against the leader {}",
                l.clients, l.value_size, l.warmup, l.seconds, c.leader
            );
            let s = rt.block_on(load::puts(l.spec(load::Target::Sealkv(c.leader.clone()))));
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
        if a.etcd {
            let s = measure_etcd(&rt, l, &l.dir.join(format!("etcd-{round}")))?;
            rows.push((format!("etcd (round {round})"), s));
        }
    }
    eprintln!("measuring raw append + fdatasync latency in {}", l.dir.display());
    let f = fsync::measure(&l.dir, 4096, Duration::from_secs(5))?;
    let _ = std::fs::remove_dir(&l.dir);

    println!();
    println!(
        "{} clients, {} B puts, 3-node loopback cluster, {} s per measurement after {} s warm-up",
        l.clients, l.value_size, l.seconds, l.warmup
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
    let mean = |target: &str, pick: &dyn Fn(&Summary) -> f64| -> f64 {
        let v: Vec<f64> = rows.iter().filter(|(l, _)| l.starts_with(target)).map(|(_, s)| pick(s)).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let thr = mean("encrypted", &|s| s.ops_per_sec) / mean("cleartext", &|s| s.ops_per_sec);
    let p99 = mean("encrypted", &|s| s.p99.as_secs_f64()) / mean("cleartext", &|s| s.p99.as_secs_f64());
    let p50 = mean("encrypted", &|s| s.p50.as_secs_f64()) / mean("cleartext", &|s| s.p50.as_secs_f64());
    println!();
    println!("encrypted / cleartext throughput: {:.1}%   (goal >= 90%)", thr * 100.0);
    println!("encrypted / cleartext p50:        {:.1}%", p50 * 100.0);
    println!("encrypted / cleartext p99:        {:.1}%   (goal <= 110%)", p99 * 100.0);
    if a.etcd {
        let vs_etcd = mean("encrypted", &|s| s.ops_per_sec) / mean("etcd", &|s| s.ops_per_sec);
        println!("encrypted / etcd throughput:      {:.1}%", vs_etcd * 100.0);
    }
    Ok(())
}
