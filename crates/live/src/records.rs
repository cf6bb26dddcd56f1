//! The log's records in order, decoded, for what replays the log apart from the state
//! (a block's backtest): read a step at a time, never all at once.

use std::time::Duration;

use std::sync::Arc;

use spoor_log::{EventLog, Keyring, LogError, LogReader, Position};
use spoor_protocol::stored::StoredRecord;

/// Records read from the log at a time.
const STEP: usize = 4096;

/// Every record of the log from its start to its end when asked for, in order (records
/// appended meanwhile are not read: a busy log's end would keep moving); one that cannot
/// be decoded is skipped, as the state's replay skips it. A read that fails ends the
/// records and is kept in [`Records::failed`].
pub struct Records {
    reader: Option<Box<dyn LogReader>>,
    keys: Option<Arc<Keyring>>,
    end: Position,
    read: std::vec::IntoIter<StoredRecord>,
    pub failed: Option<LogError>,
}

/// Sealed records are opened with `keys` (see `crate::opening`).
pub fn records(log: &dyn EventLog, keys: Option<Arc<Keyring>>) -> Records {
    let (reader, failed) = match log.reader(0) {
        Ok(reader) => (Some(reader), None),
        Err(error) => (None, Some(error)),
    };
    Records {
        reader,
        keys,
        end: log.end(),
        read: Vec::new().into_iter(),
        failed,
    }
}

impl Iterator for Records {
    type Item = StoredRecord;

    fn next(&mut self) -> Option<StoredRecord> {
        loop {
            if let Some(record) = self.read.next() {
                return Some(record);
            }
            let reader = self.reader.as_mut()?;
            if reader.position() >= self.end {
                return None;
            }
            let chunk = match reader.next_batch(STEP, Duration::ZERO) {
                Ok(chunk) => chunk,
                Err(error) => {
                    self.failed = Some(error);
                    return None;
                }
            };
            chunk.last()?;
            let mut decoded = Vec::with_capacity(chunk.len());
            for record in chunk.iter().filter(|r| r.position < self.end) {
                match crate::opening::decode(&record.payload, self.keys.as_deref()) {
                    Ok(record) => decoded.push(record),
                    Err(crate::opening::Unreadable::Record(_)) => {}
                    Err(crate::opening::Unreadable::Keys(error)) => {
                        self.failed = Some(error);
                        return None;
                    }
                }
            }
            self.read = decoded.into_iter();
        }
    }
}
