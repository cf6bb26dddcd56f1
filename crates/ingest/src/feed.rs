//! Product feeds: a shop's catalogue file read into feed records of the log.

use spoor_protocol::stored::{FeedItems, RecordContent, StoredRecord, hash_hex};

use crate::error::IngestError;
use crate::ingestor::{Ingestor, Outcome, Step, request_hash};

/// Feed items stored per log record.
pub const FEED_ITEMS_PER_RECORD: usize = 1000;

/// What a feed import did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedSummary {
    /// Items in the feed.
    pub items: u64,
    /// Items stored.
    pub imported: u64,
    /// The same feed was imported within the retry window: nothing stored again.
    pub unchanged_repeat: bool,
    /// Items left out, with why.
    pub rejected: Vec<spoor_protocol::feed::FeedItemError>,
}

impl Ingestor {
    /// Imports a product feed (Google Merchant RSS 2.0 or Atom) for a registered site: the
    /// readable items are stored, in records of at most [`FEED_ITEMS_PER_RECORD`], and the
    /// others reported. The same feed bytes imported again within the retry window are
    /// recognised and not stored twice.
    pub async fn import_feed(
        &self,
        site_id: &str,
        xml: &[u8],
        now_ms: i64,
    ) -> Result<FeedSummary, IngestError> {
        if !self.sites.is_registered(site_id) {
            return Err(IngestError::InvalidSite(format!(
                "site {site_id:?} is not registered"
            )));
        }
        let feed =
            spoor_protocol::feed::parse_feed(xml).map_err(|error| IngestError::Rejected {
                error,
                event: None,
                site_id: None,
            })?;
        let feed_hash = request_hash(xml);
        let steps = feed
            .items
            .chunks(FEED_ITEMS_PER_RECORD)
            .enumerate()
            .map(|(chunk, items)| {
                let record = StoredRecord {
                    sealed: None,
                    received_at: now_ms,
                    request_hash: hash_hex(feed_hash ^ chunk as u128),
                    content: RecordContent::Feed(FeedItems {
                        site_id: site_id.to_string(),
                        items: items.to_vec(),
                    }),
                };
                Step::Append(self.encode(record, 0))
            })
            .collect();
        let mut summary = FeedSummary {
            items: (feed.items.len() + feed.errors.len()) as u64,
            imported: 0,
            unchanged_repeat: false,
            rejected: feed.errors,
        };
        for result in self.commit(steps, now_ms).await {
            match result?.outcome {
                Outcome::Stored(_) => summary.imported = feed.items.len() as u64,
                _ => summary.unchanged_repeat = true,
            }
        }
        Ok(summary)
    }
}
