//! `sealkv kv`, `sealkv admin` and the hidden `sealkv debug` helpers.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::api::{self, ApiError, Request, Response, WriteOp};

/// `sealkv kv`.
#[derive(Debug, Args)]
pub struct KvArgs {
    /// A node's gRPC address.
    #[arg(long, default_value = "127.0.0.1:7379")]
    endpoint: String,
    #[command(subcommand)]
    op: KvOp,
}

#[derive(Debug, Subcommand)]
enum KvOp {
    /// Prints the raw value; exits 1 when the key is absent.
    Get { key: String },
    /// Writes a value.
    Put {
        key: String,
        value: String,
        /// Expire after this many milliseconds.
        #[arg(long)]
        ttl_ms: Option<u64>,
    },
    /// Deletes a key.
    Del { key: String },
    /// Prints `key<TAB>value` lines for keys starting with PREFIX.
    Scan {
        prefix: String,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

/// `sealkv admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// A node's gRPC address.
    #[arg(long, default_value = "127.0.0.1:7379")]
    endpoint: String,
    #[command(subcommand)]
    area: AdminArea,
}

#[derive(Debug, Subcommand)]
enum AdminArea {
    /// Cluster membership.
    Cluster {
        #[command(subcommand)]
        op: ClusterOp,
    },
    /// Encryption state and key rotation.
    Encryption {
        #[command(subcommand)]
        op: EncryptionOp,
    },
}

#[derive(Debug, Subcommand)]
enum EncryptionOp {
    /// Every member's active DEKs, envelopes, cutover and epochs, plus the writer registry.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Makes a new DEK the active one for a purpose (old DEKs stay loaded to read old data).
    RotateDek {
        /// `storage` (store values) or `raft` (Raft payloads).
        #[arg(long)]
        purpose: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterOp {
    /// Leader, members, roles, applied indexes.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Adds a learner (it must be running with the same encryption settings).
    AddLearner { name: String, addr: String },
    /// Promotes a learner to voter.
    Promote { name: String },
    /// Removes a member.
    Remove { name: String },
}

fn expect(r: Result<Response, ApiError>) -> anyhow::Result<Response> {
    match r {
        Ok(Response::Error(e)) | Err(e) => Err(anyhow::anyhow!(e)),
        Ok(r) => Ok(r),
    }
}

/// Runs `sealkv kv`.
pub async fn kv(a: KvArgs) -> anyhow::Result<ExitCode> {
    let req = match &a.op {
        KvOp::Get { key } => Request::Get { key: key.as_bytes().to_vec() },
        KvOp::Put { key, value, ttl_ms } => Request::Write {
            ops: vec![WriteOp::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec(), ttl_ms: *ttl_ms }],
        },
        KvOp::Del { key } => Request::Write { ops: vec![WriteOp::Delete { key: key.as_bytes().to_vec() }] },
        KvOp::Scan { prefix, limit } => Request::Scan { prefix: prefix.as_bytes().to_vec(), limit: *limit },
    };
    let mut out = std::io::stdout().lock();
    match expect(api::call(&a.endpoint, req, false).await)? {
        Response::Value(Some(v)) => out.write_all(&v)?,
        Response::Value(None) => return Ok(ExitCode::from(1)),
        Response::Written { .. } => writeln!(out, "OK")?,
        Response::Pairs(pairs) => {
            for (k, v) in pairs {
                out.write_all(&k)?;
                out.write_all(b"\t")?;
                out.write_all(&v)?;
                out.write_all(b"\n")?;
            }
        }
        other => bail!("unexpected response {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `sealkv admin`.
pub async fn admin(a: AdminArgs) -> anyhow::Result<()> {
    let (req, json) = match a.area {
        AdminArea::Cluster { op } => match op {
            ClusterOp::Status { json } => (Request::ClusterStatus, json),
            ClusterOp::AddLearner { name, addr } => (Request::AddLearner { name, addr }, false),
            ClusterOp::Promote { name } => (Request::Promote { name }, false),
            ClusterOp::Remove { name } => (Request::Remove { name }, false),
        },
        AdminArea::Encryption { op } => match op {
            EncryptionOp::Status { json } => (Request::EncryptionStatus, json),
            EncryptionOp::RotateDek { purpose, json } => (Request::RotateDek { purpose }, json),
        },
    };
    match expect(api::call(&a.endpoint, req, false).await)? {
        Response::Cluster(s) if json => println!("{}", serde_json::to_string_pretty(&s)?),
        Response::Cluster(s) => {
            println!("leader: {}   term: {}", s.leader.as_deref().unwrap_or("(none)"), s.term);
            println!(
                "{:<10} {:<12} {:<22} {:>10} {:>8} {:>8}",
                "ID", "ROLE", "ADDRESS", "APPLIED", "STORAGE", "CUTOVER"
            );
            for m in s.members {
                let applied = m.applied_index.map_or("-".into(), |i| i.to_string());
                let storage = m.storage_envelope.map_or("-", |b| if b { "sealed" } else { "clear" });
                let cut = m.raft_cutover_index.map_or("-".into(), |i| i.to_string());
                println!("{:<10} {:<12} {:<22} {:>10} {:>8} {:>8}", m.id, m.role, m.address, applied, storage, cut);
                if let Some(h) = m.halted {
                    println!("           HALTED: {h}");
                }
            }
        }
        Response::Encryption(s) if json => println!("{}", serde_json::to_string_pretty(&s)?),
        Response::Encryption(s) => print_encryption(&s),
        Response::Rotated { purpose, dek_id } if json => {
            println!("{}", serde_json::json!({ "purpose": purpose, "dek_id": dek_id }))
        }
        Response::Rotated { purpose, dek_id } => {
            println!("rotated: {purpose} DEK {dek_id} is now active on every member that applied it");
        }
        Response::Ok => println!("OK"),
        other => bail!("unexpected response {other:?}"),
    }
    Ok(())
}

fn print_encryption(s: &api::EncryptionStatus) {
    println!(
        "{:<10} {:>8} {:>12} {:>12} {:>8} {:>8} {:>8}",
        "NODE", "ENABLED", "STORAGE DEK", "RAFT DEK", "SEALING", "CUTOVER", "SIDECAR"
    );
    for n in &s.nodes {
        println!(
            "{:<10} {:>8} {:>12} {:>12} {:>8} {:>8} {:>8}",
            n.id,
            if n.enabled { "yes" } else { "no" },
            n.active_storage,
            n.active_raft,
            if n.storage_envelope { "yes" } else { "no" },
            n.raft_cutover_index,
            n.sidecar_applied_index
        );
        for k in &n.keys {
            let state = if k.active {
                "active"
            } else if k.retired {
                "retired"
            } else {
                "old"
            };
            println!("           {:<8} DEK {:>10}  {:<8} local_epoch {}", k.purpose, k.id, state, k.local_epoch);
        }
    }
    for u in &s.unreachable {
        println!("{u:<10} unreachable");
    }
    println!("writer registry ({} rows):", s.registry.len());
    for r in &s.registry {
        println!(
            "  DEK {:>10}  node16 {:#06x}  node {:#018x}  epochs {}..={}",
            r.dek_id, r.node16, r.full_node_id, r.first_seen_epoch, r.last_seen_epoch
        );
    }
}

/// `sealkv debug`: fault injection for tests.
#[derive(Debug, Args)]
pub struct DebugArgs {
    #[command(subcommand)]
    op: DebugOp,
}

#[derive(Debug, Subcommand)]
enum DebugOp {
    /// Flips one bit of the last payload byte (the GCM tag, once wrapped) of the first Raft log
    /// entry with a payload after index AFTER, and prints that entry's index. The node must be
    /// stopped.
    FlipLogByte {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        after: u64,
    },
    /// Prints `surface key_id nonce_hex digest_hex` for every envelope on a stopped node's disk
    /// (sealed store values and wrapped Raft log entries), for nonce-reuse audits.
    Envelopes {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Prints the applied index of a stopped node's store.
    Applied {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Prints a stopped node's stored value counts as JSON (from value headers; needs no key).
    Counts {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Runs `sealkv debug`.
pub fn debug(a: DebugArgs) -> anyhow::Result<()> {
    let open = |dir: &PathBuf| -> anyhow::Result<sealkv_store::Store> {
        Ok(sealkv_store::Store::open(dir.join("store"), sealkv_store::StoreOptions::default())?)
    };
    match a.op {
        DebugOp::FlipLogByte { data_dir, after } => {
            let store = open(&data_dir)?;
            let log = sealkv_raft::log_store::LogStore::open(store.database())?;
            let mut found = None;
            log.scan(after, u64::MAX, &mut |e| {
                if matches!(&e.payload, openraft::EntryPayload::Normal(p) if !p.0.is_empty()) {
                    found = Some(e.clone());
                }
                found.is_none()
            })?;
            let mut e = found.with_context(|| format!("no log entry with a payload after index {after}"))?;
            if let openraft::EntryPayload::Normal(p) = &mut e.payload
                && let Some(last) = p.0.last_mut()
            {
                *last ^= 0x01;
            }
            log.overwrite(&e)?;
            store.persist()?;
            println!("{}", e.log_id.index);
        }
        DebugOp::Envelopes { data_dir } => {
            let store = open(&data_dir)?;
            let sidecar = sealkv_crypto::sidecar::Sidecar::load(&sealkv_crypto::sidecar::Sidecar::dir(&data_dir))?;
            let cutover = sidecar.map(|s| s.raft_envelope_cutover_index).unwrap_or(0);
            let mut out = std::io::stdout().lock();
            for (surface, key_id, nonce, digest) in crate::audit::envelopes(&store, cutover)? {
                writeln!(out, "{surface} {key_id} {} {}", hex(&nonce), hex(&digest))?;
            }
        }
        DebugOp::Counts { data_dir } => {
            let c = open(&data_dir)?.value_counts()?;
            let by_key: std::collections::BTreeMap<String, u64> =
                c.by_key_id.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            let json = serde_json::json!({ "cleartext": c.cleartext, "tombstones": c.tombstones, "by_key_id": by_key });
            println!("{json}");
        }
        DebugOp::Applied { data_dir } => {
            let store = open(&data_dir)?;
            println!("{}", store.applied()?.map(|a| a.index).unwrap_or(0));
        }
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
