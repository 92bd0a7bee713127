//! The env KEK provider: 32 bytes as base64 or hex in an environment variable, removed from the
//! process environment as soon as it is read so child processes and `/proc/<pid>/environ`
//! readers after startup do not see it.

use base64::Engine;
use zeroize::Zeroizing;

use super::{KekError, LocalKek};
use crate::cipher::DEK_LEN;

/// Loads a KEK from the environment.
#[derive(Debug)]
pub struct EnvKek;

impl EnvKek {
    /// Decodes a KEK from the variable's value: base64 (standard alphabet, padded) or 64 hex
    /// characters, surrounding whitespace ignored.
    pub fn from_value(var: &str, value: &str) -> Result<LocalKek, KekError> {
        let bad = || KekError::EnvDecode { var: var.to_owned() };
        let v = value.trim();
        let mut key = Zeroizing::new([0u8; DEK_LEN]);
        if v.len() == 2 * DEK_LEN {
            for (dst, pair) in key.iter_mut().zip(v.as_bytes().chunks_exact(2)) {
                let [hi, lo] = pair else { return Err(bad()) };
                *dst = (hex(*hi).ok_or_else(bad)? << 4) | hex(*lo).ok_or_else(bad)?;
            }
        } else {
            let decoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(v).map_err(|_| bad())?);
            if decoded.len() != DEK_LEN {
                return Err(KekError::WrongLength { source_name: format!("env:{var}"), len: decoded.len() });
            }
            key.copy_from_slice(&decoded);
        }
        LocalKek::new(&key, format!("env:{var}"))
    }

    /// Reads the variable, removes it from the environment, and decodes it.
    ///
    /// # Safety
    ///
    /// Removing an environment variable is only sound while no other thread reads or writes the
    /// environment (`std::env::remove_var`'s contract). Call this at process start, before the
    /// async runtime or any other thread is spawned.
    #[allow(unsafe_code)]
    pub unsafe fn take_from_env(var: &str) -> Result<LocalKek, KekError> {
        let value = Zeroizing::new(std::env::var(var).map_err(|_| KekError::EnvMissing { var: var.to_owned() })?);
        // SAFETY: the caller guarantees no other thread touches the environment (see # Safety).
        unsafe { std::env::remove_var(var) };
        Self::from_value(var, &value)
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
