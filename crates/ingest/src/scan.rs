//! Reading the log in order from a position, a chunk at a time.

use std::time::Duration;

use spoor_log::{EventLog, Position};
use spoor_protocol::stored::StoredRecord;

use crate::error::IngestError;

/// Records read per step when scanning the log.
const SCAN_CHUNK: usize = 4096;

/// Calls `visit` with every record at or after `from`, with its position.
pub fn scan_from(
    log: &dyn EventLog,
    from: Position,
    visit: impl FnMut(Position, StoredRecord) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    scan_as(log, from, visit)
}

/// Calls `visit` with every record at or after `from`, decoded as `T`: a whole
/// [`StoredRecord`], or a view of the few fields a scan needs.
pub(crate) fn scan_as<T: serde::de::DeserializeOwned>(
    log: &dyn EventLog,
    from: Position,
    mut visit: impl FnMut(Position, T) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let mut reader = log.reader(from)?;
    loop {
        let records = reader.next_batch(SCAN_CHUNK, Duration::ZERO)?;
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            let decoded = serde_json::from_slice(&record.payload).map_err(|e| {
                IngestError::Storage(format!(
                    "log record {} is not readable: {e}",
                    record.position
                ))
            })?;
            visit(record.position, decoded)?;
        }
    }
}
