//! The in-memory set of unwrapped DEKs and the active id per purpose.
//!
//! Reads (every seal and open) are lock-free: they load an immutable snapshot through
//! `arc-swap`. Writes (apply of bootstrap, rotation, retire; startup) are rare, serialized by a
//! mutex, and publish a new snapshot. A key id is set once: installing the same bytes again is a
//! no-op (replay), different bytes are a [`KeystoreError::KeyConflict`]. Key bytes are wiped when
//! the last snapshot holding them drops.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::cipher::{CryptoError, DEK_LEN, Dek, Purpose};

/// Why a keystore change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// The id is loaded with different bytes.
    #[error("key id {key_id} is already loaded with different key bytes (KeyConflict)")]
    KeyConflict {
        /// The conflicting id.
        key_id: u32,
    },
    /// The id is loaded for the other purpose.
    #[error("key id {key_id} is already loaded as a {existing} key, not {requested}")]
    PurposeConflict {
        /// The conflicting id.
        key_id: u32,
        /// The loaded key's purpose.
        existing: Purpose,
        /// The purpose asked for.
        requested: Purpose,
    },
    /// The id is not loaded.
    #[error("key id {key_id} is not loaded")]
    NotLoaded {
        /// The missing id.
        key_id: u32,
    },
    /// Removing the active key of a purpose is refused.
    #[error("key id {key_id} is the active {purpose} key and cannot be dropped")]
    Active {
        /// The active id.
        key_id: u32,
        /// Its purpose.
        purpose: Purpose,
    },
    /// Building the key schedule failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// One published state. A handful of keys at most (active + not yet retired), so a linear scan
/// of a small vector beats hashing on the per-read path.
#[derive(Default, Clone)]
struct KeySet {
    keys: Vec<(u32, Arc<Dek>)>,
    active: [u32; 2],
}

impl KeySet {
    fn find(&self, id: u32) -> Option<&Arc<Dek>> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, d)| d)
    }
}

/// Unwrapped DEKs by id, plus the active id per purpose.
#[derive(Default)]
pub struct Keystore {
    snap: ArcSwap<KeySet>,
    write: Mutex<()>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snap.load();
        let mut ids: Vec<_> = s.keys.iter().map(|(k, _)| *k).collect();
        ids.sort_unstable();
        f.debug_struct("Keystore").field("ids", &ids).field("active", &s.active).finish()
    }
}

impl Keystore {
    /// An empty keystore.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key with this id, if loaded. Lock-free.
    pub fn get(&self, key_id: u32) -> Option<Arc<Dek>> {
        self.snap.load().find(key_id).cloned()
    }

    /// Runs `f` on the key with this id without taking a reference count: the per-read path.
    pub fn with_key<R>(&self, key_id: u32, f: impl FnOnce(&Dek) -> R) -> Option<R> {
        self.snap.load().find(key_id).map(|d| f(d))
    }

    /// The active key of a purpose, if any. Lock-free.
    pub fn active(&self, purpose: Purpose) -> Option<Arc<Dek>> {
        let s = self.snap.load();
        let id = *s.active.get(purpose.slot())?;
        s.find(id).cloned()
    }

    /// The active id of a purpose (0 when none).
    pub fn active_id(&self, purpose: Purpose) -> u32 {
        self.snap.load().active.get(purpose.slot()).copied().unwrap_or(0)
    }

    /// Every loaded id, sorted.
    pub fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<_> = self.snap.load().keys.iter().map(|(k, _)| *k).collect();
        ids.sort_unstable();
        ids
    }

    /// Checks that `install(key_id, purpose, bytes)` would succeed, without changing anything.
    /// Returns whether the key is already loaded (a replay).
    pub fn check_install(&self, key_id: u32, purpose: Purpose, bytes: &[u8; DEK_LEN]) -> Result<bool, KeystoreError> {
        check(&self.snap.load(), key_id, purpose, bytes)
    }

    /// Loads a key. Identical bytes for a loaded id are a no-op; different bytes or purpose are
    /// refused.
    pub fn install(&self, key_id: u32, purpose: Purpose, bytes: &[u8; DEK_LEN]) -> Result<(), KeystoreError> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.snap.load_full();
        if check(&cur, key_id, purpose, bytes)? {
            return Ok(());
        }
        let dek = Arc::new(Dek::new(key_id, purpose, bytes)?);
        let mut next = KeySet::clone(&cur);
        next.keys.push((key_id, dek));
        self.snap.store(Arc::new(next));
        Ok(())
    }

    /// Makes a loaded key the active one of its purpose.
    pub fn set_active(&self, purpose: Purpose, key_id: u32) -> Result<(), KeystoreError> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.snap.load_full();
        match cur.find(key_id) {
            None => return Err(KeystoreError::NotLoaded { key_id }),
            Some(d) if d.purpose() != purpose => {
                return Err(KeystoreError::PurposeConflict { key_id, existing: d.purpose(), requested: purpose });
            }
            Some(_) => {}
        }
        let mut next = KeySet::clone(&cur);
        if let Some(slot) = next.active.get_mut(purpose.slot()) {
            *slot = key_id;
        }
        self.snap.store(Arc::new(next));
        Ok(())
    }

    /// Drops a retired key. Refuses the active key; absent ids are a no-op (replay).
    pub fn remove(&self, key_id: u32) -> Result<(), KeystoreError> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.snap.load_full();
        let Some(d) = cur.find(key_id) else { return Ok(()) };
        if cur.active.get(d.purpose().slot()) == Some(&key_id) {
            return Err(KeystoreError::Active { key_id, purpose: d.purpose() });
        }
        let mut next = KeySet::clone(&cur);
        next.keys.retain(|(k, _)| *k != key_id);
        self.snap.store(Arc::new(next));
        Ok(())
    }
}

fn check(s: &KeySet, key_id: u32, purpose: Purpose, bytes: &[u8; DEK_LEN]) -> Result<bool, KeystoreError> {
    if key_id == 0 {
        return Err(CryptoError::ZeroKeyId.into());
    }
    match s.find(key_id) {
        None => Ok(false),
        Some(d) if d.purpose() != purpose => {
            Err(KeystoreError::PurposeConflict { key_id, existing: d.purpose(), requested: purpose })
        }
        Some(d) if d.same_bytes(bytes) => Ok(true),
        Some(_) => Err(KeystoreError::KeyConflict { key_id }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_once_semantics() {
        let ks = Keystore::new();
        ks.install(7, Purpose::Storage, &[1; 32]).unwrap();
        ks.install(7, Purpose::Storage, &[1; 32]).unwrap();
        assert_eq!(ks.install(7, Purpose::Storage, &[2; 32]), Err(KeystoreError::KeyConflict { key_id: 7 }));
        assert!(matches!(ks.install(7, Purpose::Raft, &[1; 32]), Err(KeystoreError::PurposeConflict { .. })));
        assert!(ks.get(7).unwrap().same_bytes(&[1; 32]), "conflicting install must not replace the key");
        assert!(ks.install(0, Purpose::Storage, &[1; 32]).is_err());
    }

    #[test]
    fn active_and_remove() {
        let ks = Keystore::new();
        assert!(ks.active(Purpose::Raft).is_none());
        assert_eq!(ks.set_active(Purpose::Raft, 9), Err(KeystoreError::NotLoaded { key_id: 9 }));
        ks.install(9, Purpose::Raft, &[3; 32]).unwrap();
        ks.install(10, Purpose::Raft, &[4; 32]).unwrap();
        assert!(matches!(ks.set_active(Purpose::Storage, 9), Err(KeystoreError::PurposeConflict { .. })));
        ks.set_active(Purpose::Raft, 9).unwrap();
        assert_eq!(ks.active(Purpose::Raft).unwrap().id(), 9);
        assert_eq!(ks.active_id(Purpose::Storage), 0);
        assert!(matches!(ks.remove(9), Err(KeystoreError::Active { .. })));
        ks.remove(10).unwrap();
        ks.remove(10).unwrap();
        assert_eq!(ks.ids(), vec![9]);
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let ks = Keystore::new();
        ks.install(5, Purpose::Storage, &[0xAB; 32]).unwrap();
        let text = format!("{ks:?} {:?}", ks.get(5).unwrap());
        assert!(!text.to_lowercase().contains("ab, ") && !text.contains("171"), "{text}");
        assert!(text.contains("redacted"));
    }
}
