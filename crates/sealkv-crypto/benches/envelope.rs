//! Storage envelope seal/open next to raw aws-lc-rs AES-256-GCM, same sizes, same run.
//!
//! `cargo bench -p sealkv-crypto --bench envelope` prints, per size, the time of
//! `raw_seal_open` (baseline: one heap buffer, seal in place + open in place with a fixed nonce
//! and a 24-byte AAD) and `envelope_seal_open` (Sealer::seal_storage with a counter nonce and the
//! full storage AAD, then open_storage through the keystore). The ratio of the two is the
//! envelope's overhead; the goal is ≤ 1.15 at 1 KiB.

use std::hint::black_box;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sealkv_crypto::envelope::{self, Sealer};
use sealkv_crypto::{Keystore, NonceFactory, Purpose};

const SIZES: [usize; 4] = [64, 1024, 16 * 1024, 64 * 1024];

fn bench(c: &mut Criterion) {
    let key_bytes = [0x42u8; 32];
    let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key_bytes).expect("key"));
    let ks = Keystore::new();
    ks.install(7, Purpose::Storage, &key_bytes).expect("install");
    let sealer = Sealer::new(ks.get(7).expect("dek"), NonceFactory::new(1, 1).expect("factory"));
    let ks = Arc::new(ks);
    let value_header = [0u8; 9];
    let mvcc_key = b"user:0000000000001234\xff\xff\xfe\xd4\x3a\x6b\x11\x07"; // 24-byte MVCC key
    let aad: Vec<u8> = [&[1u8, 0, 0, 0, 0, 7][..], &value_header, mvcc_key].concat();

    let mut g = c.benchmark_group("seal_open");
    for size in SIZES {
        let pt = vec![0xA5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("raw_seal_open", size), &pt, |b, pt| {
            b.iter(|| {
                let mut buf = Vec::with_capacity(pt.len() + 16);
                buf.extend_from_slice(pt);
                let nonce = Nonce::assume_unique_for_key([1; 12]);
                raw.seal_in_place_append_tag(nonce, Aad::from(&aad[..]), &mut buf).expect("seal");
                let nonce = Nonce::assume_unique_for_key([1; 12]);
                let out = raw.open_in_place(nonce, Aad::from(&aad[..]), &mut buf).expect("open");
                black_box(out.len());
            })
        });
        g.bench_with_input(BenchmarkId::new("envelope_seal_open", size), &pt, |b, pt| {
            b.iter(|| {
                let env = sealer.seal_storage(false, &value_header, mvcc_key, pt).expect("seal");
                let opened = envelope::open_storage(&ks, &value_header, mvcc_key, &env).expect("open");
                black_box(opened.plaintext.len());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
