//! Store throughput, cleartext vs encrypted, same run.
//!
//! `cargo bench -p sealkv-store --bench store` prints:
//!
//! * `put_1k/{cleartext,encrypted}` — one apply batch with one 1 KiB put plus the applied index,
//!   committed to the journal buffer (what the apply loop does per entry). Values are random
//!   bytes, so the encrypted side also pays for a failed compression attempt (the worst case).
//! * `put_1k_text/{cleartext,encrypted}` — the same with repetitive 1 KiB values (what
//!   redis-benchmark sends), which the encrypted side compresses before sealing.
//! * `get_1k_memtable/{cleartext,encrypted}` — a point read of a random key out of 20 000 that are
//!   all still in the memtable, with the row cache off (the cheapest LSM read, so the decrypt
//!   weighs most).
//! * `get_1k_tables/{cleartext,encrypted}` — the same after flushing them into a table, read
//!   through the block cache (a store whose data has been persisted).
//! * `get_1k_row_cache/{cleartext,encrypted,encrypted_sealed_cache}` — the same reads answered by
//!   the row cache (every key hot). A hit skips the LSM; it is a copy of the opened value, except
//!   with `row_cache_sealed` (`encrypted_sealed_cache`), where every hit opens the stored bytes:
//!   that variant shows what the opt-out costs, and its ratio is far from 95% by construction.
//! * `compress_1k/{random,alphabet,text}` — the compress-then-encrypt attempt alone on 1 KiB of
//!   random bytes, of random letters (redis-benchmark's values: LZ4 cannot shrink them either) and
//!   of repetitive text; `random_sampled` is what a sealed put pays per value once a run of
//!   failures has made the store sample its attempts (`compress::compress_sampled`).
//! * `rewrite` — re-sealing a 16 MiB store of 1 KiB values from one DEK to another, in MB/s.
//! * `batch_16_commands/{plain,savepoints}` — the writes of 16 commands into one encrypted apply
//!   batch, each an element and a rewrite of one shared metadata record (LPUSH -P 16 on one key),
//!   without and with a savepoint around each command (what the Redis apply opens so a refused
//!   write can be taken back). Not committed, so the ratio is the savepoints' cost against the
//!   in-memory part of a write alone; sealing and the journal come on top at commit.
//!
//! Goal: encrypted put and get throughput ≥ 95% of cleartext (time ratio ≤ 1.053).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sealkv_crypto::{Keystore, NonceFactory, Purpose, Sealer};
use sealkv_store::{Applied, Durability, RewriteOptions, RewriteTarget, Store, StoreOptions};

const A: u32 = 0xA;
const B: u32 = 0xB;
const GET_KEYS: u64 = 20_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n.div_ceil(8)).flat_map(|_| self.next().to_le_bytes()).take(n).collect()
    }
}

fn keystore() -> Arc<Keystore> {
    let ks = Keystore::new();
    ks.install(A, Purpose::Storage, &[1; 32]).expect("install");
    ks.install(B, Purpose::Storage, &[2; 32]).expect("install");
    Arc::new(ks)
}

fn sealer(ks: &Keystore, id: u32, epoch: u16) -> Arc<Sealer> {
    Arc::new(Sealer::new(ks.get(id).expect("dek"), NonceFactory::new(1, epoch).expect("nonces")))
}

/// A fresh store; encrypted stores are encrypted from birth under A.
fn store(dir: &std::path::Path, encrypted: bool) -> Store {
    store_with(dir, encrypted, StoreOptions::default().row_cache_bytes, false)
}

fn store_with(dir: &std::path::Path, encrypted: bool, row_cache_bytes: u64, row_cache_sealed: bool) -> Store {
    let ks = keystore();
    let opts = StoreOptions {
        keystore: ks.clone(),
        encryption_enabled: encrypted,
        row_cache_bytes,
        row_cache_sealed,
        ..StoreOptions::default()
    };
    let s = Store::open(dir, opts).expect("open");
    if encrypted {
        s.set_sealer(Some(sealer(&ks, A, 1)));
        let mut b = s.batch();
        b.enable_storage_envelope();
        b.commit(&Applied { index: 1, log_id: vec![] }, Durability::Buffered).expect("enable");
    }
    s
}

fn bench_puts(c: &mut Criterion, group: &str, value: &[u8]) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(value.len() as u64));
    for encrypted in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path(), encrypted);
        let mut ts = 1u64;
        let name = if encrypted { "encrypted" } else { "cleartext" };
        g.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| {
                ts += 1;
                let mut b = s.batch();
                b.put(format!("user:{:012}", ts % 1_000_000).as_bytes(), ts, value, 0).expect("put");
                b.commit(&Applied { index: ts, log_id: vec![] }, Durability::Buffered).expect("commit");
            })
        });
    }
    g.finish();
}

fn bench_savepoints(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_16_commands");
    g.throughput(Throughput::Elements(16));
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path(), true);
    let mut n = 0u64;
    for with in [false, true] {
        g.bench_function(if with { "savepoints" } else { "plain" }, |bench| {
            bench.iter(|| {
                let mut b = s.batch();
                for _ in 0..16 {
                    n += 1;
                    let sp = with.then(|| b.savepoint());
                    b.put(format!("list:{:012}", n % 1_000_000).as_bytes(), 2, b"element-value", 0).expect("put");
                    b.put(b"meta:mylist", 2, &n.to_be_bytes(), 0).expect("put");
                    if let Some(sp) = sp {
                        b.release(sp);
                    }
                }
                black_box(b)
            })
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    bench_savepoints(c);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    bench_puts(c, "put_1k", &rng.bytes(1024));
    bench_puts(c, "put_1k_text", &b"sealkv-".repeat(147)[..1024]);

    let mut g = c.benchmark_group("compress_1k");
    g.throughput(Throughput::Bytes(1024));
    let letters: Vec<u8> = rng.bytes(1024).iter().map(|b| b'A' + b % 58).collect();
    for (name, value) in
        [("random", rng.bytes(1024)), ("alphabet", letters), ("text", b"sealkv-".repeat(147)[..1024].to_vec())]
    {
        g.bench_function(name, |bench| bench.iter(|| black_box(sealkv_store::compress::compress(black_box(&value)))));
    }
    // What a sealed put pays per value in an incompressible workload: attempts are sampled.
    let random = rng.bytes(1024);
    g.bench_function("random_sampled", |bench| {
        bench.iter(|| black_box(sealkv_store::compress::compress_sampled(black_box(&random))))
    });
    g.finish();

    for (group, flushed, row_cache) in
        [("get_1k_memtable", false, 0), ("get_1k_tables", true, 0), ("get_1k_row_cache", true, 256 << 20)]
    {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Bytes(1024));
        let mut variants = vec![("cleartext", false, false), ("encrypted", true, false)];
        if row_cache > 0 {
            variants.push(("encrypted_sealed_cache", true, true));
        }
        for (name, encrypted, sealed) in variants {
            let dir = tempfile::tempdir().expect("tempdir");
            let s = store_with(dir.path(), encrypted, row_cache, sealed);
            let mut b = s.batch();
            for i in 0..GET_KEYS {
                b.put(format!("user:{i:012}").as_bytes(), i + 2, &rng.bytes(1024), 0).expect("put");
            }
            b.commit(&Applied { index: 2, log_id: vec![] }, Durability::Buffered).expect("commit");
            if flushed {
                s.flush().expect("flush");
            }
            let mut r = Rng(7);
            g.bench_function(BenchmarkId::from_parameter(name), |bench| {
                bench.iter(|| {
                    let k = format!("user:{:012}", r.next() % GET_KEYS);
                    black_box(s.get(k.as_bytes(), u64::MAX, 0).expect("get").expect("present"));
                })
            });
        }
        g.finish();
    }

    // Rewrite: 16 MiB of 1 KiB values, alternately re-sealed A→B and B→A.
    let dir = tempfile::tempdir().expect("tempdir");
    let s = store(dir.path(), true);
    let mut b = s.batch();
    let n = 16 * 1024u64;
    for i in 0..n {
        b.put(format!("user:{i:012}").as_bytes(), i + 2, &rng.bytes(1024), 0).expect("put");
    }
    b.commit(&Applied { index: 2, log_id: vec![] }, Durability::Buffered).expect("commit");
    let ks = s.keystore().clone();
    let mut g = c.benchmark_group("rewrite");
    g.throughput(Throughput::Bytes(n * 1024));
    g.sample_size(10);
    let mut epoch = 2u16;
    g.bench_function("16MiB_1k_values", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let to = if epoch % 2 == 0 { B } else { A };
                s.set_sealer(Some(sealer(&ks, to, epoch)));
                epoch += 1;
                let start = Instant::now();
                let mut opts = RewriteOptions::new(RewriteTarget::AllButActive);
                opts.chunk_versions = 4096;
                s.rewrite(opts, |_| {}).expect("rewrite");
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
