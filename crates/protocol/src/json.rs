//! The JSON front end: what bytes count as a JSON document here.
//!
//! The vendor's published examples are indented in places with U+00A0 NO-BREAK SPACE, and
//! shops paste them into their code. JSON allows only ASCII whitespace, so before parsing we
//! turn each no-break space that stands *outside* a string into two ASCII spaces (the same
//! byte length, so serde_json's line and column numbers stay true). Inside strings the
//! character is data and is left alone. A leading UTF-8 byte-order mark is dropped too.

use std::borrow::Cow;

use serde::de::DeserializeOwned;

use crate::error::ProtocolError;
use crate::tree::Json;

const NBSP: [u8; 2] = [0xC2, 0xA0];
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// Parses one JSON document, tolerating no-break-space indentation and a byte-order mark.
pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    let cleaned = tolerate_nbsp(body);
    serde_json::from_slice(&cleaned).map_err(|e| ProtocolError::invalid_json(&e))
}

/// Reads one JSON document into a tree borrowing from it (see [`crate::tree`]), tolerating
/// what [`from_slice`] tolerates, and hands the tree to `walk`.
pub fn with_tree<R>(body: &[u8], walk: impl FnOnce(&Json<'_>) -> R) -> Result<R, ProtocolError> {
    let cleaned = tolerate_nbsp(body);
    let tree: Json<'_> =
        serde_json::from_slice(&cleaned).map_err(|e| ProtocolError::invalid_json(&e))?;
    Ok(walk(&tree))
}

/// `body` with every U+00A0 outside string literals replaced by two spaces.
pub fn tolerate_nbsp(body: &[u8]) -> Cow<'_, [u8]> {
    let body = body.strip_prefix(&BOM).unwrap_or(body);
    if memchr::memmem::find(body, &NBSP).is_none() {
        return Cow::Borrowed(body);
    }
    let mut out = body.to_vec();
    let mut in_string = false;
    // Positions below this are escaped characters inside a string.
    let mut escaped_until = 0;
    // Only quotes, backslashes and the no-break space's lead byte matter: jump between them.
    for i in memchr::memchr3_iter(b'"', b'\\', NBSP[0], body) {
        if i < escaped_until {
            continue;
        }
        match body[i] {
            b'\\' if in_string => escaped_until = i + 2,
            b'"' => in_string = !in_string,
            lead if lead == NBSP[0] && !in_string && body.get(i + 1) == Some(&NBSP[1]) => {
                out[i] = b' ';
                out[i + 1] = b' ';
            }
            _ => {}
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn nbsp_indentation_is_whitespace_but_nbsp_in_strings_is_kept() {
        let body = "{\u{a0}\u{a0}\"name\": \"a\u{a0}b\",\n\u{a0}\"x\": \"q\\\"\u{a0}\"}";
        let value: Value = from_slice(body.as_bytes()).unwrap();
        assert_eq!(value["name"], "a\u{a0}b");
        assert_eq!(value["x"], "q\"\u{a0}");
        // An escaped backslash ends just before the closing quote; the space after is outside.
        let body = "{\"y\": \"a\\\\\"\u{a0}}";
        let value: Value = from_slice(body.as_bytes()).unwrap();
        assert_eq!(value["y"], "a\\");
    }

    #[test]
    fn invalid_json_reports_line_and_column() {
        let err = from_slice::<Value>(b"{\n  \"a\": 1,\n  oops\n}").unwrap_err();
        assert!(
            err.message().contains("line 3, column 3"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn byte_order_mark_is_dropped() {
        let mut body = BOM.to_vec();
        body.extend_from_slice(b"{\"a\":1}");
        let value: Value = from_slice(&body).unwrap();
        assert_eq!(value["a"], 1);
    }
}
