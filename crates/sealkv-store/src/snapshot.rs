//! The snapshot stream (spec 02 §8): a v1/v2 header, then the store's versions, registry rows and
//! replicated metadata, verbatim (sealed values stay sealed), then an end record with a count and
//! a CRC-32 of everything before it. Written from a consistent fjall snapshot and installed in
//! bounded batches, so memory does not grow with the store.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::atomic::Ordering;

use fjall::Readable;
use sealkv_crypto::registry::{Row, RowKey};

use crate::error::StoreError;
use crate::key;
use crate::latest::{self, FirstVersions};
use crate::meta::{self, Applied};
use crate::store::Store;
use crate::value::ValueHeader;

const MAGIC: &[u8; 7] = b"SEALSNP";
const V1: u8 = b'1';
const V2: u8 = b'2';
/// Bytes after v2's `len` field that every v2 header has.
const V2_MIN_LEN: u32 = 20;
/// The largest v2 header accepted.
const V2_MAX_LEN: u32 = 16 << 20;

const REC_DATA: u8 = 0x01;
const REC_REGISTRY: u8 = 0x02;
const REC_META: u8 = 0x03;
const REC_END: u8 = 0xFF;

/// The largest stored value a data record may carry (value header + envelope + a max value).
const MAX_STORED_LEN: u64 = (crate::MAX_VALUE_LEN + 9 + 64) as u64;
/// Bytes of versions per install batch.
const INSTALL_BATCH_BYTES: usize = 1 << 20;
/// Sealed memtables allowed to wait for their flush during an install.
const MAX_SEALED_MEMTABLES: usize = 1;

/// The cluster-wide encryption part of a v2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionSnapshot {
    /// Index of the enable-raft-envelope entry, 0 if none.
    pub raft_cutover_index: u64,
    /// The cluster-wide part of the sidecar (wrapped DEKs, active ids, flags), opaque here.
    pub state: Vec<u8>,
}

/// A snapshot header. v1 has no encryption part; writers use v2 once the node has seen any
/// encryption entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The HLC ceiling at the snapshot.
    pub hlc_ceiling_ms: i64,
    /// Present ⇔ v2.
    pub encryption: Option<EncryptionSnapshot>,
}

impl SnapshotHeader {
    /// The header bytes.
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut out = MAGIC.to_vec();
        match &self.encryption {
            None => {
                out.push(V1);
                out.extend_from_slice(&self.hlc_ceiling_ms.to_be_bytes());
            }
            Some(enc) => {
                let state_len = u32::try_from(enc.state.len())
                    .ok()
                    .filter(|l| *l <= V2_MAX_LEN - V2_MIN_LEN)
                    .ok_or(SnapshotError::HeaderLength { len: enc.state.len() as u64 })?;
                out.push(V2);
                out.extend_from_slice(&(V2_MIN_LEN + state_len).to_be_bytes());
                out.extend_from_slice(&self.hlc_ceiling_ms.to_be_bytes());
                out.extend_from_slice(&enc.raft_cutover_index.to_be_bytes());
                out.extend_from_slice(&state_len.to_be_bytes());
                out.extend_from_slice(&enc.state);
            }
        }
        Ok(out)
    }

    /// Reads a header, skipping v2 fields this version does not know.
    pub fn read(r: &mut impl Read) -> Result<Self, SnapshotError> {
        let magic: [u8; 8] = read_array(r)?;
        let (m, version) = magic.split_first_chunk::<7>().ok_or(SnapshotError::BadMagic)?;
        if m != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        match version {
            [V1] => Ok(SnapshotHeader { hlc_ceiling_ms: i64::from_be_bytes(read_array(r)?), encryption: None }),
            [V2] => {
                let len = u32::from_be_bytes(read_array(r)?);
                if !(V2_MIN_LEN..=V2_MAX_LEN).contains(&len) {
                    return Err(SnapshotError::HeaderLength { len: len.into() });
                }
                let mut fields = r.take(len.into());
                let hlc_ceiling_ms = i64::from_be_bytes(read_array(&mut fields)?);
                let raft_cutover_index = u64::from_be_bytes(read_array(&mut fields)?);
                let state_len = u32::from_be_bytes(read_array(&mut fields)?);
                if state_len > len - V2_MIN_LEN {
                    return Err(SnapshotError::HeaderLength { len: state_len.into() });
                }
                let state = read_vec(&mut fields, state_len.into())?;
                // Future fields: skip what we do not know.
                io::copy(&mut fields, &mut io::sink())?;
                if fields.limit() != 0 {
                    return Err(SnapshotError::Truncated);
                }
                Ok(SnapshotHeader {
                    hlc_ceiling_ms,
                    encryption: Some(EncryptionSnapshot { raft_cutover_index, state }),
                })
            }
            [other] => Err(SnapshotError::UnknownVersion { byte: *other }),
            _ => Err(SnapshotError::BadMagic),
        }
    }
}

/// Why a snapshot stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the stream failed.
    #[error("snapshot stream I/O: {0}")]
    Io(#[from] io::Error),
    /// The stream ended early.
    #[error("snapshot stream is truncated")]
    Truncated,
    /// Not a sealkv snapshot.
    #[error("not a sealkv snapshot (bad magic)")]
    BadMagic,
    /// "SEALSNP" with a version this build does not know: refuse rather than misread.
    #[error("unknown snapshot version {:?}; upgrade this node", char::from(*.byte))]
    UnknownVersion {
        /// The version byte.
        byte: u8,
    },
    /// A v2 header length outside 20..=16 MiB, or a state longer than the header.
    #[error("snapshot header length {len} is out of range")]
    HeaderLength {
        /// The length.
        len: u64,
    },
    /// An unknown record tag.
    #[error("unknown snapshot record tag {tag:#04x}")]
    UnknownRecord {
        /// The tag.
        tag: u8,
    },
    /// A record's length exceeds what the store can hold.
    #[error("snapshot record of {len} bytes exceeds the limit")]
    RecordTooLarge {
        /// The claimed length.
        len: u64,
    },
    /// A version's key or header does not decode.
    #[error("snapshot carries a malformed version")]
    BadVersion,
    /// A registry row does not decode.
    #[error("snapshot carries a malformed registry row")]
    BadRegistryRow,
    /// A metadata record this store does not replicate.
    #[error("snapshot carries an unknown metadata record")]
    UnknownMeta,
    /// The end record's count disagrees with the records read.
    #[error("snapshot has {got} records but its end record says {expected}")]
    CountMismatch {
        /// From the end record.
        expected: u64,
        /// Read.
        got: u64,
    },
    /// The CRC-32 does not match.
    #[error("snapshot checksum mismatch")]
    Checksum,
    /// Bytes follow the end record.
    #[error("bytes follow the snapshot's end record")]
    Trailing,
    /// Versions are not in strictly ascending key order (a snapshot is written in key order; the
    /// newest-version index relies on it).
    #[error("snapshot versions are out of key order")]
    OutOfOrder,
}

fn eof(e: io::Error) -> SnapshotError {
    if e.kind() == io::ErrorKind::UnexpectedEof { SnapshotError::Truncated } else { SnapshotError::Io(e) }
}

fn read_array<const N: usize>(r: &mut impl Read) -> Result<[u8; N], SnapshotError> {
    let mut b = [0u8; N];
    r.read_exact(&mut b).map_err(eof)?;
    Ok(b)
}

/// Reads exactly `len` bytes. The first allocation is capped at 4 KiB and the vector grows only as
/// bytes actually arrive, so a hostile length prefix costs at most twice the input.
fn read_vec(r: &mut impl Read, len: u64) -> Result<Vec<u8>, SnapshotError> {
    let mut v = Vec::with_capacity(len.min(4 << 10) as usize);
    r.take(len).read_to_end(&mut v)?;
    if v.len() as u64 != len {
        return Err(SnapshotError::Truncated);
    }
    Ok(v)
}

/// Counts and checksums what passes through.
struct Crc<T> {
    inner: T,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<T: Write> Write for Crc<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Crc<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        self.bytes += n as u64;
        Ok(n)
    }
}

/// What a snapshot write produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Records in the body.
    pub records: u64,
    /// Bytes of the whole stream.
    pub bytes: u64,
    /// The applied position the snapshot covers (read from the same consistent view as the data).
    pub applied: Option<Applied>,
}

fn write_len_prefixed(w: &mut impl Write, bytes: &[u8]) -> Result<(), SnapshotError> {
    let len = u32::try_from(bytes.len()).map_err(|_| SnapshotError::RecordTooLarge { len: bytes.len() as u64 })?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(bytes)?;
    Ok(())
}

/// One body record of a snapshot stream, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A stored version, verbatim (a valid MVCC key and value header; the body is not opened).
    Version {
        /// The MVCC key.
        mvcc_key: Vec<u8>,
        /// The stored value.
        stored: Vec<u8>,
    },
    /// A writer-registry row.
    RegistryRow {
        /// The 27-byte key.
        key: [u8; 27],
        /// The 12-byte row.
        row: [u8; 12],
    },
    /// A replicated store metadata record.
    Meta {
        /// Its name.
        name: &'static [u8],
        /// Its value.
        value: Vec<u8>,
    },
}

/// Reads a snapshot stream record by record, checking each one and, at the end, the count,
/// checksum and absence of trailing bytes. Allocates only as bytes arrive.
pub struct SnapshotReader<R: Read> {
    r: Crc<BufReader<R>>,
    header: SnapshotHeader,
    records: u64,
    done: bool,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the header.
    pub fn new(r: R) -> Result<Self, SnapshotError> {
        let mut r = Crc { inner: BufReader::with_capacity(256 << 10, r), hasher: crc32fast::Hasher::new(), bytes: 0 };
        let header = SnapshotHeader::read(&mut r)?;
        Ok(SnapshotReader { r, header, records: 0, done: false })
    }

    /// The stream's header.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// The next record, or `None` once the end record has been read and verified. A record is
    /// only returned after its own checks pass; the stream as a whole is only known good once
    /// this returns `None`.
    pub fn next_record(&mut self) -> Result<Option<Record>, SnapshotError> {
        if self.done {
            return Ok(None);
        }
        let r = &mut self.r;
        let [tag] = read_array(r)?;
        let record = match tag {
            REC_DATA => {
                let klen = u32::from_be_bytes(read_array(r)?);
                if klen as usize > key::MAX_MVCC_KEY_LEN {
                    return Err(SnapshotError::RecordTooLarge { len: klen.into() });
                }
                let mvcc_key = read_vec(r, klen.into())?;
                let vlen = u32::from_be_bytes(read_array(r)?);
                if u64::from(vlen) > MAX_STORED_LEN {
                    return Err(SnapshotError::RecordTooLarge { len: vlen.into() });
                }
                let stored = read_vec(r, vlen.into())?;
                if key::decode(&mvcc_key).is_err() || ValueHeader::split(&stored).is_err() {
                    return Err(SnapshotError::BadVersion);
                }
                Record::Version { mvcc_key, stored }
            }
            REC_REGISTRY => {
                let key: [u8; 27] = read_array(r)?;
                let row: [u8; 12] = read_array(r)?;
                if RowKey::decode(&key).is_err() || Row::decode(&row).is_err() {
                    return Err(SnapshotError::BadRegistryRow);
                }
                Record::RegistryRow { key, row }
            }
            REC_META => {
                let [nlen] = read_array(r)?;
                let name = read_vec(r, nlen.into())?;
                let name =
                    meta::REPLICATED.into_iter().find(|n| *n == name.as_slice()).ok_or(SnapshotError::UnknownMeta)?;
                let vlen = u32::from_be_bytes(read_array(r)?);
                if vlen > 8 + meta::MAX_LOG_ID_LEN as u32 {
                    return Err(SnapshotError::RecordTooLarge { len: vlen.into() });
                }
                let value = read_vec(r, vlen.into())?;
                let valid =
                    if name == meta::APPLIED { meta::Applied::decode(&value).is_ok() } else { value.len() == 8 };
                if !valid {
                    return Err(SnapshotError::UnknownMeta);
                }
                Record::Meta { name, value }
            }
            REC_END => {
                let expected = u64::from_be_bytes(read_array(r)?);
                let crc = r.hasher.clone().finalize();
                if u32::from_be_bytes(read_array(r)?) != crc {
                    return Err(SnapshotError::Checksum);
                }
                if expected != self.records {
                    return Err(SnapshotError::CountMismatch { expected, got: self.records });
                }
                if r.read(&mut [0u8; 1])? != 0 {
                    return Err(SnapshotError::Trailing);
                }
                self.done = true;
                return Ok(None);
            }
            tag => return Err(SnapshotError::UnknownRecord { tag }),
        };
        self.records += 1;
        Ok(Some(record))
    }
}

impl Store {
    /// Streams a consistent snapshot of the store to `w` with a fixed header.
    pub fn write_snapshot(&self, w: impl Write, header: &SnapshotHeader) -> Result<SnapshotStats, StoreError> {
        self.write_snapshot_with(w, |_| Ok(header.clone()))
    }

    /// Streams a consistent snapshot of the store to `w`. The header is built by `header` AFTER
    /// the consistent view is taken and is told the applied position of that view, so state that
    /// only ever runs ahead of the store (the sidecar is written before the apply batch commits)
    /// is read late enough to cover every value in the body.
    pub fn write_snapshot_with(
        &self,
        w: impl Write,
        header: impl FnOnce(Option<&Applied>) -> Result<SnapshotHeader, StoreError>,
    ) -> Result<SnapshotStats, StoreError> {
        let snap = self.db.snapshot();
        let applied = snap.get(&self.meta, meta::APPLIED)?.map(|v| Applied::decode(&v)).transpose()?;
        let header = header(applied.as_ref())?;
        let mut w = Crc { inner: BufWriter::with_capacity(256 << 10, w), hasher: crc32fast::Hasher::new(), bytes: 0 };
        let io = |e: io::Error| StoreError::Snapshot(e.into());
        w.write_all(&header.encode()?).map_err(io)?;
        let mut records = 0u64;
        for guard in snap.iter(&self.data) {
            let (k, v) = guard.into_inner()?;
            w.write_all(&[REC_DATA]).map_err(io)?;
            write_len_prefixed(&mut w, &k)?;
            write_len_prefixed(&mut w, &v)?;
            records += 1;
        }
        for guard in snap.iter(&self.registry) {
            let (k, v) = guard.into_inner()?;
            w.write_all(&[REC_REGISTRY]).map_err(io)?;
            w.write_all(&k).map_err(io)?;
            w.write_all(&v).map_err(io)?;
            records += 1;
        }
        for name in meta::REPLICATED {
            if let Some(v) = snap.get(&self.meta, name)? {
                w.write_all(&[REC_META, name.len() as u8]).map_err(io)?;
                w.write_all(name).map_err(io)?;
                write_len_prefixed(&mut w, &v)?;
                records += 1;
            }
        }
        w.write_all(&[REC_END]).map_err(io)?;
        w.write_all(&records.to_be_bytes()).map_err(io)?;
        let crc = w.hasher.clone().finalize();
        w.write_all(&crc.to_be_bytes()).map_err(io)?;
        w.flush().map_err(io)?;
        Ok(SnapshotStats { records, bytes: w.bytes, applied })
    }

    /// Installs a snapshot stream into this (empty) store and returns its header. Versions go in
    /// bounded batches under an install marker; on any error the partial store is wiped, and a
    /// crash mid-install is wiped at the next open.
    pub fn install_snapshot(&self, r: impl Read) -> Result<SnapshotHeader, StoreError> {
        self.install_snapshot_with(r, |_| Ok(()))
    }

    /// [`Store::install_snapshot`] with a last step that must happen before the install counts:
    /// `finish` runs once every record is durable (it may read the installed registry through
    /// [`Store::batch`]) and while the install marker is still set, so a crash or an error in it
    /// leaves a store that is wiped, never one that looks installed without what `finish` does
    /// (the node's key state, for the state machine).
    pub fn install_snapshot_with(
        &self,
        r: impl Read,
        finish: impl FnOnce(&SnapshotHeader) -> Result<(), String>,
    ) -> Result<SnapshotHeader, StoreError> {
        let _guard = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        if !self.is_empty()? {
            return Err(StoreError::NotEmpty);
        }
        self.meta.insert(meta::INSTALLING, [])?;
        let result = self.install_records(r).and_then(|header| {
            sealkv_crypto::failpoint::hit("snapshot.install_before_finish");
            finish(&header).map_err(StoreError::InstallFinish)?;
            let mut b = self.db.batch();
            b.remove(&self.meta, meta::INSTALLING);
            b.durability(Some(fjall::PersistMode::SyncData)).commit()?;
            Ok(header)
        });
        if result.is_err()
            && let Err(e) = self.wipe()
        {
            tracing::error!(error = %e, "wiping a failed snapshot install failed; the next open retries");
        }
        result
    }

    /// Backpressure for bulk loads: fjall flushes sealed memtables in the background, and an
    /// install can outrun it; without a wait, memory would grow with the snapshot.
    fn wait_for_flushes(&self) {
        while self.data.sealed_memtable_count() > MAX_SEALED_MEMTABLES
            || self.latest.sealed_memtable_count() > MAX_SEALED_MEMTABLES
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn install_records(&self, r: impl Read) -> Result<SnapshotHeader, StoreError> {
        let mut reader = SnapshotReader::new(r)?;
        let header = reader.header().clone();
        let mut batch = self.db.batch();
        let mut batch_bytes = 0usize;
        let mut metas: Vec<(&'static [u8], Vec<u8>)> = Vec::new();
        let mut first_versions = FirstVersions::default();
        while let Some(record) = reader.next_record()? {
            match record {
                Record::Version { mvcc_key, stored } => {
                    batch_bytes += mvcc_key.len() + stored.len();
                    if let Some((prefix, ts)) = first_versions.observe(&mvcc_key)? {
                        batch.insert(&self.latest, prefix, latest::encode_ts(ts));
                    }
                    batch.insert(&self.data, mvcc_key, stored);
                }
                Record::RegistryRow { key, row } => {
                    batch_bytes += key.len() + row.len();
                    batch.insert(&self.registry, key, row);
                }
                Record::Meta { name, value } => metas.push((name, value)),
            }
            if batch_bytes >= INSTALL_BATCH_BYTES {
                std::mem::replace(&mut batch, self.db.batch()).commit()?;
                batch_bytes = 0;
                sealkv_crypto::failpoint::hit("snapshot.install_after_batch");
                self.wait_for_flushes();
            }
        }
        // The reader checked each metadata record; apply them with the final batch.
        let mut since = None;
        let mut max_ts = 0;
        for (name, v) in metas {
            if name == meta::MAX_TS {
                max_ts = meta::decode_u64(&v, "max_ts")?;
            } else if name == meta::ENVELOPE_SINCE {
                since = Some(meta::decode_u64(&v, "envelope_since")?);
            }
            batch.insert(&self.meta, name, v);
        }
        batch.insert(&self.meta, meta::HLC_CEILING, header.hlc_ceiling_ms.to_be_bytes());
        // The marker stays until the caller's finish step is done (see `install_snapshot_with`).
        batch.durability(Some(fjall::PersistMode::SyncData)).commit()?;
        // Reads of the empty store before the install cached "absent" for keys it now holds.
        self.rows.clear();
        self.crypto.set_since(since);
        self.max_ts.store(max_ts, Ordering::Release);
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_pins() {
        let v1 = SnapshotHeader { hlc_ceiling_ms: 0x0102, encryption: None };
        assert_eq!(v1.encode().unwrap(), b"SEALSNP1\0\0\0\0\0\0\x01\x02");
        let v2 = SnapshotHeader {
            hlc_ceiling_ms: 1,
            encryption: Some(EncryptionSnapshot { raft_cutover_index: 2, state: b"{}".to_vec() }),
        };
        assert_eq!(
            v2.encode().unwrap(),
            b"SEALSNP2\0\0\0\x16\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x02\0\0\0\x02{}".to_vec()
        );
        for h in [v1, v2] {
            assert_eq!(SnapshotHeader::read(&mut h.encode().unwrap().as_slice()).unwrap(), h);
        }
    }

    #[test]
    fn v2_future_fields_are_skipped_and_bad_lengths_refused() {
        let mut b = b"SEALSNP2\0\0\0\x19\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0\x09\0\0\0\x02{}XYZ".to_vec();
        b.extend_from_slice(b"body");
        let mut r = b.as_slice();
        let h = SnapshotHeader::read(&mut r).unwrap();
        assert_eq!(h.hlc_ceiling_ms, 7);
        assert_eq!(h.encryption.unwrap(), EncryptionSnapshot { raft_cutover_index: 9, state: b"{}".to_vec() });
        assert_eq!(r, b"body");
        let short = b"SEALSNP2\0\0\0\x13\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0\x09\0\0\0";
        assert!(matches!(SnapshotHeader::read(&mut &short[..]), Err(SnapshotError::HeaderLength { len: 19 })));
        let huge = b"SEALSNP2\x01\0\0\x01";
        assert!(matches!(SnapshotHeader::read(&mut &huge[..]), Err(SnapshotError::HeaderLength { .. })));
        let state_too_long = b"SEALSNP2\0\0\0\x14\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0\x09\0\0\0\x01";
        assert!(matches!(SnapshotHeader::read(&mut &state_too_long[..]), Err(SnapshotError::HeaderLength { len: 1 })));
        assert!(matches!(
            SnapshotHeader::read(&mut &b"SEALSNP3\0\0"[..]),
            Err(SnapshotError::UnknownVersion { byte: b'3' })
        ));
        assert!(matches!(SnapshotHeader::read(&mut &b"SEALSNQ1\0\0\0\0\0\0\0\0"[..]), Err(SnapshotError::BadMagic)));
        assert!(matches!(SnapshotHeader::read(&mut &b"SEALSNP1\0\0"[..]), Err(SnapshotError::Truncated)));
    }
}
