//! The sidecar: `<data-dir>/encryption/keys.json`, this node's wrapped DEKs, active ids, cluster
//! flags, per-DEK local epochs and the last applied encryption-relevant index.
//!
//! ```json
//! { "version": 1, "raft_applied_index": 184273,
//!   "storage_envelope_active": true, "storage_cutover_index": 184150,
//!   "raft_envelope_cutover_index": 184201,
//!   "active": { "storage": 305419896, "raft": 2596069104 },
//!   "keys": { "305419896": { "purpose": "storage", "wrapped": "<base64>",
//!             "created": "2026-11-22T10:00:00Z", "local_epoch": 7, "retired": false } } }
//! ```
//!
//! Index fields use 0 for "not yet" (index 0 is never an encryption entry). Validation runs on
//! read and on write; unknown fields are refused (we own the format). Writes are crash-durable:
//! remove a stale `keys.json.tmp`, create it `O_EXCL` mode 0600, write, fsync, rename over
//! `keys.json`, fsync the directory — so after a crash the file is the old or the new content,
//! never torn. The file holds only wrapped keys and is safe to leak.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::cipher::Purpose;
use crate::failpoint;
use crate::nonce::EPOCH_EXHAUSTED;
use crate::wire::MAX_WRAPPED_LEN;

/// The sidecar's directory under the data dir.
pub const DIR_NAME: &str = "encryption";
/// The sidecar's file name.
pub const FILE_NAME: &str = "keys.json";
const TMP_NAME: &str = "keys.json.tmp";
const PROBE_NAME: &str = ".durability-probe";
/// A sidecar larger than this is refused before parsing.
pub const MAX_FILE_LEN: u64 = 16 << 20;

/// Why a sidecar could not be read, validated or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    /// Reading or writing failed.
    #[error("sidecar I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The directory cannot be fsync'd, so a rename cannot be made durable.
    #[error(
        "UnsupportedFilesystem: fsync of directory {path} failed ({source}); put the data dir on a \
         filesystem that supports directory fsync (ext4, xfs)"
    )]
    UnsupportedFilesystem {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid sidecar JSON (unknown field, wrong type, bad key id).
    #[error("sidecar {path} is not valid: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The JSON parsed but breaks a rule.
    #[error("sidecar is invalid: {0}")]
    Invalid(String),
    /// The file is larger than any sidecar we write.
    #[error("sidecar {path} is {len} bytes, over the {MAX_FILE_LEN}-byte limit")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
}

/// Active DEK ids per purpose (0 = none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveIds {
    /// Active storage DEK.
    pub storage: u32,
    /// Active raft DEK.
    pub raft: u32,
}

impl ActiveIds {
    /// The id for a purpose.
    pub fn get(&self, p: Purpose) -> u32 {
        match p {
            Purpose::Storage => self.storage,
            Purpose::Raft => self.raft,
        }
    }

    /// Sets the id for a purpose.
    pub fn set(&mut self, p: Purpose, id: u32) {
        match p {
            Purpose::Storage => self.storage = id,
            Purpose::Raft => self.raft = id,
        }
    }
}

/// One wrapped DEK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// What it protects.
    #[serde(with = "purpose_str")]
    pub purpose: Purpose,
    /// The DEK wrapped under the KEK (base64 in JSON).
    #[serde(with = "b64")]
    pub wrapped: Vec<u8>,
    /// When this node first recorded it (RFC 3339, UTC).
    pub created: String,
    /// This node's process-load counter for the DEK (≤ 0xFFFF; 0xFFFF is exhausted).
    pub local_epoch: u32,
    /// Retired: kept for audit, never loaded.
    pub retired: bool,
}

/// The whole sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// Format version, always 1.
    pub version: u32,
    /// The index of the last applied entry that mutated this file.
    pub raft_applied_index: u64,
    /// Whether new store values are sealed.
    pub storage_envelope_active: bool,
    /// Index of the enable-storage-envelope entry (0 = not yet).
    pub storage_cutover_index: u64,
    /// Index of the enable-raft-envelope entry (0 = not yet).
    pub raft_envelope_cutover_index: u64,
    /// Active ids.
    pub active: ActiveIds,
    /// Every DEK this node has seen, by id.
    pub keys: BTreeMap<u32, KeyRecord>,
}

impl Default for Sidecar {
    fn default() -> Self {
        Sidecar {
            version: 1,
            raft_applied_index: 0,
            storage_envelope_active: false,
            storage_cutover_index: 0,
            raft_envelope_cutover_index: 0,
            active: ActiveIds::default(),
            keys: BTreeMap::new(),
        }
    }
}

pub(crate) mod purpose_str {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use crate::cipher::Purpose;

    pub fn serialize<S: Serializer>(p: &Purpose, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Purpose, D::Error> {
        let s = <&str>::deserialize(d)?;
        Purpose::from_name(s)
            .ok_or_else(|| D::Error::custom(format!("purpose must be \"storage\" or \"raft\", not {s:?}")))
    }
}

pub(crate) mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <&str>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| D::Error::custom(format!("wrapped is not base64: {e}")))
    }
}

impl Sidecar {
    /// `<data_dir>/encryption`.
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join(DIR_NAME)
    }

    /// Checks every rule of the format.
    pub fn validate(&self) -> Result<(), SidecarError> {
        let bad = |m: String| Err(SidecarError::Invalid(m));
        if self.version != 1 {
            return bad(format!("version {} (this build reads version 1)", self.version));
        }
        for (id, k) in &self.keys {
            if *id == 0 {
                return bad("key id 0 is reserved".into());
            }
            if k.local_epoch > u32::from(EPOCH_EXHAUSTED) {
                return bad(format!("key {id}: local_epoch {} exceeds 65535", k.local_epoch));
            }
            if k.wrapped.is_empty() || k.wrapped.len() > MAX_WRAPPED_LEN as usize {
                return bad(format!("key {id}: wrapped length {} outside 1..=4096", k.wrapped.len()));
            }
            if k.created.is_empty() || k.created.len() > 64 {
                return bad(format!("key {id}: created timestamp missing or too long"));
            }
        }
        for p in Purpose::ALL {
            let id = self.active.get(p);
            if id == 0 {
                continue;
            }
            match self.keys.get(&id) {
                None => return bad(format!("active {p} key {id} is not in keys")),
                Some(k) if k.purpose != p => return bad(format!("active {p} key {id} is a {} key", k.purpose)),
                Some(k) if k.retired => return bad(format!("active {p} key {id} is retired")),
                Some(_) => {}
            }
        }
        if self.storage_envelope_active && (self.active.storage == 0 || self.storage_cutover_index == 0) {
            return bad("storage envelope active without an active storage key and cutover index".into());
        }
        if !self.storage_envelope_active && self.storage_cutover_index != 0 {
            return bad("storage cutover index set while the storage envelope is off".into());
        }
        if self.raft_envelope_cutover_index != 0 && self.active.raft == 0 {
            return bad("raft envelope cutover set without an active raft key".into());
        }
        if self.storage_cutover_index > self.raft_applied_index
            || self.raft_envelope_cutover_index > self.raft_applied_index
        {
            return bad("a cutover index is above raft_applied_index".into());
        }
        Ok(())
    }

    /// Whether any DEK has been bootstrapped.
    pub fn bootstrapped(&self) -> bool {
        self.active.storage != 0 || self.active.raft != 0
    }

    /// The local epoch of a key (0 if unknown).
    pub fn local_epoch(&self, id: u32) -> u16 {
        self.keys.get(&id).map_or(0, |k| u16::try_from(k.local_epoch).unwrap_or(EPOCH_EXHAUSTED))
    }

    /// Parses and validates sidecar JSON.
    pub fn from_json(path: &Path, bytes: &[u8]) -> Result<Self, SidecarError> {
        let s: Sidecar = serde_json::from_slice(bytes)
            .map_err(|e| SidecarError::Parse { path: path.to_path_buf(), reason: e.to_string() })?;
        s.validate()?;
        Ok(s)
    }

    /// Validates and renders sidecar JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, SidecarError> {
        self.validate()?;
        let mut v = serde_json::to_vec_pretty(self).map_err(|e| SidecarError::Invalid(e.to_string()))?;
        v.push(b'\n');
        Ok(v)
    }

    /// Loads `<dir>/keys.json`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, SidecarError> {
        let path = dir.join(FILE_NAME);
        let io = |source| SidecarError::Io { path: path.clone(), source };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let len = file.metadata().map_err(io)?.len();
        if len > MAX_FILE_LEN {
            return Err(SidecarError::TooLarge { path, len });
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes).map_err(io)?;
        Self::from_json(&path, &bytes).map(Some)
    }

    /// Whether `<dir>/keys.json` exists.
    pub fn exists(dir: &Path) -> bool {
        dir.join(FILE_NAME).exists()
    }

    /// Validates and durably writes `<dir>/keys.json`.
    pub fn store(&self, dir: &Path) -> Result<(), SidecarError> {
        let bytes = self.to_json()?;
        durable_write(dir, FILE_NAME, TMP_NAME, &bytes, "sidecar")
    }

    /// Adds one to the local_epoch of every active key (a new process load), refusing to reach
    /// 0xFFFF. Does not write; call [`Sidecar::store`] before the first seal.
    pub fn bump_active_epochs(&mut self) -> Result<Vec<(u32, u16)>, (u32, Purpose)> {
        let mut bumped = Vec::new();
        for p in Purpose::ALL {
            let id = self.active.get(p);
            if let Some(k) = self.keys.get_mut(&id) {
                let next = k.local_epoch + 1;
                if next >= u32::from(EPOCH_EXHAUSTED) {
                    return Err((id, p));
                }
                k.local_epoch = next;
                bumped.push((id, u16::try_from(next).unwrap_or(EPOCH_EXHAUSTED)));
            }
        }
        Ok(bumped)
    }
}

/// Creates `dir` (mode 0700) if needed.
fn ensure_dir(dir: &Path) -> Result<(), SidecarError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| SidecarError::Io { path: dir.to_path_buf(), source })
}

/// The crash-durable write sequence; `label` prefixes the failpoint names
/// (`<label>.before_tmp_remove`, `.after_tmp_create`, `.after_tmp_write`, `.after_tmp_fsync`,
/// `.after_rename`, `.after_dir_fsync`).
fn durable_write(dir: &Path, name: &str, tmp_name: &str, bytes: &[u8], label: &str) -> Result<(), SidecarError> {
    ensure_dir(dir)?;
    let tmp = dir.join(tmp_name);
    let dst = dir.join(name);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SidecarError::Io { path: p, source }
    };
    failpoint::hit(&format!("{label}.before_tmp_remove"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&tmp)(e)),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io(&tmp))?;
    failpoint::hit(&format!("{label}.after_tmp_create"));
    f.write_all(bytes).map_err(io(&tmp))?;
    failpoint::hit(&format!("{label}.after_tmp_write"));
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    failpoint::hit(&format!("{label}.after_tmp_fsync"));
    fs::rename(&tmp, &dst).map_err(io(&dst))?;
    failpoint::hit(&format!("{label}.after_rename"));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| SidecarError::UnsupportedFilesystem { path: dir.to_path_buf(), source })?;
    failpoint::hit(&format!("{label}.after_dir_fsync"));
    Ok(())
}

/// Runs the durable-write sequence on a sentinel file in `dir` and removes it: proves at startup
/// that the filesystem supports the sidecar's durability protocol.
pub fn probe(dir: &Path) -> Result<(), SidecarError> {
    durable_write(dir, PROBE_NAME, ".durability-probe.tmp", b"sealkv durability probe\n", "probe")?;
    let p = dir.join(PROBE_NAME);
    fs::remove_file(&p).map_err(|source| SidecarError::Io { path: p, source })
}

/// The current UTC time as RFC 3339 (`2026-11-22T10:00:00Z`), for `created`.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant), valid for every u64 day count we can meet.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Encodes wrapped bytes the way the sidecar does (for tools and tests).
pub fn encode_wrapped(wrapped: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(wrapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sidecar {
        let mut s = Sidecar { raft_applied_index: 184_273, ..Sidecar::default() };
        s.storage_envelope_active = true;
        s.storage_cutover_index = 184_150;
        s.raft_envelope_cutover_index = 184_201;
        s.active = ActiveIds { storage: 305_419_896, raft: 2_596_069_104 };
        for (id, p) in [(305_419_896, Purpose::Storage), (2_596_069_104, Purpose::Raft)] {
            s.keys.insert(
                id,
                KeyRecord {
                    purpose: p,
                    wrapped: vec![1, 2, 3],
                    created: "2026-11-22T10:00:00Z".into(),
                    local_epoch: 7,
                    retired: false,
                },
            );
        }
        s
    }

    #[test]
    fn json_layout_pin() {
        let json = String::from_utf8(sample().to_json().unwrap()).unwrap();
        let expected = r#"{
  "version": 1,
  "raft_applied_index": 184273,
  "storage_envelope_active": true,
  "storage_cutover_index": 184150,
  "raft_envelope_cutover_index": 184201,
  "active": {
    "storage": 305419896,
    "raft": 2596069104
  },
  "keys": {
    "305419896": {
      "purpose": "storage",
      "wrapped": "AQID",
      "created": "2026-11-22T10:00:00Z",
      "local_epoch": 7,
      "retired": false
    },
    "2596069104": {
      "purpose": "raft",
      "wrapped": "AQID",
      "created": "2026-11-22T10:00:00Z",
      "local_epoch": 7,
      "retired": false
    }
  }
}
"#;
        assert_eq!(json, expected);
        assert_eq!(Sidecar::from_json(Path::new("x"), json.as_bytes()).unwrap(), sample());
    }

    #[test]
    fn validation_rejects_each_rule() {
        let p = Path::new("keys.json");
        let json = String::from_utf8(sample().to_json().unwrap()).unwrap();
        let cases = [
            json.replace("\"version\": 1", "\"version\": 2"),
            json.replace(
                "\"retired\": false\n    },\n    \"2596",
                "\"retired\": false, \"extra\": 1\n    },\n    \"2596",
            ),
            json.replace("\"305419896\": {", "\"0\": {").replace("\"storage\": 305419896", "\"storage\": 0"),
            json.replace("\"305419896\": {", "\"abc\": {"),
            json.replace("\"purpose\": \"storage\"", "\"purpose\": \"disk\""),
            json.replace("\"storage\": 305419896", "\"storage\": 42"),
            json.replace("\"purpose\": \"storage\"", "\"purpose\": \"raft\""),
            json.replacen("\"local_epoch\": 7", "\"local_epoch\": 65536", 1),
            json.replacen("\"wrapped\": \"AQID\"", "\"wrapped\": \"!!\"", 1),
            json.replacen("\"wrapped\": \"AQID\"", "\"wrapped\": \"\"", 1),
            json.replace("\"raft_applied_index\": 184273", "\"raft_applied_index\": 10"),
            json.replacen("\"retired\": false", "\"retired\": true", 1),
            json.replace("\"storage_envelope_active\": true", "\"storage_envelope_active\": false"),
            format!("{json}x"),
        ];
        for (i, c) in cases.iter().enumerate() {
            assert!(Sidecar::from_json(p, c.as_bytes()).is_err(), "case {i} was accepted:\n{c}");
        }
    }

    #[test]
    fn store_load_roundtrip_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = Sidecar::dir(dir.path());
        assert!(Sidecar::load(&d).unwrap().is_none());
        sample().store(&d).unwrap();
        // A stale tmp from a crashed writer is replaced, not an error.
        fs::write(d.join(TMP_NAME), b"junk").unwrap();
        sample().store(&d).unwrap();
        assert!(!d.join(TMP_NAME).exists());
        assert_eq!(Sidecar::load(&d).unwrap().unwrap(), sample());
        let mode = fs::metadata(d.join(FILE_NAME)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut bad = sample();
        bad.version = 9;
        assert!(bad.store(&d).is_err(), "invalid sidecars are never written");
        assert_eq!(Sidecar::load(&d).unwrap().unwrap(), sample());
        probe(&d).unwrap();
        assert!(!d.join(PROBE_NAME).exists());
    }

    #[test]
    fn epoch_bump_refuses_exhaustion() {
        let mut s = sample();
        assert_eq!(s.bump_active_epochs().unwrap().len(), 2);
        assert_eq!(s.local_epoch(305_419_896), 8);
        s.keys.get_mut(&305_419_896).unwrap().local_epoch = 0xFFFE;
        assert_eq!(s.bump_active_epochs(), Err((305_419_896, Purpose::Storage)));
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_341_600), "2026-11-22T10:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
