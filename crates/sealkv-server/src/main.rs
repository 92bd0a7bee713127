//! The `sealkv` binary: `server`, `dev`, `kv`, `admin`.

// tonic's `Status` and openraft's errors are large and fixed by their APIs.
#![allow(clippy::result_large_err)]

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub(crate) use sealkv_server::api;
mod audit;
mod blocking;
mod cli;
mod coordinator;
mod dev;
mod encryption;
mod engine_log;
mod gc;
mod kek_timer;
mod log_budget;
mod metrics;
mod node;
mod redis;
mod rounds;

/// jemalloc: every Redis write moves ~1 KiB buffers (request, Raft entry, sealed value, reply)
/// through several threads, which is glibc malloc's slow path (no thread cache above 1 KiB);
/// glibc spent ~19% of a leader's CPU there under SET.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// sealkv: a Raft-replicated MVCC key-value store whose persisted data is ciphertext.
#[derive(Debug, Parser)]
#[command(name = "sealkv", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one node of a cluster.
    Server(Box<node::ServerArgs>),
    /// Runs a local cluster of `sealkv server` processes for trying sealkv out.
    Dev(dev::DevArgs),
    /// Reads and writes keys through a node's gRPC endpoint.
    Kv(cli::KvArgs),
    /// Cluster administration.
    Admin(cli::AdminArgs),
    /// Fault-injection helpers for tests (not for production use).
    #[command(hide = true)]
    Debug(cli::DebugArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEALKV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn,hyper=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
    engine_log::install();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sealkv: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Server(a) => {
                init_tracing();
                node::run(*a).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Dev(a) => dev::run(a).await.map(|()| ExitCode::SUCCESS),
            Command::Kv(a) => cli::kv(a).await,
            Command::Admin(a) => cli::admin(a).await.map(|()| ExitCode::SUCCESS),
            Command::Debug(a) => cli::debug(a).map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "sealkv: {e:#}");
            ExitCode::FAILURE
        }
    }
}
