//! Varints and length-prefixed texts: how the compact lists and texts pack numbers and
//! strings into bytes.

/// LEB128: seven bits a byte, low first, the high bit set on all but the last.
pub fn write_varint(out: &mut Vec<u8>, value: u64) {
    let (bytes, len) = varint(value);
    out.extend_from_slice(&bytes[..len]);
}

/// `value` as LEB128, in the first `len` bytes of the array.
pub fn varint(mut value: u64) -> ([u8; 10], usize) {
    let mut bytes = [0u8; 10];
    let mut len = 0;
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        bytes[len] = if value == 0 { low } else { low | 0x80 };
        len += 1;
        if value == 0 {
            return (bytes, len);
        }
    }
}

pub fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A text as its length and its bytes.
pub fn write_text(out: &mut Vec<u8>, text: &str) {
    write_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

pub fn read_text<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
    let len = usize::try_from(read_varint(bytes)?).ok()?;
    let text = bytes.get(..len)?;
    *bytes = &bytes[len..];
    std::str::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for value in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            let mut bytes = &out[..];
            assert_eq!(read_varint(&mut bytes), Some(value));
            assert!(bytes.is_empty());
        }
        assert_eq!(read_varint(&mut &[0x80u8][..]), None);
    }
}
