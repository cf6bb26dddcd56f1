//! The on-disk framing of one record.
//!
//! ```text
//! | length: u32 LE | crc32: u32 LE | position: u64 LE | payload: length bytes |
//! ```
//! The CRC covers the position and the payload, so a record copied to the wrong place, a
//! torn write or a zero-filled tail after power loss all fail the check.

use crate::{MAX_RECORD_BYTES, Position};

pub const HEADER_BYTES: usize = 16;

pub fn encode_into(buf: &mut Vec<u8>, position: Position, payload: &[u8]) {
    let pos = position.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&pos);
    crc.update(payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.extend_from_slice(&pos);
    buf.extend_from_slice(payload);
}

/// Why bytes at some offset are not a valid record.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes remain than the header or the length promises: a torn write.
    Truncated,
    /// The length field is impossible.
    BadLength(u32),
    BadChecksum,
    /// A valid record, but not the position expected here.
    WrongPosition {
        expected: Position,
        found: Position,
    },
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Truncated => write!(f, "record cut short"),
            Invalid::BadLength(n) => write!(f, "impossible record length {n}"),
            Invalid::BadChecksum => write!(f, "checksum mismatch"),
            Invalid::WrongPosition { expected, found } => {
                write!(f, "expected record {expected}, found record {found}")
            }
        }
    }
}

/// The payload length a record starting at `bytes` declares, once its first four bytes are
/// there (not checked: [`decode`] checks it).
pub fn length_field(bytes: &[u8]) -> Option<usize> {
    let word: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(word) as usize)
}

/// Decodes the record at the start of `bytes`, returning its payload and encoded length.
pub fn decode(bytes: &[u8], expected: Position) -> Result<(&[u8], usize), Invalid> {
    if bytes.len() < HEADER_BYTES {
        return Err(Invalid::Truncated);
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let len = word(0);
    if len as usize > MAX_RECORD_BYTES {
        return Err(Invalid::BadLength(len));
    }
    let total = HEADER_BYTES + len as usize;
    if bytes.len() < total {
        return Err(Invalid::Truncated);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[8..total]);
    if crc.finalize() != word(4) {
        return Err(Invalid::BadChecksum);
    }
    let found = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if found != expected {
        return Err(Invalid::WrongPosition { expected, found });
    }
    Ok((&bytes[HEADER_BYTES..total], total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_kind_of_damage() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 7, b"hello");
        assert_eq!(decode(&buf, 7), Ok((&b"hello"[..], buf.len())));
        assert_eq!(
            decode(&buf, 8),
            Err(Invalid::WrongPosition {
                expected: 8,
                found: 7
            })
        );
        assert_eq!(decode(&buf[..buf.len() - 1], 7), Err(Invalid::Truncated));
        let mut flipped = buf.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&flipped, 7), Err(Invalid::BadChecksum));
        assert_eq!(decode(&[0u8; 32], 0), Err(Invalid::BadChecksum));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// What the fuzz target `record` drives: any bytes decode or are refused without
        /// a panic, and a record decodes to the payload it was encoded with, any change to
        /// its bytes refused.
        #[test]
        fn records_decode_as_encoded_and_damage_is_refused(
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            position in proptest::prelude::any::<u64>(),
            flip in proptest::prelude::any::<usize>(),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let _ = decode(&noise, position);
            let mut bytes = Vec::new();
            encode_into(&mut bytes, position, &payload);
            let (decoded, len) = decode(&bytes, position).unwrap();
            proptest::prop_assert_eq!((decoded, len), (&payload[..], bytes.len()));
            let at = flip % bytes.len();
            bytes[at] ^= 0x5a;
            proptest::prop_assert!(decode(&bytes, position).is_err(), "a changed byte at {} was taken", at);
        }
    }
}
