//! Reading the log out as NDJSON, and what an import reports.

use std::collections::HashSet;
use std::io::Write;

use serde::Serialize;
use spoor_log::{EventLog, Keyring};
use spoor_protocol::sealing::{self, OpenError};

use crate::error::IngestError;
use crate::scan::scan_from;
use spoor_protocol::retries::Retries;
use spoor_protocol::stored::{ExportedRecord, RecordContent, StoredRecord, parse_hash_hex};

/// Which records an export includes.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Only this site's events (contact links, which name no site, are then left out).
    pub site_id: Option<String>,
    /// Only records received at or after this time (ms). Receive time, not event time, so
    /// that repeated exports with `--since` of the last one miss nothing that arrived late.
    pub since_ms: Option<i64>,
}

impl ExportFilter {
    pub fn matches(&self, record: &StoredRecord) -> bool {
        let site_ok = match &self.site_id {
            Some(site) => record.site_id() == Some(site.as_str()),
            None => true,
        };
        site_ok
            && self
                .since_ms
                .is_none_or(|since| record.received_at >= since)
    }
}

/// Writes every matching record as one JSON line; returns how many were written.
/// Sealed records are written opened with `keys` (a person whose keys are gone left
/// out): an export is the shop's own copy, to import elsewhere.
pub fn export(
    log: &dyn EventLog,
    keys: Option<&Keyring>,
    filter: &ExportFilter,
    out: &mut dyn Write,
) -> Result<u64, IngestError> {
    let mut written = 0;
    // Decided over every record, as the state does, whatever the filter keeps.
    let mut retries = log.several_writers().then(Retries::default);
    scan_from(log, 0, |position, mut record| {
        // A mark asks this log's readers to read it again: nothing to another log.
        if let RecordContent::Erasure(_) = record.content {
            return Ok(());
        }
        open_sealed(&mut record, keys)?;
        let retry = (retries.as_mut()).is_some_and(|retries| retries.is_retry(&record));
        if !filter.matches(&record) {
            return Ok(());
        }
        let line = ExportedRecord {
            position,
            retry,
            record,
        };
        serde_json::to_writer(&mut *out, &line)
            .and_then(|()| out.write_all(b"\n").map_err(serde_json::Error::io))
            .map_err(|e| IngestError::Storage(format!("write the export: {e}")))?;
        written += 1;
        Ok(())
    })?;
    Ok(written)
}

/// Opens `record`'s sealed part with `keys`; without keys (or with one gone) the person
/// is left out.
fn open_sealed(record: &mut StoredRecord, keys: Option<&Keyring>) -> Result<(), IngestError> {
    let opened = sealing::open(record, |id| keys.map_or(Ok(None), |keys| keys.key(id)));
    match opened {
        Ok(_) => Ok(()),
        Err(OpenError::Keys(error)) => Err(IngestError::Log(error)),
        Err(OpenError::Corrupt(reason)) => Err(IngestError::Storage(format!(
            "a sealed record does not open: {reason}"
        ))),
    }
}

/// A record's identity across logs: its request hash and receive time together.
pub fn identity(record: &StoredRecord) -> Option<u128> {
    let hash = parse_hash_hex(&record.request_hash)?;
    let mut bytes = hash.to_le_bytes().to_vec();
    bytes.extend_from_slice(&record.received_at.to_le_bytes());
    Some(xxhash_rust::xxh3::xxh3_128(&bytes))
}

/// The identities of every record in the log.
pub fn record_identities(log: &dyn EventLog) -> Result<HashSet<u128>, IngestError> {
    let mut present = HashSet::new();
    scan_from(log, 0, |_, record| {
        present.extend(identity(&record));
        Ok(())
    })?;
    Ok(present)
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    pub imported: u64,
    /// Records this log held already (the same file imported again).
    pub already_present: u64,
    /// Records the import itself held twice (the same record on two lines): stored once.
    pub repeated: u64,
    pub sites_registered: Vec<String>,
    /// Lines that could not be read: (line number, why). At most the first 100.
    pub errors: Vec<(usize, String)>,
    pub error_count: u64,
}

impl ImportSummary {
    pub fn note_error(&mut self, line: usize, why: String) {
        self.error_count += 1;
        if self.errors.len() < 100 {
            self.errors.push((line, why));
        }
    }
}
