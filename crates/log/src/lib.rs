//! The durable event log: the source of truth everything else is rebuilt from.
//!
//! [`EventLog`] is the interface the rest of spoor sees: append a batch of records durably
//! and learn their positions; follow the records in order from a position with a
//! [`LogReader`]. Which log runs is chosen by a [`LogSpec`] and opened with [`open`] or
//! [`open_read_only`]; nothing outside this crate names an implementation. [`FileLog`] is
//! the embedded one (segment files, checksummed records, group commit).

mod file;
mod handoff;
#[cfg(feature = "kafka")]
mod kafka;
pub mod keys;
mod memory_table;
pub mod record;
mod relay;
mod stepped;

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use file::{CommitObserver, FileLog, FileLogConfig};
pub use handoff::Handoff;
pub use keys::Keyring;
pub use memory_table::MemoryTable;
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
    #[error("the log cannot be reached ({0}); appends are refused until it can")]
    Unavailable(String),
    #[error("the log's settings are not usable: {0}")]
    Config(String),
    #[error("records the log should hold are gone: {0}")]
    Missing(String),
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

/// Which log to open, and how: chosen once, where spoor starts, and handed to [`open`].
#[derive(Debug, Clone)]
pub enum LogSpec {
    /// The embedded log: segment files in a directory of this machine.
    File { dir: PathBuf, config: FileLogConfig },
    /// A topic on Kafka-protocol brokers (one spoor node writes to it for now).
    Kafka(KafkaConfig),
}

/// Where the Kafka log is and how to reach it.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `HOST:PORT,...`, as librdkafka's `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
    /// The compacted topic that holds the sites' settings, shared by every node.
    pub settings_topic: String,
    /// The compacted topic that holds the keys personal data is sealed with.
    pub keys_topic: String,
    /// The topic of the trigger outbox: what fired, each delivery attempt, and which
    /// engine node sends.
    pub outbox_topic: String,
    /// librdkafka properties passed through as they are (TLS, SASL, timeouts...). Their
    /// values (a SASL password among them) are never logged.
    pub properties: Vec<(String, String)>,
}

impl LogSpec {
    /// The embedded log in `dir`, with the default settings.
    pub fn file(dir: impl Into<PathBuf>) -> LogSpec {
        LogSpec::File {
            dir: dir.into(),
            config: FileLogConfig::default(),
        }
    }
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The properties' values may be secrets (a SASL password): their keys only.
        let keys: Vec<&str> = self
            .properties
            .iter()
            .map(|(key, _)| key.as_str())
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("settings_topic", &self.settings_topic)
            .field("keys_topic", &self.keys_topic)
            .field("outbox_topic", &self.outbox_topic)
            .field("properties", &keys)
            .finish()
    }
}

impl LogSpec {
    /// Which log this is, as a line to keep beside what was derived from it (snapshots):
    /// the same for every start on the same log, different for another.
    pub fn identity(&self) -> String {
        match self {
            LogSpec::File { .. } => "file".into(),
            LogSpec::Kafka(kafka) => format!("kafka {} {}", kafka.brokers, kafka.topic),
        }
    }
}

impl std::fmt::Display for LogSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogSpec::File { dir, .. } => write!(f, "the event log in {}", dir.display()),
            LogSpec::Kafka(kafka) => write!(
                f,
                "the event log on Kafka topic {} at {}",
                kafka.topic, kafka.brokers
            ),
        }
    }
}

/// Opens the log `spec` names for appending and reading (one writer at a time), recovering
/// it from a crash first. `observer` is told of every durable commit.
pub fn open(
    spec: &LogSpec,
    observer: Option<CommitObserver>,
) -> Result<Arc<dyn EventLog>, LogError> {
    match spec {
        LogSpec::File { dir, config } => {
            Ok(Arc::new(FileLog::open(dir, config.clone(), observer)?))
        }
        #[cfg(feature = "kafka")]
        LogSpec::Kafka(kafka) => Ok(Arc::new(kafka::KafkaLog::open(kafka.clone())?)),
        #[cfg(not(feature = "kafka"))]
        LogSpec::Kafka(_) => Err(LogError::Unsupported(
            "Kafka (built without the kafka feature)",
        )),
    }
}

/// Opens the log `spec` names for reading only, beside a server that may be appending to it.
pub fn open_read_only(spec: &LogSpec) -> Result<Arc<dyn EventLog>, LogError> {
    match spec {
        LogSpec::File { dir, .. } => Ok(Arc::new(FileLog::open_read_only(dir)?)),
        #[cfg(feature = "kafka")]
        LogSpec::Kafka(kafka) => Ok(Arc::new(kafka::KafkaLog::open_read_only(kafka.clone())?)),
        #[cfg(not(feature = "kafka"))]
        LogSpec::Kafka(_) => Err(LogError::Unsupported(
            "Kafka (built without the kafka feature)",
        )),
    }
}

/// Where the sites' settings are shared between the nodes of one log, when they are: on
/// a Kafka log, a compacted topic beside the events' one. The embedded log has no
/// other node to share with; its settings stay in the data directory's files alone.
pub fn open_shared_table(spec: &LogSpec) -> Result<Option<Arc<dyn SharedTable>>, LogError> {
    match spec {
        LogSpec::File { .. } => Ok(None),
        #[cfg(feature = "kafka")]
        LogSpec::Kafka(kafka) => Ok(Some(Arc::new(kafka::KafkaTable::open(
            kafka,
            kafka::TableKind::Settings,
        )?))),
        #[cfg(not(feature = "kafka"))]
        LogSpec::Kafka(_) => Err(LogError::Unsupported(
            "Kafka (built without the kafka feature)",
        )),
    }
}

/// Where a log that cannot be rewritten keeps the keys its records' personal parts are
/// sealed with (see [`Keyring`]): on a Kafka log, a compacted topic beside the events'
/// one. `None` for the embedded log, which erases by rewriting records in place.
pub fn open_keyring(spec: &LogSpec) -> Result<Option<Arc<Keyring>>, LogError> {
    match spec {
        LogSpec::File { .. } => Ok(None),
        #[cfg(feature = "kafka")]
        LogSpec::Kafka(kafka) => {
            let table = kafka::KafkaTable::open(kafka, kafka::TableKind::Keys)?;
            Ok(Some(Keyring::open(Arc::new(table))?))
        }
        #[cfg(not(feature = "kafka"))]
        LogSpec::Kafka(_) => Err(LogError::Unsupported(
            "Kafka (built without the kafka feature)",
        )),
    }
}

/// Where the engine nodes of a shared log keep their one trigger outbox: on a Kafka log, a
/// topic beside the events' one, which every engine node follows. `None` for the
/// embedded log, whose one process keeps its outbox in its data directory.
pub fn open_outbox_log(spec: &LogSpec) -> Result<Option<Arc<dyn EventLog>>, LogError> {
    match spec {
        LogSpec::File { .. } => Ok(None),
        #[cfg(feature = "kafka")]
        LogSpec::Kafka(kafka) => {
            let config = KafkaConfig {
                topic: kafka.outbox_topic.clone(),
                ..kafka.clone()
            };
            Ok(Some(Arc::new(kafka::KafkaLog::open(config)?)))
        }
        #[cfg(not(feature = "kafka"))]
        LogSpec::Kafka(_) => Err(LogError::Unsupported(
            "Kafka (built without the kafka feature)",
        )),
    }
}

/// Resolves once what [`SharedTable::put_all_later`] handed over is durable.
pub type PutFuture = Pin<Box<dyn Future<Output = Result<(), LogError>> + Send>>;

/// Waits for `future` on this thread, woken by whoever completes it: for blocking callers
/// of futures that need no runtime (librdkafka's deliveries).
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

/// A small table of values by key that every node holds whole and follows, last write
/// winning: what settings are shared through. Blocking: call it off the request runtimes.
pub trait SharedTable: Send + Sync + 'static {
    /// Stores `value` under `key` (`None` removes the key); returns once durable.
    fn put(&self, key: &str, value: Option<&[u8]>) -> Result<(), LogError>;

    /// [`SharedTable::put`] of several entries, in order; returns once all are durable.
    fn put_all(&self, entries: &[(&str, Option<&[u8]>)]) -> Result<(), LogError> {
        block_on(self.put_all_later(entries))
    }

    /// Hands `entries` over to be stored, in order after any handed over before, and
    /// returns at once: the future resolves once all are durable. Needs no runtime, and
    /// must not block (it is called with a lock held on a request's thread): the default,
    /// which stores at once, suits only tables in memory.
    fn put_all_later(&self, entries: &[(&str, Option<&[u8]>)]) -> PutFuture {
        let stored = entries
            .iter()
            .try_for_each(|(key, value)| self.put(key, *value));
        Box::pin(std::future::ready(stored))
    }

    /// A follower that returns every change the table holds, oldest first, then each
    /// new one as it comes.
    fn follow(&self) -> Result<Box<dyn TableFollower>, LogError>;

    /// Where the table is, for messages.
    fn describe(&self) -> String;

    /// `Err` once the table can no longer take writes until a restart (an idempotent
    /// producer's fatal error): for `/readyz`.
    fn health(&self) -> Result<(), LogError> {
        Ok(())
    }
}

/// A change of a [`SharedTable`]: `value` `None` for a removed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChange {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// Follows a [`SharedTable`] (see [`SharedTable::follow`]).
pub trait TableFollower: Send {
    /// The next changes, in the order they were stored; waits up to `wait` for one.
    fn next_changes(&mut self, wait: Duration) -> Result<Vec<TableChange>, LogError>;

    /// Every change not yet returned that was stored before this call: a table read as
    /// far as anyone has written it.
    fn read_to_end(&mut self) -> Result<Vec<TableChange>, LogError>;

    /// Whether every change stored before the follower was made has been returned.
    fn caught_up(&self) -> bool;
}

/// An ordered, durable sequence of opaque records.
///
/// Appending is asynchronous (a request's task waits for durability without holding a
/// thread); following is blocking, through a [`LogReader`] on a thread of its own, as a
/// consumer polls. The two sides are separate so that neither forces its style on the
/// other: a log whose reads wait on a network is never read from a request's runtime.
pub trait EventLog: Send + Sync + 'static {
    /// Appends `records` in order. The future resolves, to the position of the first record,
    /// only once all of them are durable: an acknowledged append survives a crash.
    fn append(&self, records: Vec<Vec<u8>>) -> AppendFuture;

    /// [`EventLog::append`] for records with keys: a partitioned log places a record by
    /// its key, so that records of one key keep their order together (spoor keys an event
    /// by its site); a log with one order for all ignores them.
    fn append_keyed(&self, records: Vec<Keyed>) -> AppendFuture {
        self.append(records.into_iter().map(|record| record.payload).collect())
    }

    /// A reader of the records at and after `from`, in order. Blocking: call it, and the
    /// reader, off the request runtimes (a thread of its own, or `spawn_blocking`).
    fn reader(&self, from: Position) -> Result<Box<dyn LogReader>, LogError>;

    /// The position the next appended record will get: the count of durable records.
    fn end(&self) -> Position;

    /// How busy the threads that append are, as the share of their time spent running
    /// (0 to 1), told a few times a second by the server. A log may trade latency for
    /// throughput with it: the file log waits longer between fsyncs while they are
    /// saturated, so each fsync covers more records.
    fn note_load(&self, busy: f64) {
        let _ = busy;
    }

    /// Called once, from within it, on each thread that runs one single-threaded runtime
    /// for its whole life and appends from it (an HTTP thread): the log may then answer
    /// that thread's appends a group at a time, by one wake-up of its runtime.
    fn attach_appending_thread(&self) {}

    /// Whether more than one process may append to this log (each ingest node of a
    /// shared log): a client's retry may then be stored twice, and the log's readers
    /// decide retries from the log itself (`spoor_protocol::retries`). A log with one
    /// writer never stores a retry within the window, so its readers need not hold it.
    fn several_writers(&self) -> bool {
        false
    }

    /// The position of the first record appended at or after `at_ms` (milliseconds since
    /// the epoch), when the log can say without reading it through: where a reader that
    /// needs only recent records starts. `None`: read from the beginning.
    fn position_at(&self, at_ms: i64) -> Result<Option<Position>, LogError> {
        let _ = at_ms;
        Ok(None)
    }

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

    /// Whether [`EventLog::redact`] works on this log (a log that cannot be rewritten
    /// needs another way to erase a person).
    fn can_redact(&self) -> bool {
        false
    }

    /// Replaces the record at each replacement's position with its payload, of exactly
    /// the same length, durably and, across a crash, all or none of them: how personal
    /// data is erased from the log without moving anything.
    fn redact(&self, replacements: &[Record]) -> Result<(), LogError> {
        let _ = replacements;
        Err(LogError::Unsupported("redact"))
    }
}

/// A record to append with its key (see [`EventLog::append_keyed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub key: Option<String>,
    pub payload: Vec<u8>,
}

/// Follows a log in order from a position: what rebuilds and keeps the state, scans and
/// exports read through.
pub trait LogReader: Send {
    /// The next records, at most `max`, in order; when there is none yet, waits up to
    /// `wait` for one. Empty when none came in time (at the end of the log, with `wait`
    /// zero, at once).
    fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError>;

    /// The position of the next record this reader returns.
    fn position(&self) -> Position;
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
