//! The 9-byte value header stored in front of every version: `flags 1 ‖ expire_at_ms 8 ‖ body`.
//!
//! `flags` bit 0 is the tombstone bit, bits 1–2 the encryption state, bits 3–7 reserved. The read
//! path decides cleartext vs envelope from the encryption state only, never from the body.

/// Length of the value header.
pub const HEADER_LEN: usize = sealkv_crypto::envelope::VALUE_HEADER_LEN;

const TOMBSTONE: u8 = 0b0000_0001;
const STATE_MASK: u8 = 0b0000_0110;
const STATE_SHIFT: u8 = 1;
const RESERVED_MASK: u8 = 0b1111_1000;

/// How a version's body is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptionState {
    /// The body is the value itself.
    Cleartext,
    /// The body is a storage envelope.
    Envelope,
}

impl EncryptionState {
    fn bits(self) -> u8 {
        match self {
            EncryptionState::Cleartext => 0b00,
            EncryptionState::Envelope => 0b01,
        }
    }
}

/// Why a stored value header is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than 9 bytes.
    #[error("stored value of {len} bytes is shorter than its 9-byte header")]
    Short {
        /// Its length.
        len: usize,
    },
    /// A reserved flag bit is set.
    #[error("value header flags {flags:#04x} set reserved bits")]
    ReservedFlags {
        /// The flags byte.
        flags: u8,
    },
    /// Encryption state 0b10 or 0b11.
    #[error("value header names reserved encryption state {state:#04b}")]
    ReservedState {
        /// The two state bits.
        state: u8,
    },
    /// A tombstone that is encrypted, expires, or has a body.
    #[error("tombstone carries an encryption state, an expiry or a body")]
    MalformedTombstone,
}

/// A decoded value header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueHeader {
    /// The version deletes the key.
    pub tombstone: bool,
    /// How the body is stored.
    pub state: EncryptionState,
    /// Unix milliseconds after which the value reads as absent; 0 = never.
    pub expire_at_ms: u64,
}

impl ValueHeader {
    /// The header of a tombstone.
    pub const TOMBSTONE: ValueHeader =
        ValueHeader { tombstone: true, state: EncryptionState::Cleartext, expire_at_ms: 0 };

    /// The header of a live value.
    pub fn live(state: EncryptionState, expire_at_ms: u64) -> Self {
        ValueHeader { tombstone: false, state, expire_at_ms }
    }

    /// The 9 stored bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let flags = u8::from(self.tombstone) | (self.state.bits() << STATE_SHIFT);
        let [a, b, c, d, e, f, g, h] = self.expire_at_ms.to_be_bytes();
        [flags, a, b, c, d, e, f, g, h]
    }

    /// Splits a stored value into its header (decoded and as raw bytes, which the envelope AAD
    /// binds) and body. Checks everything the header alone can tell.
    pub fn split(stored: &[u8]) -> Result<(ValueHeader, &[u8; HEADER_LEN], &[u8]), HeaderError> {
        let (raw, body) = stored.split_first_chunk::<HEADER_LEN>().ok_or(HeaderError::Short { len: stored.len() })?;
        let [flags, rest @ ..] = *raw;
        if flags & RESERVED_MASK != 0 {
            return Err(HeaderError::ReservedFlags { flags });
        }
        let state = match (flags & STATE_MASK) >> STATE_SHIFT {
            0b00 => EncryptionState::Cleartext,
            0b01 => EncryptionState::Envelope,
            other => return Err(HeaderError::ReservedState { state: other }),
        };
        let header = ValueHeader { tombstone: flags & TOMBSTONE != 0, state, expire_at_ms: u64::from_be_bytes(rest) };
        if header.tombstone && (state != EncryptionState::Cleartext || header.expire_at_ms != 0 || !body.is_empty()) {
            return Err(HeaderError::MalformedTombstone);
        }
        Ok((header, raw, body))
    }

    /// Whether the value reads as absent at `now_ms` (Redis semantics: expired at the instant).
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expire_at_ms != 0 && self.expire_at_ms <= now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_pins() {
        assert_eq!(ValueHeader::TOMBSTONE.encode(), [1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ValueHeader::live(EncryptionState::Envelope, 0x0102).encode(), [0b010, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(
            ValueHeader::live(EncryptionState::Cleartext, u64::MAX).encode(),
            [0, 255, 255, 255, 255, 255, 255, 255, 255]
        );
    }

    #[test]
    fn rejects_every_malformed_header() {
        assert_eq!(ValueHeader::split(&[0; 8]), Err(HeaderError::Short { len: 8 }));
        for bit in 3..8 {
            assert_eq!(
                ValueHeader::split(&[1 << bit, 0, 0, 0, 0, 0, 0, 0, 0]),
                Err(HeaderError::ReservedFlags { flags: 1 << bit })
            );
        }
        assert_eq!(
            ValueHeader::split(&[0b100, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(HeaderError::ReservedState { state: 0b10 })
        );
        assert_eq!(
            ValueHeader::split(&[0b110, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(HeaderError::ReservedState { state: 0b11 })
        );
        assert_eq!(ValueHeader::split(&[0b011, 0, 0, 0, 0, 0, 0, 0, 0]), Err(HeaderError::MalformedTombstone));
        assert_eq!(ValueHeader::split(&[0b001, 0, 0, 0, 0, 0, 0, 0, 1]), Err(HeaderError::MalformedTombstone));
        assert_eq!(ValueHeader::split(&[0b001, 0, 0, 0, 0, 0, 0, 0, 0, 7]), Err(HeaderError::MalformedTombstone));
        // A cleartext body starting with 0x01 (the envelope version byte) is still cleartext.
        let (h, _, body) = ValueHeader::split(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]).unwrap();
        assert_eq!((h.state, body), (EncryptionState::Cleartext, &[1u8, 2][..]));
    }

    proptest! {
        #[test]
        fn round_trip(enc: bool, expire: u64, body in proptest::collection::vec(any::<u8>(), 0..8)) {
            let state = if enc { EncryptionState::Envelope } else { EncryptionState::Cleartext };
            let h = ValueHeader::live(state, expire);
            let mut stored = h.encode().to_vec();
            stored.extend_from_slice(&body);
            let (got, raw, b) = ValueHeader::split(&stored).unwrap();
            prop_assert_eq!(got, h);
            prop_assert_eq!(raw, &h.encode());
            prop_assert_eq!(b, &body[..]);
        }

        #[test]
        fn decoder_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            let _ = ValueHeader::split(&bytes);
        }
    }
}
