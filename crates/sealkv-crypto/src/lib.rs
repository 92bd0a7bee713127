//! sealkv's encryption core.
//!
//! Everything that decides whether bytes are ciphertext lives here, so the rest of the system
//! never re-derives a nonce, an AAD or a key-lifecycle rule: the store calls [`envelope`] to seal
//! values, the apply hook calls [`envelope`] to unwrap Raft payloads and [`applier`] to apply
//! encryption entries, and startup calls [`guards`]. The crate does no network I/O and links no
//! cloud SDK; its only file I/O is the sidecar and the KEK file.
//!
//! Byte layouts are specified in `shared/spec/02-formats.md` and drawn again in the doc comment of
//! the module that codes them.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod applier;
pub mod cipher;
pub mod codec;
pub mod envelope;
pub mod failpoint;
pub mod guards;
pub mod kek;
pub mod keystore;
pub mod nonce;
pub mod registry;
pub mod sidecar;
pub mod wire;

pub use cipher::{DEK_LEN, Dek, Purpose};
pub use envelope::{IntegrityError, Sealer};
pub use keystore::Keystore;
pub use nonce::{NonceFactory, full_node_id, node16};
