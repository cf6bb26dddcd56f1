//! The duplicate index across restarts: rebuilt from the log at start, or loaded from
//! its snapshot and brought up to date from the log after it, and saved while serving.

use std::sync::Arc;
use std::sync::PoisonError;

use spoor_log::{EventLog, Position};

use spoor_protocol::stored;

use crate::dedup::{DedupIndex, Keys};
use crate::error::IngestError;
use crate::ingestor::Ingestor;
use crate::scan::scan_as;
use crate::sites::SiteDirectory;

impl Ingestor {
    /// Builds the ingestor over an opened log, rebuilding the duplicate index from it.
    pub fn open(
        log: Arc<dyn EventLog>,
        sites: Arc<dyn SiteDirectory>,
        now_ms: i64,
    ) -> Result<Self, IngestError> {
        let dedup = DedupIndex::default();
        // The index keeps at most two windows of keys: on a log that can say where they
        // begin (a topic years long, on a new ingest node), only those are read.
        let since = now_ms.saturating_sub(2 * crate::dedup::RETRY_WINDOW_MS);
        let from = match log.position_at(since) {
            Ok(position) => position.unwrap_or(0),
            Err(error) => {
                tracing::warn!(%error, "the log did not say where the last two days begin; reading it all for the duplicate index");
                0
            }
        };
        index_records(&dedup, &*log, from, now_ms)?;
        Ok(Ingestor::with_index(log, sites, dedup, 0))
    }

    /// An ingestor for a node that takes no events (an engine node): nothing read from
    /// the log for its duplicate index.
    pub fn taking_no_events(log: Arc<dyn EventLog>, sites: Arc<dyn SiteDirectory>) -> Self {
        Ingestor::with_index(log, sites, DedupIndex::default(), 0)
    }

    /// Like [`Ingestor::open`], but starting from the index saved at `snapshot` (by
    /// [`Ingestor::save_index`], at a clean stop or while running) and reading only the
    /// log after it. A snapshot that is missing, unreadable or ahead of the log is not
    /// used.
    pub fn open_with_snapshot(
        log: Arc<dyn EventLog>,
        sites: Arc<dyn SiteDirectory>,
        now_ms: i64,
        snapshot: &std::path::Path,
    ) -> Result<Self, IngestError> {
        let loaded = std::fs::read(snapshot)
            .ok()
            .and_then(|bytes| DedupIndex::from_bytes(&bytes))
            .filter(|(_, position)| *position <= log.end());
        let Some((dedup, position)) = loaded else {
            return Self::open(log, sites, now_ms);
        };
        index_records(&dedup, &*log, position, now_ms)?;
        tracing::info!(
            position,
            replayed = log.end() - position,
            "duplicate index loaded from its snapshot"
        );
        Ok(Ingestor::with_index(log, sites, dedup, position))
    }

    /// Saves the duplicate index for [`Ingestor::open_with_snapshot`], at any time: the
    /// snapshot covers the log up to the first append whose claims are still unsettled,
    /// and a start reads the log from there (keys it holds already are harmless). Saved
    /// while serving, it bounds how much of the log a start after a crash has to read.
    pub fn save_index(&self, snapshot: &std::path::Path) -> std::io::Result<()> {
        let mut saved_at = self
            .index_saved_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.save_index_locked(snapshot, &mut saved_at)
    }

    /// Saves the index when the log has grown by `every` records since the last save;
    /// returns whether it did.
    pub fn save_index_every(
        &self,
        snapshot: &std::path::Path,
        every: u64,
    ) -> std::io::Result<bool> {
        let mut saved_at = self
            .index_saved_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.log.end() < *saved_at + every {
            return Ok(false);
        }
        self.save_index_locked(snapshot, &mut saved_at)?;
        Ok(true)
    }

    fn save_index_locked(
        &self,
        snapshot: &std::path::Path,
        saved_at: &mut Position,
    ) -> std::io::Result<()> {
        let position = self.unsettled.settled_end(&*self.log);
        let bytes = self.dedup.to_bytes(position);
        spoor_log::write_atomically(snapshot, &bytes)?;
        *saved_at = position;
        Ok(())
    }
}

/// Adds to the index every record of the log from `from` on.
pub(crate) fn index_records(
    dedup: &DedupIndex,
    log: &dyn EventLog,
    from: Position,
    now_ms: i64,
) -> Result<(), IngestError> {
    scan_as(log, from, |_, view: KeysView| {
        dedup.insert_durable(view.keys()?, view.received_at, now_ms);
        Ok(())
    })
}

/// Just what the duplicate index needs of a stored record: rebuilding the index at start
/// reads every record, and skipping the rest of each is about twice as fast.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeysView {
    received_at: i64,
    request_hash: String,
}

impl KeysView {
    fn keys(&self) -> Result<Keys, IngestError> {
        let request = stored::parse_hash_hex(&self.request_hash).ok_or_else(|| {
            IngestError::Storage(format!(
                "record has a bad requestHash {:?}",
                self.request_hash
            ))
        })?;
        Ok(Keys { request })
    }
}
