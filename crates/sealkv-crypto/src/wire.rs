//! The FSM payload: the application bytes of a Raft entry (inside the raft envelope after the
//! cutover). First byte:
//!
//! ```text
//! 0x00 single KV command        0x03 encryption: writer registration
//! 0x01 batch / transaction      0x04 encryption: bootstrap
//! 0x02 HLC lease (9 bytes)      0x05 encryption: rotation family (sub-tag)
//! 0x06, 0x07 reserved encryption range → HALT     anything else → HALT
//! ```
//!
//! Encryption payloads are `opcode ‖ wire_ver 0x01 ‖ body` (big-endian):
//!
//! ```text
//! registration (0x03): dek_id 4 ‖ full_node_id 8 ‖ local_epoch 2                      (14 bytes)
//! bootstrap    (0x04): storage_dek_id 4 ‖ len 4 ‖ wrapped ‖ raft_dek_id 4 ‖ len 4 ‖ wrapped
//!                      ‖ count 4 ‖ count × registration(14)     count ≤ 16384, wrapped 1..=4096
//! rotation     (0x05): sub_tag 1 ‖ …
//!   0x01 rotate-dek               dek_id 4 ‖ purpose 1 ‖ len 4 ‖ wrapped ‖ registration 14
//!   0x02 rewrap-deks              count 4 ‖ count × (dek_id 4 ‖ purpose 1 ‖ len 4 ‖ wrapped)  count ≤ 4096
//!   0x03 retire-dek               dek_id 4 ‖ purpose 1
//!   0x04 enable-storage-envelope  dek_id 4 ‖ registration 14
//!   0x05 enable-raft-envelope     dek_id 4 ‖ registration 14
//! purpose: 1 storage, 2 raft
//! ```
//!
//! Decoding is total: any unknown version, sub-tag or purpose, any short or trailing byte, any
//! count over its cap is a [`WireError`] (the spec's `Malformed`), and counts are checked against
//! the bytes that remain before anything is allocated.

use crate::cipher::Purpose;
use crate::codec::Reader;

/// Opcode: single KV command.
pub const OP_KV: u8 = 0x00;
/// Opcode: atomic batch.
pub const OP_BATCH: u8 = 0x01;
/// Opcode: HLC lease.
pub const OP_HLC_LEASE: u8 = 0x02;
/// Opcode: writer registration.
pub const OP_REGISTER: u8 = 0x03;
/// Opcode: bootstrap.
pub const OP_BOOTSTRAP: u8 = 0x04;
/// Opcode: rotation family.
pub const OP_ROTATION: u8 = 0x05;
/// The encryption wire version this build speaks.
pub const WIRE_VERSION: u8 = 0x01;
/// Bootstrap registration cap.
pub const MAX_BOOTSTRAP_REGISTRATIONS: u32 = 16_384;
/// Rewrap list cap.
pub const MAX_REWRAP_DEKS: u32 = 4_096;
/// Wrapped DEK length cap.
pub const MAX_WRAPPED_LEN: u32 = 4_096;
/// Encoded registration length.
pub const REGISTRATION_LEN: usize = 14;

const SUB_ROTATE: u8 = 0x01;
const SUB_REWRAP: u8 = 0x02;
const SUB_RETIRE: u8 = 0x03;
const SUB_ENABLE_STORAGE: u8 = 0x04;
const SUB_ENABLE_RAFT: u8 = 0x05;

/// A payload that must not be applied. Every variant halts the apply loop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The payload is empty.
    #[error("malformed: empty FSM payload")]
    Empty,
    /// Opcode 0x06 or 0x07.
    #[error("malformed: reserved encryption opcode {0:#04x}")]
    ReservedOpcode(u8),
    /// An opcode this build does not know.
    #[error("malformed: unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// A wire version other than 0x01.
    #[error("malformed: unknown encryption wire version {0:#04x}")]
    UnknownWireVersion(u8),
    /// An unknown rotation sub-tag.
    #[error("malformed: unknown rotation sub-tag {0:#04x}")]
    UnknownSubTag(u8),
    /// A purpose byte other than 1 or 2.
    #[error("malformed: unknown purpose {0:#04x}")]
    UnknownPurpose(u8),
    /// Fewer bytes than the field needs.
    #[error("malformed: truncated {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// Bytes left after the last field.
    #[error("malformed: {count} trailing bytes")]
    Trailing {
        /// How many.
        count: usize,
    },
    /// A count beyond its cap or beyond what the remaining bytes can hold.
    #[error("malformed: {what} count {count} exceeds its limit")]
    Count {
        /// The list.
        what: &'static str,
        /// The count read.
        count: u32,
    },
    /// A wrapped DEK length outside 1..=4096.
    #[error("malformed: wrapped DEK length {len} outside 1..=4096")]
    WrappedLen {
        /// The length read.
        len: u32,
    },
    /// A key id of 0 where an id is required.
    #[error("malformed: key id 0 in {what}")]
    ZeroKeyId {
        /// The field.
        what: &'static str,
    },
}

/// What the apply hook does with a payload, decided from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// 0x00.
    Kv,
    /// 0x01.
    Batch,
    /// 0x02.
    HlcLease,
    /// 0x03–0x05: decode with [`EncryptionEntry::decode`].
    Encryption,
}

/// Classifies an (unwrapped) FSM payload. Reserved and unknown opcodes are errors: there is no
/// legacy format to fall back to.
pub fn classify(payload: &[u8]) -> Result<PayloadKind, WireError> {
    match payload.first() {
        None => Err(WireError::Empty),
        Some(&OP_KV) => Ok(PayloadKind::Kv),
        Some(&OP_BATCH) => Ok(PayloadKind::Batch),
        Some(&OP_HLC_LEASE) => Ok(PayloadKind::HlcLease),
        Some(&(OP_REGISTER | OP_BOOTSTRAP | OP_ROTATION)) => Ok(PayloadKind::Encryption),
        Some(&b @ 0x06..=0x07) => Err(WireError::ReservedOpcode(b)),
        Some(&b) => Err(WireError::UnknownOpcode(b)),
    }
}

/// Whether the payload's opcode is in the range a sidecar-behind check must look for (0x04–0x07).
pub fn touches_sidecar(payload: &[u8]) -> bool {
    matches!(payload.first(), Some(0x04..=0x07))
}

/// Encodes an HLC lease entry: `0x02 ‖ ceiling_ms BE i64`.
pub fn encode_hlc_lease(ceiling_ms: i64) -> [u8; 9] {
    let [a, b, c, d, e, f, g, h] = ceiling_ms.to_be_bytes();
    [OP_HLC_LEASE, a, b, c, d, e, f, g, h]
}

/// Decodes an HLC lease entry (exactly 9 bytes).
pub fn decode_hlc_lease(payload: &[u8]) -> Result<i64, WireError> {
    let mut r = Reader::new(payload);
    match r.u8("opcode")? {
        OP_HLC_LEASE => {}
        b => return Err(WireError::UnknownOpcode(b)),
    }
    let v = i64::from_be_bytes(r.array("hlc ceiling")?);
    r.finish()?;
    Ok(v)
}

/// A node's claim to seal under a DEK with a given epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Registration {
    /// The DEK the node will seal under.
    pub dek_id: u32,
    /// The node's full id (FNV-1a 64 of `--node-id`).
    pub full_node_id: u64,
    /// The node's local_epoch for that DEK.
    pub local_epoch: u16,
}

impl Registration {
    /// The 14-byte encoding.
    pub fn encode(&self) -> [u8; REGISTRATION_LEN] {
        let mut out = [0u8; REGISTRATION_LEN];
        let mut w: &mut [u8] = &mut out;
        put(&mut w, &self.dek_id.to_be_bytes());
        put(&mut w, &self.full_node_id.to_be_bytes());
        put(&mut w, &self.local_epoch.to_be_bytes());
        out
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let dek_id = nonzero(r.u32("registration dek_id")?, "registration")?;
        Ok(Registration {
            dek_id,
            full_node_id: r.u64("registration full_node_id")?,
            local_epoch: r.u16("registration local_epoch")?,
        })
    }
}

fn put(w: &mut &mut [u8], bytes: &[u8]) {
    let taken = std::mem::take(w);
    if let Some((head, tail)) = taken.split_at_mut_checked(bytes.len()) {
        head.copy_from_slice(bytes);
        *w = tail;
    }
}

fn nonzero(id: u32, what: &'static str) -> Result<u32, WireError> {
    if id == 0 { Err(WireError::ZeroKeyId { what }) } else { Ok(id) }
}

/// A DEK wrapped under the KEK, with its identity.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDek {
    /// The DEK id.
    pub dek_id: u32,
    /// Its purpose (bound into the wrap).
    pub purpose: Purpose,
    /// Provider-specific wrapped bytes (1..=4096).
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for WrappedDek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WrappedDek {{ dek_id: {}, purpose: {}, wrapped: <{} bytes> }}",
            self.dek_id,
            self.purpose,
            self.wrapped.len()
        )
    }
}

/// The bootstrap entry: both first DEKs and the initial members' registrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// The first storage DEK id.
    pub storage_dek_id: u32,
    /// The storage DEK wrapped under the KEK.
    pub wrapped_storage: Vec<u8>,
    /// The first raft DEK id.
    pub raft_dek_id: u32,
    /// The raft DEK wrapped under the KEK.
    pub wrapped_raft: Vec<u8>,
    /// Registration rows, for every initial member and both DEKs.
    pub registrations: Vec<Registration>,
}

/// A decoded encryption entry (opcodes 0x03–0x05).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncryptionEntry {
    /// 0x03.
    Register(Registration),
    /// 0x04.
    Bootstrap(Bootstrap),
    /// 0x05/0x01: a new active DEK for one purpose.
    RotateDek {
        /// The new DEK.
        dek: WrappedDek,
        /// The proposer's registration for the new DEK.
        proposer: Registration,
    },
    /// 0x05/0x02: replace wrapped bytes (KEK rotation, sidecar healing).
    RewrapDeks(Vec<WrappedDek>),
    /// 0x05/0x03: drop a DEK no longer referenced anywhere.
    RetireDek {
        /// The DEK.
        dek_id: u32,
        /// Its purpose.
        purpose: Purpose,
    },
    /// 0x05/0x04: start sealing store values.
    EnableStorageEnvelope {
        /// The active storage DEK.
        dek_id: u32,
        /// The proposer's registration.
        proposer: Registration,
    },
    /// 0x05/0x05: the raft-envelope cutover.
    EnableRaftEnvelope {
        /// The active raft DEK.
        dek_id: u32,
        /// The proposer's registration.
        proposer: Registration,
    },
}

fn check_wrapped(len: usize) -> Result<u32, WireError> {
    match u32::try_from(len) {
        Ok(l @ 1..=MAX_WRAPPED_LEN) => Ok(l),
        _ => Err(WireError::WrappedLen { len: u32::try_from(len).unwrap_or(u32::MAX) }),
    }
}

fn put_wrapped(out: &mut Vec<u8>, wrapped: &[u8]) -> Result<(), WireError> {
    out.extend_from_slice(&check_wrapped(wrapped.len())?.to_be_bytes());
    out.extend_from_slice(wrapped);
    Ok(())
}

fn read_wrapped(r: &mut Reader<'_>) -> Result<Vec<u8>, WireError> {
    let len = r.u32("wrapped length")?;
    if len == 0 || len > MAX_WRAPPED_LEN {
        return Err(WireError::WrappedLen { len });
    }
    Ok(r.take(len as usize, "wrapped DEK")?.to_vec())
}

fn read_purpose(r: &mut Reader<'_>) -> Result<Purpose, WireError> {
    let b = r.u8("purpose")?;
    Purpose::from_wire(b).ok_or(WireError::UnknownPurpose(b))
}

impl EncryptionEntry {
    /// Encodes the entry for proposal. Fails (instead of proposing something every replica would
    /// halt on) when a field is outside its limits.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::with_capacity(64);
        match self {
            EncryptionEntry::Register(reg) => {
                out.extend_from_slice(&[OP_REGISTER, WIRE_VERSION]);
                out.extend_from_slice(&reg.encode());
            }
            EncryptionEntry::Bootstrap(b) => {
                let count = u32::try_from(b.registrations.len())
                    .ok()
                    .filter(|c| *c <= MAX_BOOTSTRAP_REGISTRATIONS)
                    .ok_or(WireError::Count { what: "bootstrap registration", count: u32::MAX })?;
                out.extend_from_slice(&[OP_BOOTSTRAP, WIRE_VERSION]);
                out.extend_from_slice(&b.storage_dek_id.to_be_bytes());
                put_wrapped(&mut out, &b.wrapped_storage)?;
                out.extend_from_slice(&b.raft_dek_id.to_be_bytes());
                put_wrapped(&mut out, &b.wrapped_raft)?;
                out.extend_from_slice(&count.to_be_bytes());
                for reg in &b.registrations {
                    out.extend_from_slice(&reg.encode());
                }
            }
            EncryptionEntry::RotateDek { dek, proposer } => {
                out.extend_from_slice(&[OP_ROTATION, WIRE_VERSION, SUB_ROTATE]);
                out.extend_from_slice(&dek.dek_id.to_be_bytes());
                out.push(dek.purpose.to_wire());
                put_wrapped(&mut out, &dek.wrapped)?;
                out.extend_from_slice(&proposer.encode());
            }
            EncryptionEntry::RewrapDeks(deks) => {
                let count = u32::try_from(deks.len())
                    .ok()
                    .filter(|c| *c <= MAX_REWRAP_DEKS)
                    .ok_or(WireError::Count { what: "rewrap", count: u32::MAX })?;
                out.extend_from_slice(&[OP_ROTATION, WIRE_VERSION, SUB_REWRAP]);
                out.extend_from_slice(&count.to_be_bytes());
                for d in deks {
                    out.extend_from_slice(&d.dek_id.to_be_bytes());
                    out.push(d.purpose.to_wire());
                    put_wrapped(&mut out, &d.wrapped)?;
                }
            }
            EncryptionEntry::RetireDek { dek_id, purpose } => {
                out.extend_from_slice(&[OP_ROTATION, WIRE_VERSION, SUB_RETIRE]);
                out.extend_from_slice(&dek_id.to_be_bytes());
                out.push(purpose.to_wire());
            }
            EncryptionEntry::EnableStorageEnvelope { dek_id, proposer }
            | EncryptionEntry::EnableRaftEnvelope { dek_id, proposer } => {
                let sub = if matches!(self, EncryptionEntry::EnableStorageEnvelope { .. }) {
                    SUB_ENABLE_STORAGE
                } else {
                    SUB_ENABLE_RAFT
                };
                out.extend_from_slice(&[OP_ROTATION, WIRE_VERSION, sub]);
                out.extend_from_slice(&dek_id.to_be_bytes());
                out.extend_from_slice(&proposer.encode());
            }
        }
        Ok(out)
    }

    /// Decodes an encryption payload (opcode 0x03–0x05 included). Total: see the module docs.
    ///
    /// # Examples
    ///
    /// ```
    /// use sealkv_crypto::wire::{EncryptionEntry, Registration, WireError};
    ///
    /// let entry = EncryptionEntry::Register(Registration { dek_id: 9, full_node_id: 1, local_epoch: 2 });
    /// let bytes = entry.encode()?;
    /// assert_eq!(EncryptionEntry::decode(&bytes)?, entry);
    /// assert_eq!(EncryptionEntry::decode(&[0x06, 0x01]), Err(WireError::ReservedOpcode(0x06)));
    /// # Ok::<(), WireError>(())
    /// ```
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        let op = r.u8("opcode")?;
        match op {
            OP_REGISTER | OP_BOOTSTRAP | OP_ROTATION => {}
            0x06 | 0x07 => return Err(WireError::ReservedOpcode(op)),
            b => return Err(WireError::UnknownOpcode(b)),
        }
        let ver = r.u8("wire version")?;
        if ver != WIRE_VERSION {
            return Err(WireError::UnknownWireVersion(ver));
        }
        let entry = match op {
            OP_REGISTER => EncryptionEntry::Register(Registration::read(&mut r)?),
            OP_BOOTSTRAP => EncryptionEntry::Bootstrap(read_bootstrap(&mut r)?),
            _ => read_rotation(&mut r)?,
        };
        r.finish()?;
        Ok(entry)
    }

    /// The DEK id the entry is about, for halt log lines.
    pub fn key_id(&self) -> u32 {
        match self {
            EncryptionEntry::Register(r) => r.dek_id,
            EncryptionEntry::Bootstrap(b) => b.storage_dek_id,
            EncryptionEntry::RotateDek { dek, .. } => dek.dek_id,
            EncryptionEntry::RewrapDeks(d) => d.first().map_or(0, |d| d.dek_id),
            EncryptionEntry::RetireDek { dek_id, .. }
            | EncryptionEntry::EnableStorageEnvelope { dek_id, .. }
            | EncryptionEntry::EnableRaftEnvelope { dek_id, .. } => *dek_id,
        }
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            EncryptionEntry::Register(_) => "register-writer",
            EncryptionEntry::Bootstrap(_) => "bootstrap",
            EncryptionEntry::RotateDek { .. } => "rotate-dek",
            EncryptionEntry::RewrapDeks(_) => "rewrap-deks",
            EncryptionEntry::RetireDek { .. } => "retire-dek",
            EncryptionEntry::EnableStorageEnvelope { .. } => "enable-storage-envelope",
            EncryptionEntry::EnableRaftEnvelope { .. } => "enable-raft-envelope",
        }
    }
}

fn read_bootstrap(r: &mut Reader<'_>) -> Result<Bootstrap, WireError> {
    let storage_dek_id = nonzero(r.u32("storage_dek_id")?, "bootstrap storage_dek_id")?;
    let wrapped_storage = read_wrapped(r)?;
    let raft_dek_id = nonzero(r.u32("raft_dek_id")?, "bootstrap raft_dek_id")?;
    let wrapped_raft = read_wrapped(r)?;
    let count = r.u32("registration count")?;
    if count > MAX_BOOTSTRAP_REGISTRATIONS || (count as usize).checked_mul(REGISTRATION_LEN) != Some(r.remaining()) {
        return Err(WireError::Count { what: "bootstrap registration", count });
    }
    let mut registrations = Vec::with_capacity(count as usize);
    for _ in 0..count {
        registrations.push(Registration::read(r)?);
    }
    Ok(Bootstrap { storage_dek_id, wrapped_storage, raft_dek_id, wrapped_raft, registrations })
}

fn read_rotation(r: &mut Reader<'_>) -> Result<EncryptionEntry, WireError> {
    let sub = r.u8("sub-tag")?;
    Ok(match sub {
        SUB_ROTATE => {
            let dek_id = nonzero(r.u32("dek_id")?, "rotate-dek")?;
            let purpose = read_purpose(r)?;
            let wrapped = read_wrapped(r)?;
            let proposer = Registration::read(r)?;
            EncryptionEntry::RotateDek { dek: WrappedDek { dek_id, purpose, wrapped }, proposer }
        }
        SUB_REWRAP => {
            let count = r.u32("rewrap count")?;
            // Smallest item: id 4 + purpose 1 + len 4 + 1 wrapped byte.
            if count > MAX_REWRAP_DEKS || (count as usize).saturating_mul(10) > r.remaining() {
                return Err(WireError::Count { what: "rewrap", count });
            }
            let mut deks = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let dek_id = nonzero(r.u32("dek_id")?, "rewrap-deks")?;
                let purpose = read_purpose(r)?;
                let wrapped = read_wrapped(r)?;
                deks.push(WrappedDek { dek_id, purpose, wrapped });
            }
            EncryptionEntry::RewrapDeks(deks)
        }
        SUB_RETIRE => {
            let dek_id = nonzero(r.u32("dek_id")?, "retire-dek")?;
            EncryptionEntry::RetireDek { dek_id, purpose: read_purpose(r)? }
        }
        SUB_ENABLE_STORAGE => EncryptionEntry::EnableStorageEnvelope {
            dek_id: nonzero(r.u32("dek_id")?, "enable-storage-envelope")?,
            proposer: Registration::read(r)?,
        },
        SUB_ENABLE_RAFT => EncryptionEntry::EnableRaftEnvelope {
            dek_id: nonzero(r.u32("dek_id")?, "enable-raft-envelope")?,
            proposer: Registration::read(r)?,
        },
        other => return Err(WireError::UnknownSubTag(other)),
    })
}
