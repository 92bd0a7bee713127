//! The file KEK provider: exactly 32 raw bytes in a file outside the data dir (tmpfs, a mounted
//! secret), mode 0600 or stricter.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use super::{KekError, LocalKek};
use crate::cipher::DEK_LEN;

/// Loads a KEK from a file at startup.
#[derive(Debug)]
pub struct FileKek;

impl FileKek {
    /// Reads the KEK. Refuses a file that group or others can access, anything that is not a
    /// regular file, and any length but 32. The file is opened non-blocking, so a FIFO planted at
    /// the path is refused instead of hanging startup until someone writes to it.
    pub fn open(path: &Path) -> Result<LocalKek, KekError> {
        let io = |source| KekError::Io { path: path.to_path_buf(), source };
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.file_type().is_file() {
            return Err(KekError::NotRegularFile { path: path.to_path_buf() });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KekError::Permissions { path: path.to_path_buf(), mode });
        }
        let mut buf = Zeroizing::new([0u8; DEK_LEN + 1]);
        let mut len = 0;
        while let Some(dst) = buf.get_mut(len..) {
            if dst.is_empty() {
                break;
            }
            match file.read(dst) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        let wrong = || KekError::WrongLength { source_name: path.display().to_string(), len };
        if len != DEK_LEN {
            return Err(wrong());
        }
        let mut key = Zeroizing::new([0u8; DEK_LEN]);
        key.copy_from_slice(buf.get(..DEK_LEN).ok_or_else(wrong)?);
        LocalKek::new(&key, format!("file:{}", path.display()))
    }
}
