//! Compress-then-encrypt: LZ4 block format with the uncompressed length in front
//! (`len 4 BE ‖ lz4 block`), applied only when it makes the plaintext smaller.

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

/// The compressed form of `plaintext` if it is smaller, else `None`.
pub fn compress(plaintext: &[u8]) -> Option<Vec<u8>> {
    if plaintext.len() < MIN_LEN {
        return None;
    }
    let len = u32::try_from(plaintext.len()).ok()?;
    let mut out = Vec::with_capacity(4 + lz4_flex::block::get_maximum_output_size(plaintext.len()));
    out.extend_from_slice(&len.to_be_bytes());
    out.resize(out.capacity(), 0);
    let n = lz4_flex::block::compress_into(plaintext, out.get_mut(4..)?).ok()?;
    out.truncate(4 + n);
    (out.len() < plaintext.len()).then_some(out)
}

/// Decompresses a body written by [`compress`], refusing to allocate more than `limit` bytes or
/// more than the input could expand to.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let (len, block) =
        body.split_first_chunk::<4>().ok_or(DecompressError::BadLength { claimed: 0, len: body.len(), limit })?;
    let claimed = u32::from_be_bytes(*len) as usize;
    if claimed > limit || claimed > block.len().saturating_mul(MAX_RATIO) {
        return Err(DecompressError::BadLength { claimed: claimed as u64, len: body.len(), limit });
    }
    let mut out = vec![0u8; claimed];
    match lz4_flex::block::decompress_into(block, &mut out) {
        Ok(n) if n == claimed => Ok(out),
        _ => Err(DecompressError::Corrupt),
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
