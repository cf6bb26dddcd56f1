//! Sealing: a record's personal part (its visitor, or a contact link) kept encrypted
//! under keys of the identifiers it carries, so that deleting one identifier's keys makes
//! every record that carried it unreadable. How a log that cannot be rewritten erases a
//! person.
//!
//! Each identifier has keys of its own, named by [`key_name`]: a digest of the scope (the
//! site, or none for a contact link, which names no site), the identifier's kind and its
//! normalised value. A record is sealed under one key of *each* identifier it carries,
//! all of them needed to open it: a record with a shared computer's cookie and the erased
//! person's email is unreadable once the email's keys are gone, although the cookie now
//! names someone else. The record's key is derived (HKDF-SHA-256, salted with the
//! record's nonce) from those keys; the box is ChaCha20-Poly1305, bound to the record's
//! request hash, receive time and site. What the record says about products stays readable: a sealed record
//! whose keys are gone counts as a view or a sale of nobody, as a redacted one does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::digest::{SHA256, digest};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::identity::{Identifier, identifiers_of, identifiers_of_link};
use crate::stored::{RecordContent, StoredRecord};
use crate::{ContactLink, Visitor};

pub const KEY_LEN: usize = 32;
pub type Key = [u8; KEY_LEN];

/// What derives a record's key from its identifiers' keys: changing the scheme changes it.
const RECORD_KEY_INFO: &[u8] = b"spoor sealed record v1";
const NAME_PREFIX: &[u8] = b"spoor identifier key v1";

/// A record's sealed part, as it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The ids of the keys it was sealed under, every one needed to open it.
    pub keys: Vec<String>,
    /// The nonce, then the encrypted part with its tag; base64.
    #[serde(rename = "box")]
    pub data: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError<E> {
    #[error(transparent)]
    Keys(E),
    #[error("a sealed record does not open with its keys: {0}")]
    Corrupt(&'static str),
}

/// What opening a record found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// It was not sealed.
    Plain,
    Opened,
    /// One of its keys is gone: its personal part is left empty.
    Erased,
}

/// The name of `id`'s keys in `scope` (a site id; empty for a contact link): 32 hex
/// digits, the same on every node.
pub fn key_name(scope: &str, id: &Identifier) -> String {
    let (kind, value) = id.kind_and_value();
    let mut input = Vec::with_capacity(NAME_PREFIX.len() + scope.len() + value.len() + 24);
    for part in [
        NAME_PREFIX,
        scope.as_bytes(),
        kind.as_bytes(),
        value.as_bytes(),
    ] {
        input.extend_from_slice(part);
        input.push(0);
    }
    let hash = digest(&SHA256, &input);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = String::with_capacity(32);
    for byte in &hash.as_ref()[..16] {
        name.push(char::from(HEX[usize::from(byte >> 4)]));
        name.push(char::from(HEX[usize::from(byte & 15)]));
    }
    name
}

/// The names of the keys a record is sealed under: one per identifier it carries.
pub fn key_names(record: &StoredRecord) -> Vec<String> {
    let (scope, ids) = match &record.content {
        RecordContent::Event(event) => (event.site_id.as_str(), identifiers_of(&event.visitor)),
        RecordContent::ContactLink(link) => ("", identifiers_of_link(link)),
        RecordContent::Feed(_) | RecordContent::Erasure(_) => return Vec::new(),
    };
    let mut names: Vec<String> = ids.iter().map(|id| key_name(scope, id)).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The names of every key a person's identifiers have in `site_id`: the site's, and
/// those of contact links (which name no site).
pub fn erased_key_names<'a>(
    site_id: &str,
    ids: impl IntoIterator<Item = &'a Identifier>,
) -> Vec<String> {
    let mut names: Vec<String> = ids
        .into_iter()
        .flat_map(|id| [key_name(site_id, id), key_name("", id)])
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Seals `record`'s personal part under a key of each of its identifiers, from `key_for`
/// (a key's name to the id and bytes of one of its keys). A record that carries no
/// identifier stays as it is: nothing could ever name it for erasure.
pub fn seal<E>(
    record: &mut StoredRecord,
    mut key_for: impl FnMut(&str) -> Result<(String, Key), E>,
) -> Result<(), E> {
    let names = key_names(record);
    if names.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(names.len());
    let mut keys = Vec::with_capacity(names.len());
    for name in &names {
        let (id, key) = key_for(name)?;
        ids.push(id);
        keys.push(key);
    }
    let part = match &mut record.content {
        RecordContent::Event(event) => {
            serde_json::to_vec(&std::mem::take(&mut event.visitor)).expect("visitors serialise")
        }
        RecordContent::ContactLink(link) => {
            serde_json::to_vec(&std::mem::take(link)).expect("links serialise")
        }
        RecordContent::Feed(_) | RecordContent::Erasure(_) => unreachable!("they carry no one"),
    };
    record.sealed = Some(seal_part(part, ids, &keys, &bound_to(record)));
    Ok(())
}

/// Seals `part` under `keys` (named by `ids`, in the same order), bound to `bound`: the
/// same box as a record's, for other stores of personal data (the trigger outbox).
pub fn seal_part(mut part: Vec<u8>, ids: Vec<String>, keys: &[Key], bound: &[u8]) -> Sealed {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the system's random source works");
    record_key(keys, &nonce)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(bound),
            &mut part,
        )
        .expect("sealing in memory cannot fail");
    let mut data = nonce.to_vec();
    data.extend_from_slice(&part);
    Sealed {
        keys: ids,
        data: STANDARD.encode(data),
    }
}

/// Opens what [`seal_part`] sealed with the keys `key` gives by id: `None` when one of
/// them is gone.
pub fn open_part<E>(
    sealed: &Sealed,
    mut key: impl FnMut(&str) -> Result<Option<Key>, E>,
    bound: &[u8],
) -> Result<Option<Vec<u8>>, OpenError<E>> {
    if sealed.keys.is_empty() {
        return Err(OpenError::Corrupt("it names no key"));
    }
    let mut keys = Vec::with_capacity(sealed.keys.len());
    for id in &sealed.keys {
        match key(id).map_err(OpenError::Keys)? {
            Some(found) => keys.push(found),
            None => return Ok(None),
        }
    }
    let data = STANDARD
        .decode(&sealed.data)
        .map_err(|_| OpenError::Corrupt("its box is not base64"))?;
    if data.len() < NONCE_LEN {
        return Err(OpenError::Corrupt("its box is too short"));
    }
    let (nonce, sealed_part) = data.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce's length");
    let mut part = sealed_part.to_vec();
    let opened_len = record_key(&keys, &nonce)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(bound),
            &mut part,
        )
        .map_err(|_| OpenError::Corrupt("its keys or what it is bound to do not match"))?
        .len();
    part.truncate(opened_len);
    Ok(Some(part))
}

/// Opens `record`'s sealed part with the keys `key` gives by id (`None` for a key that is
/// gone). A key's error leaves the record as it was, to be opened again.
pub fn open<E>(
    record: &mut StoredRecord,
    mut key: impl FnMut(&str) -> Result<Option<Key>, E>,
) -> Result<Opening, OpenError<E>> {
    let Some(sealed) = &record.sealed else {
        return Ok(Opening::Plain);
    };
    let Some(opened) = open_part(sealed, &mut key, &bound_to(record))? else {
        record.sealed = None;
        return Ok(Opening::Erased);
    };
    let opened = opened.as_slice();
    match &mut record.content {
        RecordContent::Event(event) => {
            event.visitor = serde_json::from_slice::<Visitor>(opened)
                .map_err(|_| OpenError::Corrupt("its visitor does not read"))?;
        }
        RecordContent::ContactLink(link) => {
            *link = serde_json::from_slice::<ContactLink>(opened)
                .map_err(|_| OpenError::Corrupt("its contact link does not read"))?;
        }
        RecordContent::Feed(_) | RecordContent::Erasure(_) => {
            return Err(OpenError::Corrupt(
                "only events and contact links are sealed",
            ));
        }
    }
    record.sealed = None;
    Ok(Opening::Opened)
}

/// What a sealed part is bound to: its record's request hash, receive time and site, so
/// that a box moved to another record does not open there.
fn bound_to(record: &StoredRecord) -> Vec<u8> {
    let site = record.site_id().unwrap_or_default();
    format!("{}/{}/{site}", record.request_hash, record.received_at).into_bytes()
}

fn record_key(keys: &[Key], nonce: &[u8; NONCE_LEN]) -> LessSafeKey {
    let material: Vec<u8> = keys.concat();
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, nonce).extract(&material);
    let okm = prk
        .expand(&[RECORD_KEY_INFO], &CHACHA20_POLY1305)
        .expect("a 32-byte key is within HKDF's output length");
    LessSafeKey::new(UnboundKey::from(okm))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::convert::Infallible;

    use super::*;
    use crate::event::{EventBody, Search, TrackerEvent};

    fn view(visitor: Visitor) -> StoredRecord {
        StoredRecord {
            received_at: 1,
            request_hash: "ab".repeat(16),
            sealed: None,
            content: RecordContent::Event(TrackerEvent {
                site_id: "S".into(),
                datetime: Some(5),
                visitor,
                body: EventBody::SearchRequest {
                    search: Search {
                        query: "p1".into(),
                        found: None,
                    },
                },
                tags: Default::default(),
            }),
        }
    }

    fn person() -> Visitor {
        Visitor {
            sc: Some("cookie-1".into()),
            email: Some("Ann@Example.com".into()),
            name: Some("Ann".into()),
            ..Visitor::default()
        }
    }

    /// Keys by name, one each, made on first use.
    #[derive(Default)]
    struct Ring(HashMap<String, Key>);

    impl Ring {
        fn key_for(&mut self, name: &str) -> Result<(String, Key), Infallible> {
            let n = self.0.len() as u8;
            let key = *self
                .0
                .entry(format!("{name}/1"))
                .or_insert([n + 1; KEY_LEN]);
            Ok((format!("{name}/1"), key))
        }

        fn key(&self, id: &str) -> Result<Option<Key>, Infallible> {
            Ok(self.0.get(id).copied())
        }
    }

    #[test]
    fn a_sealed_record_keeps_nothing_of_the_person_in_the_clear_and_opens_as_it_was() {
        let original = view(person());
        let mut ring = Ring::default();
        let mut record = original.clone();
        seal(&mut record, |name| ring.key_for(name)).unwrap();
        let stored = serde_json::to_string(&record).unwrap();
        for clear in ["cookie-1", "Ann", "example.com"] {
            assert!(!stored.contains(clear), "{clear} in {stored}");
        }
        assert!(stored.contains("p1"), "products stay readable: {stored}");
        assert_eq!(record.sealed.as_ref().unwrap().keys.len(), 2);
        let mut read: StoredRecord = serde_json::from_str(&stored).unwrap();
        assert_eq!(open(&mut read, |id| ring.key(id)).unwrap(), Opening::Opened);
        assert_eq!(read, original);
    }

    #[test]
    fn one_identifiers_key_gone_leaves_the_record_without_its_person() {
        let mut ring = Ring::default();
        let mut record = view(person());
        seal(&mut record, |name| ring.key_for(name)).unwrap();
        let email = key_name("S", &Identifier::Email("ann@example.com".into()));
        ring.0.remove(&format!("{email}/1"));
        assert_eq!(
            open(&mut record, |id| ring.key(id)).unwrap(),
            Opening::Erased
        );
        assert_eq!(record, view(Visitor::default()));
    }

    #[test]
    fn a_tampered_box_or_another_records_hash_does_not_open() {
        let mut ring = Ring::default();
        let mut record = view(person());
        seal(&mut record, |name| ring.key_for(name)).unwrap();
        let mut moved = record.clone();
        moved.request_hash = "cd".repeat(16);
        assert!(matches!(
            open(&mut moved, |id| ring.key(id)),
            Err(OpenError::Corrupt(_))
        ));
        let mut flipped = record.clone();
        let sealed = flipped.sealed.as_mut().unwrap();
        let mut bytes = STANDARD.decode(&sealed.data).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        sealed.data = STANDARD.encode(bytes);
        assert!(matches!(
            open(&mut flipped, |id| ring.key(id)),
            Err(OpenError::Corrupt(_))
        ));
    }

    #[test]
    fn names_are_normalised_and_scoped() {
        let email = |e: &str| key_name("S", &Identifier::Email(e.into()));
        assert_eq!(email("ann@example.com"), email("ann@example.com"));
        assert_ne!(email("ann@example.com"), email("bob@example.com"));
        let id = Identifier::Email("ann@example.com".into());
        assert_ne!(key_name("S", &id), key_name("T", &id));
        assert_ne!(key_name("", &id), key_name("S", &id));
        // The same name from an event's raw `Ann@Example.com` as from the contact's id.
        let mut record = view(person());
        assert!(key_names(&record).contains(&email("ann@example.com")));
        let erased = erased_key_names("S", [&id]);
        assert_eq!(erased.len(), 2);
        let mut ring = Ring::default();
        seal(&mut record, |name| ring.key_for(name)).unwrap();
        assert!(
            erased
                .iter()
                .any(|n| ring.0.contains_key(&format!("{n}/1")))
        );
    }

    #[test]
    fn a_record_naming_no_one_is_not_sealed() {
        let mut record = view(Visitor {
            name: Some("Ann".into()),
            ..Visitor::default()
        });
        let before = record.clone();
        seal(&mut record, |_| -> Result<(String, Key), Infallible> {
            panic!("no key is asked for")
        })
        .unwrap();
        assert_eq!(record, before);
    }
}
