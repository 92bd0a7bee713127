//! Compress-then-encrypt: LZ4 block format with the uncompressed length in front
//! (`len 4 BE ‖ lz4 block`), applied only when it makes the plaintext smaller.

use lz4_flex::block::{CompressTable, compress_into_with_table, get_maximum_output_size};

/// Values shorter than this are never worth compressing (the 4-byte length eats the gain).
const MIN_LEN: usize = 64;
/// The largest ratio an LZ4 block can reach, which bounds the length a decoder will allocate.
const MAX_RATIO: usize = 255;

/// Why a compressed body did not decompress.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// Missing length prefix, a length no LZ4 block of this size can produce, or above the limit.
    #[error("compressed body claims {claimed} bytes from {len} (limit {limit})")]
    BadLength {
        /// The claimed uncompressed length.
        claimed: u64,
        /// The compressed length.
        len: usize,
        /// The largest value the store accepts.
        limit: usize,
    },
    /// The LZ4 block is corrupt or does not produce exactly the claimed length.
    #[error("compressed body is corrupt")]
    Corrupt,
}

/// Inputs up to this size compress through the calling thread's scratch (hash table and output
/// buffer), so the scratch a thread keeps stays small; larger ones allocate their own. Below
/// `u16::MAX`, so the thread's table stays LZ4's small one (lz4_flex upgrades it for longer input).
const SCRATCH_MAX: usize = u16::MAX as usize - 1;

std::thread_local! {
    /// Why per thread: LZ4 needs an 8 KiB hash table and an output buffer for every call. Fresh
    /// ones cost more than the compression of a 1 KiB value itself: measured in a 3-node cluster
    /// under SET, zeroing and page-faulting them made each attempt ~1.2 µs against ~0.4 µs for the
    /// attempt alone (the attempt runs on every sealed put, and usually fails on real data).
    static SCRATCH: std::cell::RefCell<(CompressTable, Vec<u8>)> =
        std::cell::RefCell::new((CompressTable::small(), Vec::new()));
}

/// The compressed form of `plaintext` if it is smaller, else `None`.
pub fn compress(plaintext: &[u8]) -> Option<Vec<u8>> {
    if plaintext.len() < MIN_LEN {
        return None;
    }
    if plaintext.len() > SCRATCH_MAX {
        return compress_with(plaintext, &mut CompressTable::large(), &mut Vec::new());
    }
    SCRATCH.with_borrow_mut(|(table, buf)| compress_with(plaintext, table, buf))
}

/// `len ‖ lz4 block` through `table` and `buf` (grown as needed, its old bytes never read).
fn compress_with(plaintext: &[u8], table: &mut CompressTable, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let len = u32::try_from(plaintext.len()).ok()?;
    let max = get_maximum_output_size(plaintext.len());
    if buf.len() < max {
        buf.resize(max, 0);
    }
    let n = compress_into_with_table(plaintext, buf.get_mut(..max)?, table).ok()?;
    let packed = buf.get(..n)?;
    (4 + n < plaintext.len()).then(|| [&len.to_be_bytes()[..], packed].concat())
}

/// After this many failed attempts in a row, [`compress_sampled`] attempts only one value in
/// [`SAMPLE`], until one compresses again.
const GIVE_UP_AFTER: u32 = 16;
/// One attempt in this many while attempts keep failing.
const SAMPLE: u32 = 16;

std::thread_local! {
    /// The calling thread's run of failed attempts and how many values it still skips.
    static FUTILE: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// [`compress`] for a stream of values (the store's puts), skipping attempts while they keep
/// failing. Why: the attempt costs ~350 ns on 1 KiB and fails on every value of an incompressible
/// workload (already compressed or random data, or redis-benchmark's random letters), which was
/// ~1.5% of a sealed SET's CPU. After [`GIVE_UP_AFTER`] failures in a row only one value in
/// [`SAMPLE`] is tried, and the first that compresses ends the skipping, so a workload that
/// turns compressible is noticed within [`SAMPLE`] values. Per thread, and node-local: a replica
/// seals its own bytes, so where it compresses never has to agree with another replica.
pub fn compress_sampled(plaintext: &[u8]) -> Option<Vec<u8>> {
    if plaintext.len() < MIN_LEN {
        return None;
    }
    let (failures, skip) = FUTILE.get();
    if skip > 0 {
        FUTILE.set((failures, skip - 1));
        return None;
    }
    let packed = compress(plaintext);
    let failures = failures.saturating_add(1);
    FUTILE.set(match packed {
        Some(_) => (0, 0),
        None if failures >= GIVE_UP_AFTER => (failures, SAMPLE - 1),
        None => (failures, 0),
    });
    packed
}

/// Decompresses a body written by [`compress`], refusing to allocate more than `limit` bytes or
/// more than the input could expand to.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    decompress_into(body, limit, &mut out)?;
    Ok(out)
}

/// [`decompress`] into `out`, replacing what it held (left empty on an error).
///
/// Why: every node inflates every command batch it applies, one after another. A fresh zeroed
/// buffer per batch (`vec![0; n]`) came as pages not yet touched, so writing it page-faulted once
/// per 4 KiB: under SET at -P 1 the three nodes took 1.44 page faults per SET with a fresh buffer
/// per batch, and 1.00 with one kept buffer, which is written in place (docs/performance.md).
pub fn decompress_into(body: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
    out.clear();
    let (len, block) =
        body.split_first_chunk::<4>().ok_or(DecompressError::BadLength { claimed: 0, len: body.len(), limit })?;
    let claimed = u32::from_be_bytes(*len) as usize;
    if claimed > limit || claimed > block.len().saturating_mul(MAX_RATIO) {
        return Err(DecompressError::BadLength { claimed: claimed as u64, len: body.len(), limit });
    }
    out.resize(claimed, 0);
    match lz4_flex::block::decompress_into(block, out) {
        Ok(n) if n == claimed => Ok(()),
        _ => {
            out.clear();
            Err(DecompressError::Corrupt)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compresses_only_when_smaller() {
        assert!(compress(&[7u8; 32]).is_none());
        let c = compress(&[7u8; 1024]).unwrap();
        assert_eq!(&c[..4], &1024u32.to_be_bytes());
        assert_eq!(decompress(&c, 1 << 20).unwrap(), vec![7u8; 1024]);
        let noise = sealkv_testkit::incompressible(0, 1024);
        assert!(compress(&noise).is_none());
    }

    #[test]
    fn scratch_reuse_never_leaks_between_calls() {
        // Sizes on both sides of the per-thread scratch, in an order that grows the buffer, then
        // uses it for smaller inputs (stale bytes past the new output must not count).
        let big: Vec<u8> = (0..SCRATCH_MAX as u32 * 2).map(|i| (i % 251) as u8).collect();
        let text = b"sealkv-".repeat(300);
        let noise = sealkv_testkit::incompressible(1, 4096);
        for v in [&big[..], &text, &noise, &big[..SCRATCH_MAX], &text[..100], &big[..SCRATCH_MAX + 1], &text] {
            match compress(v) {
                Some(c) => {
                    assert!(c.len() < v.len());
                    assert_eq!(decompress(&c, 1 << 20).unwrap(), v, "round trip of {} bytes", v.len());
                }
                None => assert!(std::ptr::eq(v, &noise[..]), "{} compressible bytes were not compressed", v.len()),
            }
        }
    }

    #[test]
    fn sampling_skips_only_after_a_run_of_failures_and_stops_at_the_first_success() {
        // A fresh thread: the run of failures is per thread.
        std::thread::spawn(|| {
            let noise = sealkv_testkit::incompressible(2, 1024);
            let text = b"sealkv-".repeat(147);
            // A compressible value right after fewer failures than the limit is still tried.
            for _ in 0..GIVE_UP_AFTER - 1 {
                assert!(compress_sampled(&noise).is_none());
            }
            assert!(compress_sampled(&text).is_some(), "tried before the run was long enough");
            // A full run of failures: now only one value in SAMPLE is tried.
            for _ in 0..GIVE_UP_AFTER {
                assert!(compress_sampled(&noise).is_none());
            }
            let tried: Vec<bool> = (0..SAMPLE * 2).map(|_| compress_sampled(&text).is_some()).collect();
            let first = tried.iter().position(|&t| t).expect("a sample is tried within SAMPLE values");
            assert!(first < SAMPLE as usize, "sampled within {SAMPLE}: {first}");
            assert!(tried[..first].iter().all(|&t| !t));
            assert!(tried[first..].iter().all(|&t| t), "the first success ends the skipping");
            // ...and starts the count again: one more failure is not a run.
            assert!(compress_sampled(&noise).is_none());
            assert!(compress_sampled(&text).is_some(), "one failure after a success does not skip");
            // Short values are never attempted and do not count as failures.
            assert!(compress_sampled(&text[..MIN_LEN - 1]).is_none());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn refuses_lengths_before_allocating() {
        assert!(matches!(decompress(&[0, 0, 0], 10), Err(DecompressError::BadLength { .. })));
        assert!(matches!(decompress(&[0xFF, 0xFF, 0xFF, 0xFF, 0], 1 << 30), Err(DecompressError::BadLength { .. })));
        let c = compress(&[7u8; 1024]).unwrap();
        assert!(matches!(decompress(&c, 1000), Err(DecompressError::BadLength { .. })));
        let mut wrong = c.clone();
        wrong[3] ^= 1;
        assert_eq!(decompress(&wrong, 1 << 20), Err(DecompressError::Corrupt));
    }

    proptest! {
        #[test]
        fn round_trip(v in proptest::collection::vec(0u8..3, 0..2000)) {
            if let Some(c) = compress(&v) {
                prop_assert!(c.len() < v.len());
                prop_assert_eq!(decompress(&c, 1 << 20).unwrap(), v);
            }
        }

        #[test]
        fn decoder_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decompress(&bytes, 1 << 20);
        }
    }
}
