//! A contact's right to see and to erase what spoor holds about them.
//!
//! **Export** gives the contact's state and every log record that names one of its
//! identifiers.
//!
//! **Erase** redacts those records in the log itself: each loses its visitor (every
//! identifier and profile field: cookie, customer id, email, phone, name, extra fields)
//! and the hash of its original request bytes, and is rewritten in place at the same
//! length (the JSON padded with spaces). What the events said about products stays: a
//! redacted event still counts as a view of its product or a sale, of nobody. The state is
//! then rebuilt from the log, so the contact is gone from it too, and no export, answer or
//! file in the data directory holds its personal data afterwards.
//!
//! A record names the contact when it carries one of the identifiers the contact holds at
//! the time of the erasure (merged contacts included). An identifier that moved to another
//! contact earlier (a shared computer's cookie) is that contact's now, and its records
//! carrying nothing else of the erased person stay as they are; so do records carrying
//! only a cookie the contact let go (beyond
//! `spoor_engine::contacts::identity::MAX_SHARED_IDS`). Every record with the person's
//! email, phone, customer id or name names them, and is redacted.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use spoor_log::{EventLog, Keyed, Keyring, LogError, Position, Record, fault};
use spoor_protocol::stored::{ErasureMark, ExportedRecord, RecordContent, StoredRecord, hash_hex};
use spoor_protocol::{ContactLink, Visitor};

use spoor_engine::ContactId;
use spoor_engine::contacts::identity::{Identifier, identifiers_of, identifiers_of_link};

use crate::LiveState;
use crate::opening::{self, Unreadable};

/// How long an erasure waits for the rebuilt state.
const REBUILD_WAIT: Duration = Duration::from_secs(120);
const SCAN_STEP: usize = 4096;
/// How long an erasure retries appending its mark.
const MARK_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the state snapshot, which may hold the person, could not be removed: {0}")]
    Snapshot(std::io::Error),
    #[error("log record {0} is not readable")]
    Unreadable(Position),
    #[error("the records are redacted, but the state was not rebuilt within {0:?}; it will be")]
    RebuildTimeout(Duration),
    #[error(
        "the person's keys are deleted, but the mark that tells the other nodes was not \
         written ({0}); nodes running or started within a day drop them from the deleted \
         keys; erase them again now to write it"
    )]
    MarkNotWritten(LogError),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    pub contact_id: u32,
    /// Records rewritten without the person (a log rewritten in place).
    pub records_redacted: u64,
    /// Keys deleted (a log that keeps personal parts sealed): every record sealed with
    /// one of them is unreadable from now on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_deleted: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactExport {
    /// The contact's state as the API shows it.
    pub contact: serde_json::Value,
    pub records: Vec<ExportedRecord>,
}

/// Whether the record carries one of `ids` (events only of `site_id`).
fn names(record: &StoredRecord, site_id: &str, ids: &HashSet<Identifier>) -> bool {
    let carried = match &record.content {
        RecordContent::Event(event) if event.site_id == site_id => identifiers_of(&event.visitor),
        RecordContent::Event(_) | RecordContent::Feed(_) | RecordContent::Erasure(_) => {
            return false;
        }
        RecordContent::ContactLink(link) => identifiers_of_link(link),
    };
    carried.iter().any(|id| ids.contains(id))
}

/// The record without anything that identifies or describes the person.
fn redacted(record: &StoredRecord) -> StoredRecord {
    let mut clean = record.clone();
    clean.request_hash = "0".repeat(record.request_hash.len());
    match &mut clean.content {
        RecordContent::Event(event) => event.visitor = Visitor::default(),
        RecordContent::ContactLink(link) => *link = ContactLink::default(),
        RecordContent::Feed(_) | RecordContent::Erasure(_) => {}
    }
    clean
}

/// The redacted record's JSON, padded with spaces to `len` bytes.
fn padded(record: &StoredRecord, len: usize, position: Position) -> Result<Vec<u8>, LogError> {
    let mut bytes = serde_json::to_vec(record).expect("records serialise");
    if bytes.len() > len {
        return Err(LogError::CannotRedact {
            position,
            reason: "the redacted record is longer than the original".into(),
        });
    }
    bytes.resize(len, b' ');
    Ok(bytes)
}

/// Calls `visit` with every record of the log that names one of `ids`.
fn each_naming(
    log: &dyn EventLog,
    keys: Option<&Keyring>,
    site_id: &str,
    ids: &HashSet<Identifier>,
    mut visit: impl FnMut(Position, usize, StoredRecord) -> Result<(), PrivacyError>,
) -> Result<(), PrivacyError> {
    let mut reader = log.reader(0)?;
    loop {
        let records = reader.next_batch(SCAN_STEP, Duration::ZERO)?;
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            let stored = match opening::decode(&record.payload, keys) {
                Ok(stored) => stored,
                Err(Unreadable::Keys(error)) => return Err(error.into()),
                Err(Unreadable::Record(_)) => {
                    return Err(PrivacyError::Unreadable(record.position));
                }
            };
            if names(&stored, site_id, ids) {
                visit(record.position, record.payload.len(), stored)?;
            }
        }
    }
}

/// The contact `who` names, as the API shows it.
struct Found {
    id: ContactId,
    json: serde_json::Value,
    /// Every identifier it holds.
    ids: HashSet<Identifier>,
}

fn find(live: &LiveState, site_id: &str, who: &Identifier) -> Option<Found> {
    let engine = live.read();
    let site = engine.site(site_id)?;
    let contact = site.contact(who).filter(|c| !live.hides(site_id, c.id))?;
    Some(Found {
        id: contact.id,
        json: site.contact_json(contact),
        ids: contact.identifiers.all().into_iter().collect(),
    })
}

/// Everything held about the contact `who` names; `None` when it names no one.
pub fn export(
    log: &dyn EventLog,
    live: &LiveState,
    site_id: &str,
    who: &Identifier,
) -> Result<Option<ContactExport>, PrivacyError> {
    let Some(found) = find(live, site_id, who) else {
        return Ok(None);
    };
    let mut records = Vec::new();
    each_naming(
        log,
        live.keys(),
        site_id,
        &found.ids,
        |position, _, record| {
            records.push(ExportedRecord {
                position,
                retry: false,
                record,
            });
            Ok(())
        },
    )?;
    Ok(Some(ContactExport {
        contact: found.json,
        records,
    }))
}

/// Erases the contact `who` names: its records redacted in the log, then the state
/// rebuilt without it. `None` when it names no one.
pub fn erase(
    log: &dyn EventLog,
    live: &LiveState,
    site_id: &str,
    who: &Identifier,
) -> Result<Option<Erasure>, PrivacyError> {
    if !log.can_redact() && live.keys().is_none() {
        return Err(PrivacyError::Log(LogError::Unsupported(
            "erasure (this log's records cannot be rewritten in place, and it keeps no keys \
             to erase a person's records by)",
        )));
    }
    let Some(Found { id, ids, .. }) = find(live, site_id, who) else {
        // The person may be gone from this node only: an earlier erasure's mark, owed,
        // is what tells the others.
        if let Some(debt) = live.mark_owed(site_id).filter(|_| !log.can_redact()) {
            append_mark(log, site_id).map_err(PrivacyError::MarkNotWritten)?;
            live.mark_paid(site_id, debt);
        }
        return Ok(None);
    };
    if let Some(keys) = live.keys().filter(|_| !log.can_redact()) {
        return shred(log, live, keys, site_id, id, &ids).map(Some);
    }
    let mut replacements = Vec::new();
    each_naming(log, None, site_id, &ids, |position, len, record| {
        let payload = padded(&redacted(&record), len, position)?;
        replacements.push(Record { position, payload });
        Ok(())
    })?;
    let hold = live.erasing().map_err(PrivacyError::Snapshot)?;
    fault::crash_point("erasure_snapshot_removed");
    let redacted = log.redact(&replacements);
    fault::crash_point("erasure_redacted");
    let ticket = hold.finish();
    redacted?;
    if !live.wait_rebuilt(ticket, REBUILD_WAIT) {
        return Err(PrivacyError::RebuildTimeout(REBUILD_WAIT));
    }
    fault::crash_point("erasure_rebuilt");
    tracing::info!(
        site_id,
        contact_id = id,
        records = replacements.len(),
        "contact erased"
    );
    Ok(Some(Erasure {
        contact_id: id,
        records_redacted: replacements.len() as u64,
        keys_deleted: None,
    }))
}

/// Erases a person from a log that keeps personal parts sealed: the keys of each of
/// their identifiers deleted, then a mark appended that has every other node read the log
/// again (the mark says nothing of whom), then this node's state rebuilt.
fn shred(
    log: &dyn EventLog,
    live: &LiveState,
    keys: &Keyring,
    site_id: &str,
    id: ContactId,
    ids: &HashSet<Identifier>,
) -> Result<Erasure, PrivacyError> {
    let names = spoor_protocol::sealing::erased_key_names(site_id, ids);
    let hold = live.erasing().map_err(PrivacyError::Snapshot)?;
    // Owed from before the deletion: one that fails midway may have stored tombstones.
    // Should it fail, the hold's end asks for a rebuild, and the mark stays owed.
    let earlier_debt = live.mark_owed(site_id).is_some();
    let debt = live.owe_mark(site_id);
    let deleted = keys.delete(&names)?;
    if deleted == 0 && !earlier_debt {
        live.mark_paid(site_id, debt);
        // Deleted before (an erasure asked again): the state is read again, without a
        // mark that would have every node do the same for nothing.
        let ticket = hold.finish();
        if !live.wait_rebuilt(ticket, REBUILD_WAIT) {
            return Err(PrivacyError::RebuildTimeout(REBUILD_WAIT));
        }
        return Ok(Erasure {
            contact_id: id,
            records_redacted: 0,
            keys_deleted: Some(0),
        });
    }
    let position = match append_mark(log, site_id) {
        Ok(position) => position,
        Err(error) => {
            // The state keeps the person, so that the erasure asked again finds them
            // and writes the mark the other nodes need (still owed).
            hold.abandon();
            return Err(PrivacyError::MarkNotWritten(error));
        }
    };
    live.mark_paid(site_id, debt);
    live.mark_answered(position);
    let ticket = hold.finish();
    if !live.wait_rebuilt(ticket, REBUILD_WAIT) {
        return Err(PrivacyError::RebuildTimeout(REBUILD_WAIT));
    }
    tracing::info!(site_id, contact_id = id, keys = deleted, "contact erased");
    Ok(Erasure {
        contact_id: id,
        records_redacted: 0,
        keys_deleted: Some(deleted as u64),
    })
}

/// Appends the erasure mark of `site_id`, retrying a log out of reach for a while: the
/// keys are already deleted, and the other nodes learn of it only from the mark.
fn append_mark(log: &dyn EventLog, site_id: &str) -> Result<Position, LogError> {
    let mark = StoredRecord {
        received_at: now_ms(),
        request_hash: mark_hash(),
        sealed: None,
        content: RecordContent::Erasure(ErasureMark {
            site_id: site_id.to_string(),
        }),
    };
    let payload = serde_json::to_vec(&mark).expect("records serialise");
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| LogError::Unavailable("no runtime to append the erasure mark on".into()))?;
    let deadline = std::time::Instant::now() + MARK_RETRY;
    loop {
        match runtime.block_on(log.append_keyed(vec![Keyed {
            key: Some(site_id.to_string()),
            payload: payload.clone(),
        }])) {
            Ok(position) => return Ok(position),
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::warn!(%error, "appending an erasure mark failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => return Err(error),
        }
    }
}

/// A request hash no client's request has: the mark is never taken for a retry.
fn mark_hash() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    hash_hex(u128::from_le_bytes(bytes))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
