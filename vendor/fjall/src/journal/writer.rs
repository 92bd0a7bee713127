// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

use super::entry::{serialize_marker_item, Entry};
use crate::{
    batch::item::Item as BatchItem, file::fsync_directory, journal::recovery::JournalId,
    keyspace::InternalKeyspaceId,
};
use lsm_tree::{CompressionType, SeqNo, ValueType};
use std::{
    fs::{File, OpenOptions},
    hash::Hasher,
    io::{BufWriter, Seek, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

// TODO: this should be a database configuration
pub const PRE_ALLOCATED_BYTES: u64 = 64 * 1_024 * 1_024;

pub const JOURNAL_BUFFER_BYTES: usize = 8 * 1_024;

// sealkv patch (see vendor/fjall/SEALKV.md): pre-zeroed spare journals.
//
// A journal preallocated with `set_len` is sparse, so on ext4 every fdatasync after a write into
// a new block also commits the filesystem's own journal for the block's allocation. Writing into
// blocks that already hold zeros on disk skips that commit: on the development machine a 4 KiB
// write + fdatasync took 0.083 ms and ~40 µs of CPU, against 0.128 ms and ~70 µs when sparse.
// Zeroing 64 MiB on the write path would stall every writer, so once a journal is busy a
// background thread prepares the next journal's file, and rotation takes it if it is ready.

/// The prepared spare: zeroed and fsynced, then renamed to this name. Not a `.jnl` file, so
/// recovery never reads it as a journal.
pub const SPARE_NAME: &str = "journal.spare";

/// Prefix and suffix of the files spares are zeroed in before their rename. Each preparation has
/// its own (`journal.spare.<pid>-<n>.tmp`). Why: a thread renames only the file it zeroed, after
/// its fsync, so no thread can ever still be writing to a file that became the spare. With one
/// shared name, a thread left by a database closed and reopened in the same process could rename
/// another thread's half-written file, and that thread's zeros would land in a journal.
const SPARE_TMP_PREFIX: &str = "journal.spare.";
const SPARE_TMP_SUFFIX: &str = ".tmp";

/// Numbers this process's spare preparations.
static SPARE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A journal that has taken this many bytes is busy enough for its successor to get a spare.
/// Lighter use (and every small test database) never writes one.
pub const SPARE_AFTER_BYTES: u64 = 8 * 1_024 * 1_024;

/// Zeros written per call while preparing a spare.
const SPARE_CHUNK: usize = 1_024 * 1_024;

/// Deletes the spare and every file a spare was being zeroed in; opening a database calls it
/// before it reads the folder. Why a spare is never reused: rotation links the spare to the new
/// journal's name before it unlinks the spare, so after a crash between the two the spare may be
/// the active journal itself, full of entries.
pub fn discard_spares(folder: &Path) -> std::io::Result<()> {
    for dirent in std::fs::read_dir(folder)? {
        let dirent = dirent?;
        let name = dirent.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let tmp = name.starts_with(SPARE_TMP_PREFIX) && name.ends_with(SPARE_TMP_SUFFIX);
        if name != SPARE_NAME && !tmp {
            continue;
        }
        match std::fs::remove_file(dirent.path()) {
            Ok(()) => log::debug!("Discarded {name} left by an earlier process"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What the journals of one database share about spares.
#[derive(Default)]
struct Spares {
    /// Set while a thread zeroes a spare.
    preparing: AtomicBool,
    /// Set once taking a spare failed for any reason but its absence (a filesystem without hard
    /// links, say): no spare is made or waited for again. Why: a sparse journal rotates at every
    /// flush while a spare is ready, so a spare that can never be taken would rotate it forever.
    broken: AtomicBool,
}

/// What became of an attempt to take the spare.
enum Taken {
    /// The spare is now the journal at the given path.
    File(File),
    /// There is no spare ready.
    Absent,
    /// The spare is there but could not be taken.
    Failed,
}

/// Takes the spare as the journal file at `path`, if one is ready. Links, then unlinks, so an
/// existing `path` is never replaced (as with `File::create_new`). Any failure falls back to a
/// new sparse file, as upstream creates.
fn take_spare(path: &Path) -> Taken {
    let Some(folder) = path.parent() else {
        return Taken::Absent;
    };
    let spare = folder.join(SPARE_NAME);
    if let Err(e) = std::fs::hard_link(&spare, path) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return Taken::Absent;
        }
        log::warn!("Could not take the spare journal for {}: {e:?}", path.display());
        return Taken::Failed;
    }
    if let Err(e) = std::fs::remove_file(&spare) {
        // A spare that is also a journal must never be taken again: give the journal back.
        log::warn!("Could not unlink the taken spare journal: {e:?}");
        let _ = std::fs::remove_file(path);
        return Taken::Failed;
    }
    match OpenOptions::new().write(true).open(path) {
        Ok(file) => {
            log::debug!("Took the pre-zeroed spare as journal {}", path.display());
            Taken::File(file)
        }
        Err(e) => {
            log::warn!("Could not open the taken spare journal at {}: {e:?}", path.display());
            let _ = std::fs::remove_file(path);
            Taken::Failed
        }
    }
}

/// Starts zeroing a spare in `folder` on a background thread, unless one is ready or being made,
/// or spares do not work there.
fn prepare_spare(folder: PathBuf, spares: &Arc<Spares>) {
    if spares.broken.load(Ordering::Acquire) || spares.preparing.swap(true, Ordering::AcqRel) {
        return;
    }
    if folder.join(SPARE_NAME).exists() {
        spares.preparing.store(false, Ordering::Release);
        return;
    }
    let flag = spares.clone();
    let spawned = std::thread::Builder::new()
        .name("fjall:spare".into())
        .spawn(move || {
            let seq = SPARE_SEQ.fetch_add(1, Ordering::Relaxed);
            let tmp = folder.join(format!(
                "{SPARE_TMP_PREFIX}{}-{seq}{SPARE_TMP_SUFFIX}",
                std::process::id()
            ));
            if let Err(e) = zero_spare(&tmp, &folder.join(SPARE_NAME)) {
                log::warn!("Could not prepare a spare journal in {}: {e:?}", folder.display());
                let _ = std::fs::remove_file(&tmp);
            }
            flag.preparing.store(false, Ordering::Release);
        });
    if let Err(e) = spawned {
        log::warn!("Could not start the spare journal thread: {e:?}");
        spares.preparing.store(false, Ordering::Release);
    }
}

/// Writes `PRE_ALLOCATED_BYTES` of zeros to `tmp`, fsyncs them, and only then names the file
/// `spare`.
fn zero_spare(tmp: &Path, spare: &Path) -> std::io::Result<()> {
    let mut file = File::create_new(tmp)?;
    let zeros = vec![0u8; SPARE_CHUNK];
    let mut left = PRE_ALLOCATED_BYTES;
    while left > 0 {
        let n = usize::try_from(left).map_or(SPARE_CHUNK, |left| left.min(SPARE_CHUNK));
        file.write_all(zeros.get(..n).unwrap_or_default())?;
        left -= n as u64;
    }
    file.sync_all()?;
    std::fs::rename(tmp, spare)?;
    log::debug!("Prepared a spare journal at {}", spare.display());
    Ok(())
}

pub struct Writer {
    pub(crate) path: PathBuf,
    file: BufWriter<File>,
    buf: Vec<u8>,
    is_buffer_dirty: bool,

    compression: CompressionType,
    compression_threshold: usize,

    /// Bytes written to this journal file (sealkv patch).
    written: u64,
    /// Whether a spare was requested while this journal filled (sealkv patch).
    spare_requested: bool,
    /// Shared by every journal of the database (sealkv patch).
    spares: Arc<Spares>,
    /// Whether this journal is a taken spare, on zeroed blocks (sealkv patch).
    zeroed: bool,
    /// Whether creating this journal found a spare it could not take (sealkv patch).
    spare_failed: bool,
}

/// The persist mode allows setting the durability guarantee of previous writes
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum PersistMode {
    /// Flushes data to OS buffers. This allows the OS to write out data in case of an
    /// application crash.
    ///
    /// When this function returns, data is **not** guaranteed to be persisted in case
    /// of a power loss event or OS crash.
    Buffer,

    /// Flushes data using `fdatasync`.
    ///
    /// Use if you know that `fdatasync` is sufficient for your file system and/or operating system.
    SyncData,

    /// Flushes data + metadata using `fsync`.
    SyncAll,
}

impl Writer {
    pub fn set_compression(&mut self, comp: CompressionType, threshold: usize) {
        self.compression = comp;
        self.compression_threshold = threshold;
    }

    pub fn pos(&mut self) -> crate::Result<u64> {
        self.file.stream_position().map_err(Into::into)
    }

    /// Counts `n` written bytes, and asks for a spare once this journal is busy (sealkv patch).
    fn note_written(&mut self, n: usize) {
        self.written = self.written.saturating_add(n as u64);
        if !self.spare_requested && self.written >= SPARE_AFTER_BYTES {
            self.spare_requested = true;
            if let Some(folder) = self.path.parent() {
                prepare_spare(folder.to_path_buf(), &self.spares);
            }
        }
    }

    /// Whether this journal should rotate at the next flush, before fjall's 64 MB, to move onto
    /// a ready spare: it is sparse (the first journal of a new database) or reopened after a
    /// restart (every append then grows the file), and busy. Without this, a node would run on
    /// such a journal for its first 64 MB of writes after every start (sealkv patch).
    pub fn wants_spare_rotation(&self) -> bool {
        !self.zeroed
            && self.spare_requested
            && !self.spares.broken.load(Ordering::Acquire)
            && self
                .path
                .parent()
                .is_some_and(|folder| folder.join(SPARE_NAME).exists())
    }

    pub fn len(&self) -> crate::Result<u64> {
        Ok(self.file.get_ref().metadata()?.len())
    }

    pub fn rotate(&mut self) -> crate::Result<(PathBuf, PathBuf)> {
        self.persist(PersistMode::SyncAll)?;

        log::debug!(
            "Sealing active journal at {}, len={}B",
            self.path.display(),
            self.path
                .metadata()
                .inspect_err(|e| {
                    log::error!(
                        "Failed to get file metadata of journal file at {}: {e:?}",
                        self.path.display()
                    );
                })?
                .len(),
        );

        let prev_path = self.path.clone();

        let folder = self
            .path
            .parent()
            .expect("should have parent")
            .to_path_buf();

        let Some(basename) = self
            .path
            .file_name()
            .expect("should be valid file name")
            .to_str()
            .expect("should be valid utf-8")
            .strip_suffix(".jnl")
        else {
            log::error!("Invalid journal file name: {}", self.path.display());
            return Err(crate::Error::JournalRecovery(
                crate::JournalRecoveryError::InvalidFileName,
            ));
        };

        let journal_id = basename.parse::<JournalId>().map_err(|_| {
            log::error!("Invalid journal file name: {}", self.path.display());
            crate::Error::JournalRecovery(crate::JournalRecoveryError::InvalidFileName)
        })?;

        let new_path = folder.join(format!("{}.jnl", journal_id + 1));
        log::debug!("Rotating active journal to {}", new_path.display());

        let comp = self.compression;
        let compt = self.compression_threshold;
        let spares = self.spares.clone();
        *self = Self::create_new(new_path.clone())?;
        self.set_compression(comp, compt);
        if self.spare_failed {
            spares.broken.store(true, Ordering::Release);
        }
        self.spares = spares;

        // IMPORTANT: fsync folder on Unix
        fsync_directory(&folder)?;

        Ok((prev_path, new_path))
    }

    pub fn create_new<P: Into<PathBuf>>(path: P) -> crate::Result<Self> {
        let path = path.into();

        let taken = take_spare(&path);
        let zeroed = matches!(taken, Taken::File(_));
        let spare_failed = matches!(taken, Taken::Failed);
        let file = match taken {
            Taken::File(file) => file,
            Taken::Absent | Taken::Failed => File::create_new(&path).inspect_err(|e| {
                log::error!("Failed to create journal file at {}: {e:?}", path.display());
            })?,
        };

        file.set_len(PRE_ALLOCATED_BYTES).inspect_err(|e| {
            log::error!(
                "Failed to set journal file size to {PRE_ALLOCATED_BYTES}B at {}: {e:?}",
                path.display(),
            );
        })?;

        file.sync_all().inspect_err(|e| {
            log::error!("Failed to fsync journal file at {}: {e:?}", path.display());
        })?;

        Ok(Self {
            path,
            file: BufWriter::new(file),
            buf: Vec::new(),
            is_buffer_dirty: false,
            compression: CompressionType::None,
            compression_threshold: 0,
            written: 0,
            spare_requested: false,
            spares: Arc::default(),
            zeroed,
            spare_failed,
        })
    }

    pub fn from_file<P: AsRef<Path>>(path: P) -> crate::Result<Self> {
        let path = path.as_ref();

        if !path.try_exists()? {
            let file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .open(path)
                .inspect_err(|e| {
                    log::error!("Failed to create journal file at {}: {e:?}", path.display());
                })?;

            file.set_len(PRE_ALLOCATED_BYTES).inspect_err(|e| {
                log::error!(
                    "Failed to set journal file size to {PRE_ALLOCATED_BYTES}B at {}: {e:?}",
                    path.display(),
                );
            })?;

            file.sync_all().inspect_err(|e| {
                log::error!("Failed to fsync journal file at {}: {e:?}", path.display());
            })?;

            return Ok(Self {
                path: path.into(),
                file: BufWriter::with_capacity(JOURNAL_BUFFER_BYTES, file),
                buf: Vec::new(),
                is_buffer_dirty: false,
                compression: CompressionType::None,
                compression_threshold: 0,
                written: 0,
                spare_requested: false,
                spares: Arc::default(),
                zeroed: false,
                spare_failed: false,
            });
        }

        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .inspect_err(|e| {
                log::error!("Failed to open journal file at {}: {e:?}", path.display());
            })?;

        Ok(Self {
            path: path.into(),
            file: BufWriter::with_capacity(JOURNAL_BUFFER_BYTES, file),
            buf: Vec::new(),
            is_buffer_dirty: false,
            compression: CompressionType::None,
            compression_threshold: 0,
            written: 0,
            spare_requested: false,
            spares: Arc::default(),
            zeroed: false,
            spare_failed: false,
        })
    }

    /// Persists the journal file.
    pub(crate) fn persist(&mut self, mode: PersistMode) -> std::io::Result<()> {
        log::trace!(
            "Persisting journal at {} with mode={mode:?}",
            self.path.display(),
        );

        if self.is_buffer_dirty {
            self.file.flush().inspect_err(|e| {
                log::error!(
                    "Failed to flush journal IO buffers at {}: {e:?}",
                    self.path.display(),
                );
            })?;
            self.is_buffer_dirty = false;
        }

        match mode {
            PersistMode::SyncAll => self.file.get_mut().sync_all().inspect_err(|e| {
                log::error!(
                    "Failed to fsync journal file at {}: {e:?}",
                    self.path.display(),
                );
            }),
            PersistMode::SyncData => self.file.get_mut().sync_data().inspect_err(|e| {
                log::error!(
                    "Failed to fsyncdata journal file at {}: {e:?}",
                    self.path.display(),
                );
            }),
            PersistMode::Buffer => Ok(()),
        }
    }

    /// Writes a batch start marker to the journal
    fn write_start(&mut self, item_count: u32, seqno: SeqNo) -> Result<usize, crate::Error> {
        debug_assert!(self.buf.is_empty());

        Entry::Start { item_count, seqno }.encode_into(&mut self.buf)?;

        self.file.write_all(&self.buf)?;

        Ok(self.buf.len())
    }

    /// Writes a batch end marker to the journal
    fn write_end(&mut self, checksum: u64) -> Result<usize, crate::Error> {
        debug_assert!(self.buf.is_empty());

        Entry::End(checksum).encode_into(&mut self.buf)?;

        self.file.write_all(&self.buf)?;

        Ok(self.buf.len())
    }

    pub(crate) fn write_raw(
        &mut self,
        keyspace_id: InternalKeyspaceId,
        key: &[u8],
        value: &[u8],
        value_type: ValueType,
        seqno: u64,
    ) -> crate::Result<usize> {
        self.is_buffer_dirty = true;

        let mut hasher = xxhash_rust::xxh3::Xxh3::default();
        let mut byte_count = 0;

        self.buf.clear();
        byte_count += self.write_start(1, seqno)?;
        self.buf.clear();

        serialize_marker_item(
            &mut self.buf,
            keyspace_id,
            key,
            value,
            value_type,
            if self.compression_threshold > 0 && value.len() >= self.compression_threshold {
                self.compression
            } else {
                CompressionType::None
            },
        )?;

        self.file.write_all(&self.buf)?;

        hasher.update(&self.buf);
        byte_count += self.buf.len();

        self.buf.clear();
        let checksum = hasher.finish();
        byte_count += self.write_end(checksum)?;
        self.note_written(byte_count);

        Ok(byte_count)
    }

    pub(crate) fn write_clear(
        &mut self,
        keyspace_id: InternalKeyspaceId,
        seqno: SeqNo,
    ) -> crate::Result<usize> {
        self.is_buffer_dirty = true;

        let mut hasher = xxhash_rust::xxh3::Xxh3::default();
        let mut byte_count = 0;

        self.buf.clear();
        byte_count += self.write_start(1, seqno)?;
        self.buf.clear();

        Entry::Clear { keyspace_id }.encode_into(&mut self.buf)?;
        self.file.write_all(&self.buf)?;
        hasher.update(&self.buf);
        byte_count += self.buf.len();

        self.buf.clear();
        let checksum = hasher.finish();
        byte_count += self.write_end(checksum)?;
        self.note_written(byte_count);

        Ok(byte_count)
    }

    pub fn write_batch<'a>(
        &mut self,
        items: impl Iterator<Item = &'a BatchItem>,
        batch_size: usize,
        seqno: SeqNo,
    ) -> crate::Result<usize> {
        if batch_size == 0 {
            return Ok(0);
        }

        self.is_buffer_dirty = true;

        self.buf.clear();

        // NOTE: entries.len() is surely never > u32::MAX
        #[expect(clippy::cast_possible_truncation)]
        let item_count = batch_size as u32;

        let mut hasher = xxhash_rust::xxh3::Xxh3::default();
        let mut byte_count = 0;

        byte_count += self.write_start(item_count, seqno)?;
        self.buf.clear();

        for item in items {
            debug_assert!(self.buf.is_empty());

            serialize_marker_item(
                &mut self.buf,
                item.keyspace.id,
                &item.key,
                &item.value,
                item.value_type,
                if self.compression_threshold > 0 && item.value.len() >= self.compression_threshold
                {
                    self.compression
                } else {
                    CompressionType::None
                },
            )?;

            self.file.write_all(&self.buf)?;

            hasher.update(&self.buf);
            byte_count += self.buf.len();

            self.buf.clear();
        }

        let checksum = hasher.finish();
        byte_count += self.write_end(checksum)?;
        self.note_written(byte_count);

        Ok(byte_count)
    }
}
