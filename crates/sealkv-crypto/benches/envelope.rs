//! Storage envelope seal/open next to raw aws-lc-rs AES-256-GCM, same sizes, same run.
//!
//! `cargo bench -p sealkv-crypto --bench envelope` prints, per size, three timings of one seal
//! plus one open:
//!
//! * `raw_inplace` — raw aws-lc-rs: copy the plaintext into one heap buffer, seal in place, open
//!   that same buffer in place. The AEAD's floor; no read-side copy.
//! * `raw_owned` — raw aws-lc-rs used the way a store must: seal from a borrowed plaintext into a
//!   new buffer, then open from the borrowed sealed bytes (stored bytes are read-only) into a new
//!   buffer. The like-for-like baseline.
//! * `envelope` — `Sealer::seal_storage` (counter nonce, header, storage AAD) then
//!   `envelope::open_storage` (header checks, key lookup, AAD) — also borrowed in, owned out.
//!
//! The goal is envelope ≤ 1.15 × raw at 1 KiB; report the ratio against both baselines.

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
        g.bench_with_input(BenchmarkId::new("raw_inplace", size), &pt, |b, pt| {
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
        g.bench_with_input(BenchmarkId::new("raw_owned", size), &pt, |b, pt| {
            b.iter(|| {
                let mut sealed = Vec::with_capacity(pt.len() + 16);
                sealed.extend_from_slice(pt);
                let nonce = Nonce::assume_unique_for_key([1; 12]);
                raw.seal_in_place_append_tag(nonce, Aad::from(&aad[..]), &mut sealed).expect("seal");
                let stored: &[u8] = black_box(&sealed);
                let mut buf = stored.to_vec();
                let nonce = Nonce::assume_unique_for_key([1; 12]);
                let n = raw.open_in_place(nonce, Aad::from(&aad[..]), &mut buf).expect("open").len();
                buf.truncate(n);
                black_box(buf.len());
            })
        });
        g.bench_with_input(BenchmarkId::new("envelope", size), &pt, |b, pt| {
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
