//! The writer registry: replicated rows proving that no two nodes ever seal under the same
//! `(DEK, node16)` nonce prefix, and that no node reuses an epoch.
//!
//! ```text
//! key   = "!encryption|writers|" ‖ dek_id 4 ‖ "|" ‖ node16 2           (27 bytes)
//! value = full_node_id 8 ‖ first_seen_epoch 2 ‖ last_seen_epoch 2     (12 bytes)
//! ```
//!
//! The rows live outside the user keyspace and are written in the same atomic batch as the apply
//! that created them; [`RegistryStore`] is the seam the store implements. [`decide`] is the
//! five-case registration rule every replica runs identically.

use std::collections::BTreeMap;

use crate::codec::Reader;
use crate::nonce::node16;
use crate::wire::{Registration, WireError};

/// Prefix of every registry key.
pub const KEY_PREFIX: &[u8; 20] = b"!encryption|writers|";
/// Encoded key length.
pub const KEY_LEN: usize = 27;
/// Encoded value length.
pub const VALUE_LEN: usize = 12;

/// A registry key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    /// The DEK.
    pub dek_id: u32,
    /// The nonce node id.
    pub node16: u16,
}

impl RowKey {
    /// The 27-byte key.
    pub fn encode(&self) -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        let (prefix, rest) = out.split_at_mut(KEY_PREFIX.len());
        prefix.copy_from_slice(KEY_PREFIX);
        let [a, b, c, d] = self.dek_id.to_be_bytes();
        let [e, f] = self.node16.to_be_bytes();
        rest.copy_from_slice(&[a, b, c, d, b'|', e, f]);
        out
    }

    /// The prefix of every key of one DEK (for deleting its slice).
    pub fn dek_prefix(dek_id: u32) -> [u8; 24] {
        let mut out = [0u8; 24];
        let (prefix, rest) = out.split_at_mut(KEY_PREFIX.len());
        prefix.copy_from_slice(KEY_PREFIX);
        rest.copy_from_slice(&dek_id.to_be_bytes());
        out
    }

    /// Decodes a 27-byte key.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        if r.take(KEY_PREFIX.len(), "registry key prefix")? != KEY_PREFIX {
            return Err(WireError::Truncated { what: "registry key prefix" });
        }
        let dek_id = r.u32("registry dek_id")?;
        if r.u8("registry separator")? != b'|' {
            return Err(WireError::Truncated { what: "registry separator" });
        }
        let node16 = r.u16("registry node16")?;
        r.finish()?;
        Ok(RowKey { dek_id, node16 })
    }
}

/// A registry value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The node that owns the `(DEK, node16)` slot.
    pub full_node_id: u64,
    /// The epoch it first registered with.
    pub first_seen_epoch: u16,
    /// The highest epoch it has registered.
    pub last_seen_epoch: u16,
}

impl Row {
    /// The 12-byte value.
    pub fn encode(&self) -> [u8; VALUE_LEN] {
        let [a, b, c, d, e, f, g, h] = self.full_node_id.to_be_bytes();
        let [i, j] = self.first_seen_epoch.to_be_bytes();
        let [k, l] = self.last_seen_epoch.to_be_bytes();
        [a, b, c, d, e, f, g, h, i, j, k, l]
    }

    /// Decodes a 12-byte value.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let row = Row {
            full_node_id: r.u64("registry full_node_id")?,
            first_seen_epoch: r.u16("registry first_seen_epoch")?,
            last_seen_epoch: r.u16("registry last_seen_epoch")?,
        };
        r.finish()?;
        Ok(row)
    }
}

/// What a valid registration does to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No row yet: insert with first = last = epoch.
    Insert(Row),
    /// Same node, newer epoch: bump last_seen.
    Bump(Row),
    /// Same node, same epoch: nothing to do (replay).
    Replay,
}

/// A registration that must halt the apply loop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The node registered an epoch lower than one it registered before: it was restored from an
    /// old copy and would reuse nonces.
    #[error(
        "LocalEpochRollback: node {full_node_id:#018x} registered epoch {epoch} for DEK {dek_id}, \
         below its recorded last_seen {last_seen}"
    )]
    LocalEpochRollback {
        /// The DEK.
        dek_id: u32,
        /// The node.
        full_node_id: u64,
        /// The epoch offered.
        epoch: u16,
        /// The epoch on record.
        last_seen: u16,
    },
    /// Another node already owns this `(DEK, node16)` slot.
    #[error(
        "NodeIdCollision: node {full_node_id:#018x} and node {existing:#018x} share nonce node id \
         {node16:#06x} under DEK {dek_id}"
    )]
    NodeIdCollision {
        /// The DEK.
        dek_id: u32,
        /// The slot.
        node16: u16,
        /// The node registering.
        full_node_id: u64,
        /// The node on record.
        existing: u64,
    },
}

/// The five-case rule (spec 03 §2), pure.
pub fn decide(existing: Option<&Row>, reg: &Registration) -> Result<Decision, RegistrationError> {
    let Some(row) = existing else {
        return Ok(Decision::Insert(Row {
            full_node_id: reg.full_node_id,
            first_seen_epoch: reg.local_epoch,
            last_seen_epoch: reg.local_epoch,
        }));
    };
    if row.full_node_id != reg.full_node_id {
        return Err(RegistrationError::NodeIdCollision {
            dek_id: reg.dek_id,
            node16: node16(reg.full_node_id),
            full_node_id: reg.full_node_id,
            existing: row.full_node_id,
        });
    }
    match reg.local_epoch.cmp(&row.last_seen_epoch) {
        std::cmp::Ordering::Greater => Ok(Decision::Bump(Row { last_seen_epoch: reg.local_epoch, ..*row })),
        std::cmp::Ordering::Equal => Ok(Decision::Replay),
        std::cmp::Ordering::Less => Err(RegistrationError::LocalEpochRollback {
            dek_id: reg.dek_id,
            full_node_id: reg.full_node_id,
            epoch: reg.local_epoch,
            last_seen: row.last_seen_epoch,
        }),
    }
}

/// A failure of the storage behind a [`RegistryStore`].
#[derive(Debug, thiserror::Error)]
#[error("writer registry storage: {0}")]
pub struct StoreError(#[from] pub Box<dyn std::error::Error + Send + Sync>);

/// Where registry rows live. The persistent implementation writes into the apply batch, so rows
/// become durable atomically with the applied index that produced them.
pub trait RegistryStore {
    /// The row at `key`.
    fn get(&self, key: RowKey) -> Result<Option<Row>, StoreError>;
    /// Inserts or replaces the row at `key`.
    fn put(&mut self, key: RowKey, row: Row) -> Result<(), StoreError>;
    /// Deletes every row of a DEK (retire-dek).
    fn remove_dek(&mut self, dek_id: u32) -> Result<(), StoreError>;
    /// Every row, ordered by key (snapshots, status, guards).
    fn rows(&self) -> Result<Vec<(RowKey, Row)>, StoreError>;
}

/// An in-memory registry (tests, tools).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemRegistry {
    rows: BTreeMap<RowKey, Row>,
}

impl MemRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RegistryStore for MemRegistry {
    fn get(&self, key: RowKey) -> Result<Option<Row>, StoreError> {
        Ok(self.rows.get(&key).copied())
    }
    fn put(&mut self, key: RowKey, row: Row) -> Result<(), StoreError> {
        self.rows.insert(key, row);
        Ok(())
    }
    fn remove_dek(&mut self, dek_id: u32) -> Result<(), StoreError> {
        self.rows.retain(|k, _| k.dek_id != dek_id);
        Ok(())
    }
    fn rows(&self) -> Result<Vec<(RowKey, Row)>, StoreError> {
        Ok(self.rows.iter().map(|(k, v)| (*k, *v)).collect())
    }
}

/// The registry key of a registration.
pub fn key_of(reg: &Registration) -> RowKey {
    RowKey { dek_id: reg.dek_id, node16: node16(reg.full_node_id) }
}

/// Decides a sequence of registrations as if applied in order, without writing anything, and
/// returns the writes to perform. Used so that a whole batch is checked before any side effect.
pub fn plan(store: &dyn RegistryStore, regs: &[Registration]) -> Result<Vec<(RowKey, Row)>, PlanError> {
    let mut overlay: BTreeMap<RowKey, Row> = BTreeMap::new();
    let mut writes = Vec::new();
    for reg in regs {
        let key = key_of(reg);
        let existing = match overlay.get(&key) {
            Some(r) => Some(*r),
            None => store.get(key)?,
        };
        match decide(existing.as_ref(), reg)? {
            Decision::Insert(row) | Decision::Bump(row) => {
                overlay.insert(key, row);
                writes.push((key, row));
            }
            Decision::Replay => {}
        }
    }
    Ok(writes)
}

/// Why [`plan`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A registration breaks the rule.
    #[error(transparent)]
    Rule(#[from] RegistrationError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(dek_id: u32, full: u64, epoch: u16) -> Registration {
        Registration { dek_id, full_node_id: full, local_epoch: epoch }
    }

    #[test]
    fn key_and_value_layout_pins() {
        let k = RowKey { dek_id: 0x1234_5678, node16: 0xABCD };
        assert_eq!(&k.encode(), b"!encryption|writers|\x12\x34\x56\x78|\xAB\xCD");
        assert_eq!(RowKey::decode(&k.encode()).unwrap(), k);
        let v = Row { full_node_id: 0x0102_0304_0506_0708, first_seen_epoch: 3, last_seen_epoch: 0x0105 };
        assert_eq!(v.encode(), [1, 2, 3, 4, 5, 6, 7, 8, 0, 3, 1, 5]);
        assert_eq!(Row::decode(&v.encode()).unwrap(), v);
        assert_eq!(&RowKey::dek_prefix(0x1234_5678)[..], &k.encode()[..24]);
    }

    #[test]
    fn decoders_reject_bad_lengths_and_separators() {
        let k = RowKey { dek_id: 1, node16: 2 }.encode();
        assert!(RowKey::decode(&k[..26]).is_err());
        let mut long = k.to_vec();
        long.push(0);
        assert!(RowKey::decode(&long).is_err());
        let mut bad = k;
        bad[24] = b'/';
        assert!(RowKey::decode(&bad).is_err());
        let mut bad = k;
        bad[0] = b'?';
        assert!(RowKey::decode(&bad).is_err());
        assert!(Row::decode(&[0; 11]).is_err());
        assert!(Row::decode(&[0; 13]).is_err());
    }

    #[test]
    fn five_cases() {
        let full = 0xAAAA_0000_0000_0001;
        let row = Row { full_node_id: full, first_seen_epoch: 2, last_seen_epoch: 5 };
        // 1. no row
        assert_eq!(
            decide(None, &reg(1, full, 4)).unwrap(),
            Decision::Insert(Row { full_node_id: full, first_seen_epoch: 4, last_seen_epoch: 4 })
        );
        // 2. newer epoch
        assert_eq!(decide(Some(&row), &reg(1, full, 6)).unwrap(), Decision::Bump(Row { last_seen_epoch: 6, ..row }));
        // 3. replay
        assert_eq!(decide(Some(&row), &reg(1, full, 5)).unwrap(), Decision::Replay);
        // 4. rollback
        assert!(matches!(decide(Some(&row), &reg(1, full, 4)), Err(RegistrationError::LocalEpochRollback { .. })));
        // 5. another node on the same node16
        let other = 0xBBBB_0000_0000_0001;
        assert!(matches!(decide(Some(&row), &reg(1, other, 9)), Err(RegistrationError::NodeIdCollision { .. })));
    }

    #[test]
    fn plan_sees_its_own_earlier_rows() {
        let store = MemRegistry::new();
        let a = 0x1111_0000_0000_0007;
        let b = 0x2222_0000_0000_0007; // same node16 as a
        let w = plan(&store, &[reg(1, a, 0), reg(1, a, 0), reg(2, a, 0)]).unwrap();
        assert_eq!(w.len(), 2);
        assert!(matches!(
            plan(&store, &[reg(1, a, 0), reg(1, b, 0)]),
            Err(PlanError::Rule(RegistrationError::NodeIdCollision { .. }))
        ));
    }
}
