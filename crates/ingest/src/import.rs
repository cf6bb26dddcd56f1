//! Offline import: records of `spoor events export` loaded into a log, each once.

use spoor_protocol::stored;

use crate::error::IngestError;
use crate::export;
use crate::ingestor::{Accepted, Ingestor, Outcome, Step};
use crate::sites::DirectoryError;

impl Ingestor {
    /// Loads exported records (NDJSON lines of `spoor events export`), skipping any that
    /// this log holds already, so importing the same file twice stores it once. Sites the
    /// records name are registered when missing.
    pub async fn import(
        &self,
        lines: &[&str],
        now_ms: i64,
    ) -> Result<export::ImportSummary, IngestError> {
        let mut summary = export::ImportSummary::default();
        let present = export::record_identities(&*self.log)?;
        let mut steps = Vec::new();
        for (number, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record = match serde_json::from_str::<stored::ExportedRecord>(line) {
                Ok(exported) => exported.record,
                Err(e) => {
                    summary.note_error(number + 1, format!("not an exported record: {e}"));
                    continue;
                }
            };
            // A mark asks the readers of its own log to read it again; in another log it
            // names nothing.
            if let stored::RecordContent::Erasure(_) = record.content {
                summary.note_error(number + 1, "an erasure mark is not imported".into());
                continue;
            }
            // An export is written opened; a sealed part given here would be sealed with
            // keys this log never made (or none), out of reach of any erasure.
            if record.sealed.is_some() {
                summary.note_error(
                    number + 1,
                    "sealed: an exported record is opened; a sealed part is not imported".into(),
                );
                continue;
            }
            let Some(identity) = export::identity(&record) else {
                summary.note_error(number + 1, "requestHash: expected 32 hex digits".into());
                continue;
            };
            if present.contains(&identity) {
                summary.already_present += 1;
                continue;
            }
            if let Some(site) = record.site_id()
                && (self.sites.register_imported(site, now_ms)).map_err(|e| match e {
                    DirectoryError::Invalid(message) => IngestError::InvalidSite(message),
                    DirectoryError::Storage(message) => IngestError::Storage(message),
                })?
            {
                summary.sites_registered.push(site.to_string());
            }
            let mut prepared = self.encode(record, line.len());
            // Claim by identity rather than request bytes: an import keeps every record
            // that is not the same record (a retry of one request is two records).
            prepared.keys.request = identity;
            steps.push(Step::Append(prepared));
        }
        for result in self.commit(steps, now_ms).await {
            match result? {
                Accepted {
                    outcome: Outcome::Stored(_),
                    ..
                } => summary.imported += 1,
                _ => summary.repeated += 1,
            }
        }
        Ok(summary)
    }
}
