//! How an event's identifiers of a person are normalised: the same wherever they are
//! compared (the state's identity rules, the duplicate index's order keys).

use crate::Text;

pub fn normalize_email(email: &str) -> Text {
    let email = email.trim();
    // Most emails arrive lowercase already: copied as they are, without the per-character
    // Unicode case mapping.
    if email
        .bytes()
        .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
    {
        Text::from_str_to_lowercase(email)
    } else {
        Text::from(email)
    }
}

/// Digits only, with the international prefix (`+` or `00`) dropped:
/// `+1-541-754-3010` and `0015417543010` are both `15417543010`.
pub fn normalize_phone(phone: &str) -> Option<Text> {
    let digits: Text = phone.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.strip_prefix("00") {
        Some(rest) => Text::from(rest),
        None => digits,
    };
    (digits.len() >= 5).then_some(digits)
}
