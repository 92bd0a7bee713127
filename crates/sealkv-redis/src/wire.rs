//! The bounds-checked cursor under this crate's binary decoders (command batches in
//! [`crate::entry`], reply lists in [`crate::reply_list`]). It only says whether the bytes are
//! there; each decoder names the error and the byte order, so both stay total without each
//! keeping its own copy of the bounds checks.

/// Reads a byte string front to back.
pub(crate) struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Wire(bytes)
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.0.len()
    }

    /// The next `n` bytes, or `None` (and nothing consumed) if fewer are left.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    /// The next `N` bytes as an array, or `None` if fewer are left.
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.0.split_first_chunk::<N>()?;
        self.0 = tail;
        Some(*head)
    }
}
