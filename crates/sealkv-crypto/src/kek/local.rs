//! AES-256-GCM wrapping under a KEK held in memory (shared by the file and env providers).
//!
//! ```text
//! wrapped = nonce 12 (random) ‖ ciphertext 32 ‖ tag 16     = 60 bytes
//! AAD     = "sealkv/dek/v1" ‖ purpose 1 ‖ dek_id 4
//! ```
//!
//! Wrap nonces are random, unlike envelope nonces: a KEK wraps a handful of DEKs in its life, far
//! below the birthday bound, and has no writer registry to make counters unique across nodes.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::{DekIdentity, KekError, KekProvider};
use crate::cipher::{CryptoError, DEK_LEN, NONCE_LEN, TAG_LEN, random_fill};

/// Length of a locally wrapped DEK.
pub const WRAPPED_LEN: usize = NONCE_LEN + DEK_LEN + TAG_LEN;

/// A KEK held in process memory: what the file and env loaders produce.
pub struct LocalKek {
    key: LessSafeKey,
    source: String,
}

impl fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalKek {{ source: {:?}, key: <redacted> }}", self.source)
    }
}

impl LocalKek {
    /// Builds the key schedule; `source` names where the bytes came from, for messages.
    pub fn new(bytes: &Zeroizing<[u8; DEK_LEN]>, source: String) -> Result<Self, KekError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes.as_slice()).map_err(|_| CryptoError::KeySetup)?;
        Ok(LocalKek { key: LessSafeKey::new(unbound), source })
    }

    /// Where the KEK came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn seal_dek(&self, id: DekIdentity, dek: &[u8; DEK_LEN]) -> Result<Vec<u8>, KekError> {
        let mut nonce = [0u8; NONCE_LEN];
        random_fill(&mut nonce)?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(dek);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.aad()),
                out.get_mut(NONCE_LEN..).unwrap_or_default(),
            )
            .map_err(|_| CryptoError::Seal)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open_dek(&self, id: DekIdentity, wrapped: &[u8]) -> Result<Zeroizing<[u8; DEK_LEN]>, KekError> {
        let wrong_len = || KekError::WrappedLength {
            dek_id: id.dek_id,
            purpose: id.purpose,
            len: wrapped.len(),
            expected: WRAPPED_LEN,
        };
        if wrapped.len() != WRAPPED_LEN {
            return Err(wrong_len());
        }
        let (nonce, sealed) = wrapped.split_first_chunk::<NONCE_LEN>().ok_or_else(wrong_len)?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let pt = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(id.aad()), buf.as_mut_slice())
            .map_err(|_| KekError::Unwrap { dek_id: id.dek_id, purpose: id.purpose })?;
        let mut out = Zeroizing::new([0u8; DEK_LEN]);
        let src: &[u8; DEK_LEN] = (&*pt).try_into().map_err(|_| wrong_len())?;
        out.copy_from_slice(src);
        Ok(out)
    }
}

impl KekProvider for LocalKek {
    fn describe(&self) -> String {
        self.source.clone()
    }
    fn wrap(&self, id: DekIdentity, dek: &[u8; DEK_LEN]) -> Result<Vec<u8>, KekError> {
        self.seal_dek(id, dek)
    }
    fn unwrap(&self, id: DekIdentity, wrapped: &[u8]) -> Result<Zeroizing<[u8; DEK_LEN]>, KekError> {
        self.open_dek(id, wrapped)
    }
}
