//! How a delivery proves it comes from spoor: the header
//!
//! ```text
//! Spoor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by the secret>
//! ```
//!
//! A receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares in
//! constant time, and refuses timestamps far from its clock (replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER: &str = "spoor-signature";

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Whether `header` signs `body` with `secret`, at most `tolerance_s` seconds from `now_s`.
pub fn verify(secret: &str, header: &str, body: &[u8], now_s: i64, tolerance_s: i64) -> bool {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signature = decode_hex(value),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    (now_s - timestamp).abs() <= tolerance_s
        && mac(secret, timestamp, body)
            .verify_slice(&signature)
            .is_ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_byte_does_not() {
        let header = sign("0123456789abcdef", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify(
            "0123456789abcdef",
            &header,
            b"{\"a\":1}",
            1_700_000_100,
            300
        ));
        assert!(!verify(
            "0123456789abcdef",
            &header,
            b"{\"a\":2}",
            1_700_000_100,
            300
        ));
        assert!(!verify(
            "another-secret-16",
            &header,
            b"{\"a\":1}",
            1_700_000_100,
            300
        ));
        assert!(!verify(
            "0123456789abcdef",
            &header,
            b"{\"a\":1}",
            1_700_001_000,
            300
        ));
        assert!(!verify("0123456789abcdef", "v1=00", b"", 0, 300));
    }
}
