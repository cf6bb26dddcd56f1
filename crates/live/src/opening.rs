//! A log record's bytes to a record, its sealed part opened with the log's keys (see
//! `spoor_protocol::sealing`): what every reader of the log decodes records with.

use spoor_log::{Keyring, LogError};
use spoor_protocol::sealing::{self, OpenError, Opening};
use spoor_protocol::stored::StoredRecord;

/// Why a record was not read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    /// Its bytes are not a record, or its sealed part does not open: it never will.
    #[error("{0}")]
    Record(String),
    /// The keys could not be reached: it may be read later.
    #[error(transparent)]
    Keys(#[from] LogError),
}

/// The record `payload` holds, its sealed part opened: the person it named left out
/// when one of its keys is gone, or when there are no keys to open it with.
pub fn decode(payload: &[u8], keys: Option<&Keyring>) -> Result<StoredRecord, Unreadable> {
    let mut record: StoredRecord =
        serde_json::from_slice(payload).map_err(|e| Unreadable::Record(e.to_string()))?;
    open(&mut record, keys)?;
    Ok(record)
}

/// Opens `record`'s sealed part in place (see [`decode`]).
pub fn open(record: &mut StoredRecord, keys: Option<&Keyring>) -> Result<Opening, Unreadable> {
    sealing::open(record, |id| keys.map_or(Ok(None), |keys| keys.key(id))).map_err(|error| {
        match error {
            OpenError::Keys(error) => Unreadable::Keys(error),
            OpenError::Corrupt(reason) => Unreadable::Record(reason.to_string()),
        }
    })
}
