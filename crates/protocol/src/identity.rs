//! The identifiers that name a person, normalised so that one person's `A@B.com` and
//! `a@b.com` are one identifier wherever they are compared: in the engine's contacts,
//! and in the names of the keys their records are sealed with (see [`crate::sealing`]).

use serde::Serialize;

use crate::{ContactLink, Text, Visitor};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "camelCase")]
pub enum Identifier {
    Sc(Text),
    ExternalCustomerId(Text),
    Email(Text),
    Phone(Text),
    EsContactId(Text),
}

impl Identifier {
    /// External id and email: at most one per contact, never moved to another.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Identifier::ExternalCustomerId(_) | Identifier::Email(_)
        )
    }

    /// Its kind, as an API query names it, and its value.
    pub fn kind_and_value(&self) -> (&'static str, &str) {
        match self {
            Identifier::Sc(v) => ("sc", v),
            Identifier::ExternalCustomerId(v) => ("externalCustomerId", v),
            Identifier::Email(v) => ("email", v),
            Identifier::Phone(v) => ("phone", v),
            Identifier::EsContactId(v) => ("esContactId", v),
        }
    }

    /// An identifier from an API query: `kind` as in the query string.
    pub fn from_query(kind: &str, value: &str) -> Option<Identifier> {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        Some(match kind {
            "sc" => Identifier::Sc(value.into()),
            "externalCustomerId" => Identifier::ExternalCustomerId(value.into()),
            "email" => Identifier::Email(normalize_email(value)),
            "phone" => Identifier::Phone(normalize_phone(value)?),
            "esContactId" => Identifier::EsContactId(value.into()),
            _ => return None,
        })
    }
}

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

/// The identifiers an event carries, normalised.
pub fn identifiers_of(visitor: &Visitor) -> Vec<Identifier> {
    let mut ids = Vec::new();
    if let Some(id) = &visitor.external_customer_id {
        ids.push(Identifier::ExternalCustomerId(id.clone()));
    }
    if let Some(email) = &visitor.email {
        ids.push(Identifier::Email(normalize_email(email)));
    }
    if let Some(phone) = visitor.phone.as_deref().and_then(normalize_phone) {
        ids.push(Identifier::Phone(phone));
    }
    if let Some(es) = &visitor.es_contact_id {
        ids.push(Identifier::EsContactId(es.clone()));
    }
    if let Some(sc) = &visitor.sc {
        ids.push(Identifier::Sc(sc.clone()));
    }
    ids
}

/// The identifiers a shop plugin's contact link carries, normalised.
pub fn identifiers_of_link(link: &ContactLink) -> Vec<Identifier> {
    let mut ids = Vec::new();
    ids.extend(
        link.external_customer_id
            .as_deref()
            .map(Text::from)
            .map(Identifier::ExternalCustomerId),
    );
    ids.extend(
        link.email
            .as_deref()
            .map(|e| Identifier::Email(normalize_email(e))),
    );
    ids.extend(
        link.phone
            .as_deref()
            .and_then(normalize_phone)
            .map(Identifier::Phone),
    );
    ids.extend(link.web_id.as_deref().map(Text::from).map(Identifier::Sc));
    ids
}
