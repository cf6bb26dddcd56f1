//! The durable event log: the source of truth everything else is rebuilt from.
//!
//! [`EventLog`] is the interface the rest of spoor sees: append a batch of records durably
//! and learn their positions; read records in order from a position. [`FileLog`] is the
//! embedded implementation (segment files, checksummed records, group commit). A
//! Kafka-protocol log for multi-node deployments implements the same trait.

mod file;
mod handoff;
pub mod record;
pub mod relay;
mod stepped;

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;

pub use file::{CommitPace, FileLog, FileLogConfig, GroupCommitObserver};
pub use handoff::Handoff;
pub use stepped::SteppedFile;

/// The bytes of a small file (settings, registries), or `None` when it does not exist yet.
pub fn read_if_exists(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content:
/// settings, registries and the duplicate index's snapshot (written a step at a time, see
/// [`SteppedFile`]). The log itself never rewrites a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let written = SteppedFile::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.finish()
    });
    if let Err(error) = written {
        // A full disk leaves the file as it was, and not the part of a new one.
        let _ = std::fs::remove_file(&tmp);
        return Err(error);
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// A record's place in the log: 0 for the first record, counting up without gaps.
pub type Position = u64;

/// The largest record the log accepts.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub position: Position,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log I/O failed: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "log segment {segment} is damaged at byte {offset} ({reason}); it is not the last \
         segment, so this is not a torn write from a crash: restore the file from a backup"
    )]
    Corrupt {
        segment: String,
        offset: u64,
        reason: String,
    },
    #[error("record of {0} bytes is larger than the log's limit of {MAX_RECORD_BYTES}")]
    RecordTooLarge(usize),
    #[error("the log stopped accepting writes after an earlier write or fsync failed; restart")]
    Failed,
    #[error(
        "the log cannot start its next segment ({0}); appends are refused until it can, and \
         resume by themselves once it can (on a full disk: once space is freed)"
    )]
    Stalled(String),
    #[error(
        "another spoor process is writing to {0} (a running server?): stop it first, or send \
         the data through that server (`--url`)"
    )]
    Locked(String),
    #[error(
        "a redaction of the log is under way, or was cut short by a crash \
         (log/redactions.journal): a record may be half rewritten; retry in a moment, or start \
         the server once to finish it"
    )]
    RedactionUnfinished,
    #[error("this log does not support {0}")]
    Unsupported(&'static str),
    #[error("record {position} cannot be redacted: {reason}")]
    CannotRedact { position: Position, reason: String },
    #[error("the log is closed")]
    Closed,
    #[error("the log was opened read-only")]
    ReadOnly,
}

impl LogError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LogError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type AppendFuture = Pin<Box<dyn Future<Output = Result<Position, LogError>> + Send>>;

/// An ordered, durable sequence of opaque records.
pub trait EventLog: Send + Sync + 'static {
    /// Appends `records` in order. The future resolves, to the position of the first record,
    /// only once all of them are durable: an acknowledged append survives a crash.
    fn append(&self, records: Vec<Vec<u8>>) -> AppendFuture;

    /// Up to `max` records at or after `from`, in order; empty at the end of the log.
    fn read(&self, from: Position, max: usize) -> Result<Vec<Record>, LogError>;

    /// The position the next appended record will get: the count of durable records.
    fn end(&self) -> Position;

    /// Blocks until the log holds a record at `position` (its end is beyond it) or
    /// `timeout` passes; returns the end. For consumers that follow the log.
    fn wait_beyond(&self, position: Position, timeout: std::time::Duration) -> Position;

    /// Bytes the log takes in storage, when the implementation knows.
    fn size_bytes(&self) -> Option<u64> {
        None
    }

    /// Whether the log accepts appends now, and if not, why: for good after a failed
    /// write or fsync ([`LogError::Failed`]), or until it can write again
    /// ([`LogError::Stalled`], a full disk).
    fn health(&self) -> Result<(), LogError> {
        Ok(())
    }

    /// Replaces the record at each replacement's position with its payload, of exactly
    /// the same length, durably and, across a crash, all or none of them: how personal
    /// data is erased from the log without moving anything.
    fn redact(&self, replacements: &[Record]) -> Result<(), LogError> {
        let _ = replacements;
        Err(LogError::Unsupported("redact"))
    }
}

/// Bytes free for an unprivileged writer on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated, and `stat` is read only after statvfs(3) filled it.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Crash points on request, for the tests of what a crash at each step of a redaction or
/// an erasure leaves: in builds with the `fault-injection` feature (the test builds),
/// when spoor runs with `SPOOR_FAULT_INJECTION=1` and `SPOOR_CRASH_AT` names the point,
/// the process kills itself (SIGKILL) there.
pub mod fault {
    /// Whether the process is to crash at `point`.
    pub fn armed(point: &str) -> bool {
        cfg!(feature = "fault-injection")
            && std::env::var_os("SPOOR_FAULT_INJECTION").is_some_and(|v| v == "1")
            && std::env::var_os("SPOOR_CRASH_AT").is_some_and(|v| v == point)
    }

    /// Kills the process at `point` if a test asked for it.
    pub fn crash_point(point: &str) {
        if armed(point) {
            tracing::warn!(point, "crashing here, as the test asked");
            // SAFETY: kill(2) with the process's own id touches no memory.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}
