//! Who is who: the identifiers that name a contact, how they are normalised, and which
//! contacts an event's identifiers join.
//!
//! # Precedence rules
//!
//! A contact is known by any of: the `sc` cookie, `externalCustomerId`, email (trimmed,
//! lowercased), phone (digits only, international prefix `+`/`00` dropped) and
//! `user_es_contact_id`. External id and email are *permanent*: a contact holds at most one
//! of each, and they never change hands. Cookies, phones and vendor contact ids are
//! *shared*: a contact may have many, and one can move to another contact.
//!
//! For each event, in log order:
//! 1. The contacts its identifiers point at are the *candidates*.
//! 2. A candidate is *compatible* with the event when, for each permanent kind, it holds
//!    no value or the event's value. Two candidates are compatible when no permanent kind
//!    holds different values in them.
//! 3. The *anchor* is the contact the event belongs to: the first compatible candidate,
//!    preferring one matched by a permanent identifier, then the oldest. When none is
//!    compatible, a new contact is the anchor.
//! 4. Every other candidate compatible with the anchor merges into it; of the merged
//!    contacts the oldest survives and takes the others' identifiers, views, cart,
//!    wishlist and orders. The merge is recorded on the survivor.
//! 5. A candidate that is not compatible is never merged: the shared identifiers that
//!    pointed at it move to the anchor (a shop's shared computer: the cookie follows the
//!    person who signed in last).
//! 6. The anchor takes all of the event's identifiers.

use serde::{Deserialize, Serialize};
use spoor_protocol::Text;
pub use spoor_protocol::identity::{
    Identifier, identifiers_of, identifiers_of_link, normalize_email, normalize_phone,
};

use crate::compact::thin::{Texts, ThinStr};
use crate::limits::{self, Dropped};

/// A contact's number within its site, in order of creation.
pub type ContactId = u32;

/// Shared identifiers (cookies, phones, vendor contact ids) a contact keeps of each
/// kind. A person has a handful; a client that sends a new cookie with every event would
/// otherwise grow one contact without bound. Beyond this, the oldest is let go: it no
/// longer names the contact, and if it comes back it starts a contact of its own, which
/// merges back through any other identifier it comes with.
pub const MAX_SHARED_IDS: usize = 64;

/// The identifiers one contact holds. The kinds most contacts have (a cookie, an email, a
/// phone) are held in place, the rest in a box that most contacts do without: a million
/// contacts are a million of these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identifiers {
    pub email: Option<ThinStr>,
    // Vectors, in arrival order: a contact has one or a few of each (at most
    // MAX_SHARED_IDS), and a one-entry tree set would allocate a whole node.
    pub phones: Texts,
    pub cookies: Texts,
    rare: Option<Box<RareIdentifiers>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RareIdentifiers {
    external_customer_id: Option<ThinStr>,
    es_contact_ids: Texts,
}

/// [`Identifiers`] as snapshots and the API show them.
#[derive(Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(serialize = "Text: Serialize, List: Serialize + AsRef<Texts>")
)]
struct IdentifiersShown<Text, List> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    external_customer_id: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email: Option<Text>,
    #[serde(default, skip_serializing_if = "none")]
    phones: List,
    #[serde(default, skip_serializing_if = "none")]
    cookies: List,
    #[serde(default, skip_serializing_if = "none")]
    es_contact_ids: List,
}

fn none<List: AsRef<Texts>>(list: &List) -> bool {
    list.as_ref().is_empty()
}

impl Serialize for Identifiers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        IdentifiersShown {
            external_customer_id: self.external_customer_id(),
            email: self.email.as_deref(),
            phones: &self.phones,
            cookies: &self.cookies,
            es_contact_ids: self.es_contact_ids(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Identifiers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let held = IdentifiersShown::<ThinStr, Texts>::deserialize(deserializer)?;
        let rare = RareIdentifiers {
            external_customer_id: held.external_customer_id,
            es_contact_ids: held.es_contact_ids,
        };
        Ok(Identifiers {
            email: held.email,
            phones: held.phones,
            cookies: held.cookies,
            rare: (rare != RareIdentifiers::default()).then(|| Box::new(rare)),
        })
    }
}

impl Identifiers {
    pub fn external_customer_id(&self) -> Option<&str> {
        self.rare.as_ref()?.external_customer_id.as_deref()
    }

    pub fn es_contact_ids(&self) -> &Texts {
        static NONE: Texts = Texts::EMPTY;
        self.rare.as_ref().map_or(&NONE, |r| &r.es_contact_ids)
    }

    /// Whether `cookie` is all that names the contact: then everything the contact holds
    /// came with that cookie. Once an email, a phone or an id names a contact, anyone who
    /// posted their own cookie beside it (the tracker is public) could share its history.
    pub fn only_cookie_is(&self, cookie: &str) -> bool {
        self.email.is_none()
            && self.phones.is_empty()
            && self.rare.is_none()
            && self.cookies.len() == 1
            && self.cookies.contains(cookie)
    }

    fn rare_mut(&mut self) -> &mut RareIdentifiers {
        self.rare.get_or_insert_default()
    }

    /// Drops the box of rare kinds once it holds nothing.
    fn tidy(&mut self) {
        if self.rare.as_deref() == Some(&RareIdentifiers::default()) {
            self.rare = None;
        }
    }

    pub fn all(&self) -> Vec<Identifier> {
        let mut out = Vec::new();
        let external = self.external_customer_id().map(Text::from);
        out.extend(external.map(Identifier::ExternalCustomerId));
        out.extend(self.email.as_deref().map(Text::from).map(Identifier::Email));
        let texts = |list: &Texts, kind: fn(Text) -> Identifier| {
            list.iter()
                .map(move |text| kind(Text::from(text)))
                .collect::<Vec<_>>()
        };
        out.extend(texts(&self.phones, Identifier::Phone));
        out.extend(texts(&self.cookies, Identifier::Sc));
        out.extend(texts(self.es_contact_ids(), Identifier::EsContactId));
        out
    }

    /// Adds an identifier; returns the one let go to make room, if any.
    #[must_use = "an identifier let go must leave the index too"]
    pub fn insert(&mut self, id: Identifier) -> Option<Identifier> {
        let let_go = self.insert_within_cap(id);
        if let_go.is_some() {
            limits::drop_one(Dropped::Identifier);
        }
        let_go
    }

    fn insert_within_cap(&mut self, id: Identifier) -> Option<Identifier> {
        match id {
            Identifier::ExternalCustomerId(v) => {
                self.rare_mut().external_customer_id = Some(v.as_str().into());
                None
            }
            Identifier::Email(v) => {
                self.email = Some(v.as_str().into());
                None
            }
            Identifier::Phone(v) => self.phones.add(&v, MAX_SHARED_IDS).map(Identifier::Phone),
            Identifier::Sc(v) => self.cookies.add(&v, MAX_SHARED_IDS).map(Identifier::Sc),
            Identifier::EsContactId(v) => (self.rare_mut().es_contact_ids)
                .add(&v, MAX_SHARED_IDS)
                .map(Identifier::EsContactId),
        }
    }

    pub fn remove(&mut self, id: &Identifier) {
        match id {
            Identifier::ExternalCustomerId(_) => self.rare_mut().external_customer_id = None,
            Identifier::Email(_) => self.email = None,
            Identifier::Phone(v) => self.phones.retain(|p| p != v),
            Identifier::Sc(v) => self.cookies.retain(|c| c != v),
            Identifier::EsContactId(v) => self.rare_mut().es_contact_ids.retain(|e| e != v),
        }
        self.tidy();
    }

    /// Whether `ids` could belong to this contact: no permanent kind would get a second,
    /// different value.
    pub fn accepts(&self, ids: &[Identifier]) -> bool {
        ids.iter().all(|id| match id {
            Identifier::ExternalCustomerId(v) => {
                self.external_customer_id().is_none_or(|own| own == v)
            }
            Identifier::Email(v) => self.email.as_deref().is_none_or(|own| own == v),
            _ => true,
        })
    }

    /// Whether two contacts may merge: no permanent kind holds different values.
    pub fn compatible(&self, other: &Identifiers) -> bool {
        let same = |a: Option<&str>, b: Option<&str>| match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        same(self.external_customer_id(), other.external_customer_id())
            && same(self.email.as_deref(), other.email.as_deref())
    }

    /// Takes over `other`'s identifiers; returns those let go to make room.
    #[must_use = "identifiers let go must leave the index too"]
    pub fn absorb(&mut self, other: Identifiers) -> Vec<Identifier> {
        other
            .all()
            .into_iter()
            .filter_map(|id| self.insert(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_emails_normalise() {
        assert_eq!(
            normalize_phone("+1-541-754-3010").as_deref(),
            Some("15417543010")
        );
        assert_eq!(
            normalize_phone("0015417543010").as_deref(),
            Some("15417543010")
        );
        assert_eq!(normalize_phone("12"), None);
        assert_eq!(normalize_email("  User@Mail.COM "), "user@mail.com");
        assert_eq!(normalize_email("user@mail.com"), "user@mail.com");
        assert_eq!(normalize_email("ÖZLEM@mail.com"), "özlem@mail.com");
    }

    #[test]
    fn a_contact_keeps_its_newest_shared_identifiers() {
        let mut ids = Identifiers::default();
        for n in 0..MAX_SHARED_IDS {
            assert_eq!(ids.insert(Identifier::Sc(format!("c{n}").into())), None);
        }
        assert_eq!(
            ids.insert(Identifier::Sc("c0".into())),
            None,
            "already held"
        );
        assert_eq!(
            ids.insert(Identifier::Sc("new".into())),
            Some(Identifier::Sc("c0".into()))
        );
        assert_eq!(ids.cookies.len(), MAX_SHARED_IDS);
        assert_eq!(ids.cookies.iter().last(), Some("new"));
    }

    #[test]
    fn a_cookie_alone_is_the_only_name_until_anything_else_names_the_contact() {
        let mut ids = Identifiers::default();
        let _ = ids.insert(Identifier::Sc("c1".into()));
        assert!(ids.only_cookie_is("c1"));
        assert!(!ids.only_cookie_is("c2"));
        for other in [
            Identifier::Email("a@x".into()),
            Identifier::Phone("12345".into()),
            Identifier::ExternalCustomerId("7".into()),
            Identifier::EsContactId("9".into()),
            Identifier::Sc("c2".into()),
        ] {
            let mut named = ids.clone();
            let _ = named.insert(other.clone());
            assert!(!named.only_cookie_is("c1"), "{other:?}");
        }
    }

    #[test]
    fn permanent_identifiers_decide_compatibility() {
        let mut a = Identifiers::default();
        let _ = a.insert(Identifier::Email("a@x".into()));
        let _ = a.insert(Identifier::Sc("c1".into()));
        assert!(a.accepts(&[Identifier::Email("a@x".into()), Identifier::Sc("c2".into())]));
        assert!(!a.accepts(&[Identifier::Email("b@x".into())]));
        let mut b = Identifiers::default();
        let _ = b.insert(Identifier::ExternalCustomerId("7".into()));
        assert!(a.compatible(&b));
        let _ = b.insert(Identifier::Email("b@x".into()));
        assert!(!a.compatible(&b));
    }
}
