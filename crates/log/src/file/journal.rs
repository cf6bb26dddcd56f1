//! The redaction journal: the rewrites of one redaction, made durable before the first of
//! them touches a segment, and redone when the log next opens if the process stopped
//! before they were all synced.
//!
//! A rewrite cut short by power loss leaves a record that fails its checksum; read as it
//! is, the last segment's would pass for a torn tail (and every record after it would be
//! cleared), an older segment's for damage (and the log would not open). The journal
//! holds each rewrite whole, so the next open writes them all again before it reads a
//! segment: a rewrite is never seen half done. The journal holds the records as they are
//! after the redaction, never what was erased.
//!
//! ```text
//! | "SPOORRJ1" | count: u32 LE | count × (segment base: u64 LE | offset: u64 LE |
//!   length: u32 LE | the encoded record) | crc32 of all before: u32 LE |
//! ```
//! It is written to a temporary file, synced and renamed, so it exists whole or not at
//! all; a temporary one left by a crash is removed with the log's other leftovers (no
//! rewrite had begun).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::record::HEADER_BYTES;
use crate::{LogError, Position};

use super::segment::{segment_path, sync_dir};

const JOURNAL: &str = "redactions.journal";
const MAGIC: &[u8; 8] = b"SPOORRJ1";

/// One record's new bytes (header and payload, as the segment holds them) and where
/// they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub segment_base: Position,
    pub offset: u64,
    pub record: Vec<u8>,
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join(JOURNAL)
}

fn encode(rewrites: &[Rewrite]) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&(rewrites.len() as u32).to_le_bytes());
    for rewrite in rewrites {
        bytes.extend_from_slice(&rewrite.segment_base.to_le_bytes());
        bytes.extend_from_slice(&rewrite.offset.to_le_bytes());
        bytes.extend_from_slice(&(rewrite.record.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&rewrite.record);
    }
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<Vec<Rewrite>> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_le_bytes() != crc || !body.starts_with(MAGIC) {
        return None;
    }
    let mut rest = &body[MAGIC.len()..];
    let mut take = |n: usize| -> Option<&[u8]> {
        let (taken, after) = rest.split_at_checked(n)?;
        rest = after;
        Some(taken)
    };
    let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let count = u32_of(take(4)?);
    let mut rewrites = Vec::new();
    for _ in 0..count {
        let segment_base = u64_of(take(8)?);
        let offset = u64_of(take(8)?);
        let len = u32_of(take(4)?) as usize;
        let record = take(len)?.to_vec();
        rewrites.push(Rewrite {
            segment_base,
            offset,
            record,
        });
    }
    rest.is_empty().then_some(rewrites)
}

/// Makes `rewrites` durable as the journal of `dir`.
pub fn write(dir: &Path, rewrites: &[Rewrite]) -> Result<(), LogError> {
    let path = journal_path(dir);
    let tmp = path.with_extension("journal.tmp");
    let bytes = encode(rewrites);
    let written = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    };
    if let Err(error) = written() {
        // A full disk: the part written would hold space until the next start.
        let _ = fs::remove_file(&tmp);
        return Err(LogError::io(format!("write {}", path.display()), error));
    }
    sync_dir(dir)
}

/// Whether `dir` has a journal: a redaction under way, or cut short.
pub fn exists(dir: &Path) -> bool {
    journal_path(dir).exists()
}

/// Writes each rewrite into its segment and syncs each segment written. A segment no
/// longer there (deleted since, as old outbox segments are) needs none.
pub fn apply(dir: &Path, rewrites: &[Rewrite]) -> Result<(), LogError> {
    let mut by_segment: BTreeMap<Position, Vec<&Rewrite>> = BTreeMap::new();
    for rewrite in rewrites {
        by_segment
            .entry(rewrite.segment_base)
            .or_default()
            .push(rewrite);
    }
    for (base, rewrites) in by_segment {
        let path = segment_path(dir, base);
        let context = || format!("redact in {}", path.display());
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(LogError::io(context(), e)),
        };
        for rewrite in rewrites {
            if !holds_the_same_record(&file, rewrite) {
                // Not the record the journal names (segments restored from a backup
                // beside a newer journal, say): rewriting would damage it.
                tracing::warn!(
                    segment = %path.display(),
                    offset = rewrite.offset,
                    "a redaction's rewrite does not match the record there; left as is"
                );
                continue;
            }
            file.write_all_at(&rewrite.record, rewrite.offset)
                .map_err(|e| LogError::io(context(), e))?;
        }
        file.sync_data().map_err(|e| LogError::io(context(), e))?;
    }
    Ok(())
}

/// Whether the record at the rewrite's offset has the rewrite's length and position (the
/// header fields a rewrite keeps; a rewrite torn anywhere leaves them as they were, since
/// they are the same bytes before and after).
fn holds_the_same_record(file: &File, rewrite: &Rewrite) -> bool {
    let mut header = [0u8; HEADER_BYTES];
    if file.read_exact_at(&mut header, rewrite.offset).is_err() {
        return false;
    }
    let same = |range: std::ops::Range<usize>| {
        rewrite
            .record
            .get(range.clone())
            .is_some_and(|want| header[range] == *want)
    };
    same(0..4) && same(8..16)
}

/// Removes the journal once its rewrites are synced.
pub fn clear(dir: &Path) -> Result<(), LogError> {
    let path = journal_path(dir);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io(format!("remove {}", path.display()), e)),
    }
}

/// Redoes the rewrites of a journal left by a process that stopped midway, then clears
/// it; returns how many were redone. To run before any segment is read.
pub fn redo(dir: &Path) -> Result<usize, LogError> {
    let path = journal_path(dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(LogError::io(format!("read {}", path.display()), e)),
    };
    // Renamed into place only once whole and synced: a bad one was damaged on disk, and
    // the records it was to rewrite may be torn.
    let rewrites = decode(&bytes).ok_or_else(|| LogError::Corrupt {
        segment: path.display().to_string(),
        offset: 0,
        reason: "the redaction journal is damaged, so records it was rewriting may be torn: \
                 restore the log directory from a backup"
            .into(),
    })?;
    apply(dir, &rewrites)?;
    clear(dir)?;
    Ok(rewrites.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Rewrite> {
        vec![
            Rewrite {
                segment_base: 0,
                offset: 16,
                record: b"first".to_vec(),
            },
            Rewrite {
                segment_base: 1024,
                offset: 4096,
                record: Vec::new(),
            },
        ]
    }

    #[test]
    fn a_journal_decodes_to_what_was_written_and_any_change_is_refused() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes), Some(sample()));
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= 0x40;
            assert_eq!(decode(&changed), None, "byte {at} changed");
        }
        for len in 0..bytes.len() {
            assert_eq!(decode(&bytes[..len]), None, "cut at {len}");
        }
    }

    #[test]
    fn a_damaged_journal_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample()).unwrap();
        let path = journal_path(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(redo(dir.path()), Err(LogError::Corrupt { .. })));
        assert!(path.exists(), "kept for the operator");
    }
}
