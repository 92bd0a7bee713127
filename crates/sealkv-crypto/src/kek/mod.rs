//! Key-encryption keys: what wraps DEKs for the sidecar and the Raft log.
//!
//! A KEK never leaves its provider's custody more than it has to: the file and env providers
//! hold 32 bytes in a zeroizing buffer, KMS providers (PKCS#11, AWS KMS) hold only a handle. All
//! of them implement [`KekProvider`], which is synchronous: the applier runs on the apply loop
//! and must finish or fail each entry in order. A network provider owns its own runtime and
//! timeouts behind this trait, so callers never change when one is added.
//!
//! Every provider binds the DEK's identity ([`DekIdentity`]: purpose and id) into the wrap, so a
//! wrapped DEK copied to another id or purpose in the sidecar fails to unwrap.

mod env;
mod file;
mod local;

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

pub use env::EnvKek;
pub use file::FileKek;
pub use local::{LocalKek, WRAPPED_LEN};

use crate::cipher::{CryptoError, DEK_LEN, Purpose};

/// The identity a wrap is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DekIdentity {
    /// The DEK's purpose.
    pub purpose: Purpose,
    /// The DEK's id.
    pub dek_id: u32,
}

impl DekIdentity {
    /// `"sealkv/dek/v1" ‖ purpose 1 ‖ dek_id 4`: the GCM AAD of local wraps and the encryption
    /// context of KMS wraps.
    pub fn aad(&self) -> [u8; 18] {
        let mut out = [0u8; 18];
        let (label, rest) = out.split_at_mut(13);
        label.copy_from_slice(b"sealkv/dek/v1");
        let [a, b, c, d] = self.dek_id.to_be_bytes();
        rest.copy_from_slice(&[self.purpose.to_wire(), a, b, c, d]);
        out
    }
}

/// Why a KEK could not be loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KekError {
    /// The KEK file could not be opened or read.
    #[error("cannot read KEK file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The KEK file is readable by group or others.
    #[error(
        "KEK file {path} has mode {mode:04o}; it must not be accessible by group or others (run: chmod 600 {path})"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The KEK path is not a regular file (a FIFO, device or directory).
    #[error("KEK path {path} is not a regular file")]
    NotRegularFile {
        /// The path.
        path: PathBuf,
    },
    /// The KEK is not exactly 32 bytes.
    #[error("KEK from {source_name} is {len} bytes; it must be exactly 32 raw bytes")]
    WrongLength {
        /// Where it came from (never its bytes).
        source_name: String,
        /// The length seen (33 means "more than 32").
        len: usize,
    },
    /// The environment variable is unset or not valid Unicode.
    #[error("environment variable {var} is not set")]
    EnvMissing {
        /// The variable.
        var: String,
    },
    /// The environment variable is not base64 or hex of 32 bytes.
    #[error("environment variable {var} must hold 32 bytes as base64 (44 chars) or hex (64 chars)")]
    EnvDecode {
        /// The variable.
        var: String,
    },
    /// The wrapped bytes did not unwrap: wrong KEK, or the wrapped DEK was moved to another id or
    /// purpose, or tampered with.
    #[error("the KEK does not unwrap {purpose} DEK {dek_id} (wrong KEK, or the wrapped key was altered or moved)")]
    Unwrap {
        /// The DEK id.
        dek_id: u32,
        /// Its purpose.
        purpose: Purpose,
    },
    /// The wrapped bytes have a length this provider never produces.
    #[error("wrapped {purpose} DEK {dek_id} is {len} bytes; this KEK provider writes {expected}")]
    WrappedLength {
        /// The DEK id.
        dek_id: u32,
        /// Its purpose.
        purpose: Purpose,
        /// The length seen.
        len: usize,
        /// The length expected.
        expected: usize,
    },
    /// The AEAD or RNG failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A custodian of the KEK. Implementations must never log or expose key bytes, must bind the
/// [`DekIdentity`] into every wrap, and must be safe to call from any thread.
pub trait KekProvider: Send + Sync + fmt::Debug {
    /// A description for logs and errors (a path, a URI) — never key bytes.
    fn describe(&self) -> String;
    /// Wraps a DEK for storage in the sidecar and in Raft entries.
    fn wrap(&self, id: DekIdentity, dek: &[u8; DEK_LEN]) -> Result<Vec<u8>, KekError>;
    /// Unwraps a DEK; fails unless `wrapped` was produced by this KEK for exactly `id`.
    fn unwrap(&self, id: DekIdentity, wrapped: &[u8]) -> Result<Zeroizing<[u8; DEK_LEN]>, KekError>;
}
