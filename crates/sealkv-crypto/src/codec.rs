//! A bounds-checked reader for the big-endian wire formats (the encryption entries here, the KV
//! commands in sealkv-raft). Every read either returns the bytes asked for or a `Truncated`
//! error; nothing here indexes or allocates by itself.

use crate::wire::WireError;

/// Reads a byte string front to back.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes; `what` names the field in the error.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Truncated { what });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let (head, rest) = self.buf.split_first_chunk::<N>().ok_or(WireError::Truncated { what })?;
        self.buf = rest;
        Ok(*head)
    }

    /// A byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    /// A big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// Fails with `Trailing` unless every byte was consumed.
    pub fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() { Ok(()) } else { Err(WireError::Trailing { count: self.buf.len() }) }
    }
}
