//! Closed-loop put load: each client sends one put, waits for its acknowledgement, and sends
//! the next, so throughput and latency are both what a client would see.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sealkv_raft::codec::BlobCodec;
use sealkv_server::api::{self, Request, Response, WriteOp};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::etcd;
use crate::stats::{Summary, summarize};

/// Where the puts go.
#[derive(Debug, Clone)]
pub enum Target {
    /// A sealkv node's gRPC address (`host:port`), through the KV API.
    Sealkv(String),
    /// An etcd member, through `etcdserverpb.KV/Put` on one shared HTTP/2 connection.
    Etcd(Channel),
}

impl Target {
    /// Connects to an etcd member's client URL.
    pub async fn etcd(url: &str) -> anyhow::Result<Self> {
        Ok(Target::Etcd(Channel::from_shared(url.to_owned())?.connect().await?))
    }

    /// One put; true when it was acknowledged.
    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        match self {
            Target::Sealkv(addr) => {
                let req = Request::Write { ops: vec![WriteOp::Put { key, value, ttl_ms: None }] };
                matches!(api::call(addr, req, false).await, Ok(Response::Written { .. }))
            }
            Target::Etcd(ch) => {
                let mut grpc = tonic::client::Grpc::new(ch.clone());
                if grpc.ready().await.is_err() {
                    return false;
                }
                let req = tonic::Request::new(etcd::put_request(&key, &value));
                grpc.unary(req, PathAndQuery::from_static(etcd::PUT_ROUTE), BlobCodec).await.is_ok()
            }
        }
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The node every client talks to.
    pub target: Target,
    /// Concurrent clients.
    pub clients: usize,
    /// Value size.
    pub value_size: usize,
    /// Key space.
    pub keys: u64,
    /// Unmeasured time first.
    pub warmup: Duration,
    /// Measured time.
    pub window: Duration,
}

/// A small PRNG (xorshift64*): the load needs spread, not cryptographic randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Runs the load and summarises the measured window.
pub async fn puts(spec: Spec) -> Summary {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..spec.clients {
        let (spec, measuring, stop) = (spec.clone(), measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let mut value: Vec<u8> = (0..spec.value_size).map(|_| rng.next() as u8).collect();
            let mut samples = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("bench:{:012}", rng.next() % spec.keys).into_bytes();
                // Fresh bytes each put, so no layer can benefit from repeated values.
                for b in value.iter_mut().take(16) {
                    *b = rng.next() as u8;
                }
                let v = value.clone();
                let t = Instant::now();
                let ok = spec.target.put(key, v).await;
                let took = t.elapsed();
                if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    if ok {
                        samples.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                    }
                }
            }
            (samples, errors)
        }));
    }
    tokio::time::sleep(spec.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(spec.window).await;
    stop.store(true, Ordering::Relaxed);
    let window = start.elapsed();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((s, e)) = t.await {
            all.extend(s);
            errors += e;
        }
    }
    summarize(all, window, errors)
}
