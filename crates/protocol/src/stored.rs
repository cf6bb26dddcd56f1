//! The format of a log record, and of a line of `spoor events export`: the log's own wire
//! format, read by everything downstream of the log.
//!
//! A record is the normalised event (see `spoor_protocol::TrackerEvent`) plus what ingest
//! knew when it arrived: the receive time and a hash of the request bytes. JSON, so the log
//! is readable with ordinary tools and an export line is a record with its position added.

use serde::{Deserialize, Serialize};

use crate::event::{ContactLink, ProductUpdate, TrackerEvent};
use crate::sealing::Sealed;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "FlatRecord")]
pub struct StoredRecord {
    /// When spoor received it, in milliseconds since the epoch.
    pub received_at: i64,
    /// xxh3-128 of the request bytes, hex: what makes a client's retry recognisable.
    pub request_hash: String,
    /// The content's personal part, when the log keeps it sealed (see
    /// [`crate::sealing`]); the content then holds none of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Sealed>,
    #[serde(flatten)]
    pub content: RecordContent,
}

/// Nearly every record is an event, so boxing it to shrink the rare contact link would
/// cost an allocation on every record for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecordContent {
    Event(TrackerEvent),
    /// A plugin's cookie-to-customer link; it names no site.
    ContactLink(ContactLink),
    /// Items of an imported product feed (part of one, for a large feed).
    Feed(FeedItems),
    /// A person of the site was erased by deleting their keys (see [`crate::sealing`]):
    /// what a reader opened before this point may hold them, so it reads the log again.
    Erasure(ErasureMark),
}

/// A record as it reads, its content one of three optional fields: read straight into
/// this rather than through `#[serde(flatten)]`, which buffers the whole record first.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlatRecord {
    received_at: i64,
    request_hash: String,
    #[serde(default)]
    event: Option<TrackerEvent>,
    #[serde(default)]
    contact_link: Option<ContactLink>,
    #[serde(default)]
    feed: Option<FeedItems>,
    #[serde(default)]
    erasure: Option<ErasureMark>,
    #[serde(default)]
    sealed: Option<Sealed>,
}

impl TryFrom<FlatRecord> for StoredRecord {
    type Error = &'static str;

    fn try_from(flat: FlatRecord) -> Result<Self, Self::Error> {
        let content = match (flat.event, flat.contact_link, flat.feed, flat.erasure) {
            (Some(event), None, None, None) => RecordContent::Event(event),
            (None, Some(link), None, None) => RecordContent::ContactLink(link),
            (None, None, Some(feed), None) => RecordContent::Feed(feed),
            (None, None, None, Some(mark)) => RecordContent::Erasure(mark),
            _ => {
                return Err(
                    "a record holds exactly one of `event`, `contactLink`, `feed`, `erasure`",
                );
            }
        };
        Ok(StoredRecord {
            received_at: flat.received_at,
            request_hash: flat.request_hash,
            sealed: flat.sealed,
            content,
        })
    }
}

/// See [`RecordContent::Erasure`]. It says nothing of whom: the keys deleted were their
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErasureMark {
    pub site_id: String,
}

/// Products read from a site's feed, as of the import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedItems {
    pub site_id: String,
    pub items: Vec<ProductUpdate>,
}

impl StoredRecord {
    pub fn site_id(&self) -> Option<&str> {
        match &self.content {
            RecordContent::Event(e) => Some(&e.site_id),
            RecordContent::Feed(feed) => Some(&feed.site_id),
            RecordContent::Erasure(mark) => Some(&mark.site_id),
            RecordContent::ContactLink(_) => None,
        }
    }

    pub fn event(&self) -> Option<&TrackerEvent> {
        match &self.content {
            RecordContent::Event(e) => Some(e),
            RecordContent::ContactLink(_) | RecordContent::Feed(_) | RecordContent::Erasure(_) => {
                None
            }
        }
    }
}

/// One line of an export: the record and where it stood in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedRecord {
    pub position: u64,
    /// A client's retry of an event stored shortly before (see
    /// [`crate::retries::Retries`]): kept in the log, counted once by the state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry: bool,
    #[serde(flatten)]
    pub record: StoredRecord,
}

pub fn hash_hex(hash: u128) -> String {
    format!("{hash:032x}")
}

pub fn parse_hash_hex(text: &str) -> Option<u128> {
    u128::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ContactLink, EventBody, Search, Visitor};

    fn event(body: EventBody) -> RecordContent {
        RecordContent::Event(TrackerEvent {
            site_id: "S".into(),
            datetime: Some(5),
            visitor: Visitor {
                sc: Some("c".into()),
                ..Visitor::default()
            },
            body,
            tags: [("blockId".into(), vec!["b".into()])].into(),
        })
    }

    #[test]
    fn every_kind_of_record_reads_back_as_written() {
        let contents = [
            event(EventBody::CustomerData),
            event(EventBody::CategoryPage {
                category_key: "k".into(),
            }),
            event(EventBody::SearchRequest {
                search: Search {
                    query: "lamp".into(),
                    found: Some(false),
                },
            }),
            RecordContent::ContactLink(ContactLink {
                email: Some("a@b.c".into()),
                ..ContactLink::default()
            }),
            RecordContent::Feed(FeedItems {
                site_id: "S".into(),
                items: Vec::new(),
            }),
        ];
        for content in contents {
            let record = StoredRecord {
                sealed: None,
                received_at: 7,
                request_hash: "ab".into(),
                content,
            };
            let json = serde_json::to_vec(&record).unwrap();
            let read: StoredRecord = serde_json::from_slice(&json).unwrap();
            assert_eq!(read, record);
        }
    }

    #[test]
    fn a_record_missing_its_body_or_with_two_contents_is_refused_by_name() {
        let read = |json: &str| {
            serde_json::from_str::<StoredRecord>(json)
                .unwrap_err()
                .to_string()
        };
        let base = r#""receivedAt": 1, "requestHash": "ab""#;
        assert!(
            read(&format!(
                r#"{{{base}, "event": {{"siteId": "S", "eventName": "ProductPage"}}}}"#
            ))
            .contains("missing field `product`")
        );
        assert!(
            read(&format!(
                r#"{{{base}, "event": {{"siteId": "S", "eventName": "Nope"}}}}"#
            ))
            .contains("unknown variant `Nope`")
        );
        assert!(
            read(&format!(
                r#"{{{base}, "feed": {{"siteId": "S", "items": []}}, "contactLink": {{}}}}"#
            ))
            .contains("exactly one of")
        );
    }
}
