//! The format of a log record, and of a line of `spoor events export`: the log's own wire
//! format, read by everything downstream of the log.
//!
//! A record is the normalised event (see `spoor_protocol::TrackerEvent`) plus what ingest
//! knew when it arrived: the receive time and a hash of the request bytes. JSON, so the log
//! is readable with ordinary tools and an export line is a record with its position added.

use serde::{Deserialize, Serialize};

use crate::event::{ContactLink, ProductUpdate, TrackerEvent};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRecord {
    /// When spoor received it, in milliseconds since the epoch.
    pub received_at: i64,
    /// xxh3-128 of the request bytes, hex: what makes a client's retry recognisable.
    pub request_hash: String,
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
            RecordContent::ContactLink(_) => None,
        }
    }

    pub fn event(&self) -> Option<&TrackerEvent> {
        match &self.content {
            RecordContent::Event(e) => Some(e),
            RecordContent::ContactLink(_) | RecordContent::Feed(_) => None,
        }
    }
}

/// One line of an export: the record and where it stood in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedRecord {
    pub position: u64,
    #[serde(flatten)]
    pub record: StoredRecord,
}

pub fn hash_hex(hash: u128) -> String {
    format!("{hash:032x}")
}

pub fn parse_hash_hex(text: &str) -> Option<u128> {
    u128::from_str_radix(text, 16).ok()
}
