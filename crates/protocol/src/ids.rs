//! The ids shops and admins choose (sites, blocks, webhooks): short, printable, without
//! spaces, safe in paths, query strings and container types.

/// Longest id accepted.
pub const MAX_ID_LEN: usize = 64;

/// Checks an id; the error says what is expected (the caller adds the field name).
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected 1 to {MAX_ID_LEN} characters of A-Z, a-z, 0-9, '-', '_' or '.', got {id:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_and_plain() {
        assert!(check_id("8A412DC").is_ok());
        assert!(check_id("product-similar_v2.1").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("has space").is_err());
        assert!(check_id(&"x".repeat(65)).is_err());
    }
}
