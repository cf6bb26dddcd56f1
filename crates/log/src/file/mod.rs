//! The embedded log: a directory of segment files written by one thread with group commit.
//!
//! Appenders hand their records to the writer thread over a channel. The writer takes
//! everything waiting, writes it with one `pwrite`, makes it durable with one `fdatasync`,
//! and only then answers each appender. While one fsync runs, the next group gathers, so
//! the number of fsyncs per second stays bounded by the disk while throughput grows with
//! the number of concurrent appenders.
//!
//! Segments are named by the position of their first record (`00000000000000000000.log`)
//! and preallocated (see [`segment`]). On open, every segment is checked record by record;
//! a torn write at the end of the last segment (a crash mid-write) is cleared, and damage
//! anywhere else stops the open.

mod journal;
mod segment;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::record::{self, HEADER_BYTES};
use crate::relay::{self, Answers, Relay, Reply};
use crate::{
    AppendFuture, EventLog, LogError, LogReader, MAX_RECORD_BYTES, Position, Record, free_bytes,
};
use segment::{Preparer, Segment, SegmentView, create_segment, read_segment, recover};

/// Appenders in one group from which the log counts as busy (see
/// [`FileLogConfig::commit_interval`]). Below it, waiting would only add latency.
pub const BUSY_GROUP: usize = 8;

/// Called after each durable commit with how long making it durable took (the file log's
/// fsync) and the records it covered.
pub type CommitObserver = Box<dyn Fn(Duration, usize) + Send + 'static>;

#[derive(Debug, Clone)]
pub struct FileLogConfig {
    /// The size each segment file is created at; a new segment starts when a group of
    /// records no longer fits.
    pub segment_bytes: u64,
    /// The most bytes one group commit writes before it syncs.
    pub max_group_bytes: usize,
    /// While the log is busy (the previous group had [`BUSY_GROUP`] appenders or more),
    /// fsyncs start at most this often: the writer waits out the rest of the interval
    /// before taking the next group, so each fsync covers more records. Every fsync costs
    /// the kernel CPU time; under load, fewer and larger groups leave more of it to the
    /// requests. A few concurrent appenders never wait. Zero disables the wait.
    pub commit_interval: Duration,
    /// The interval used instead while the appending threads are saturated (see
    /// [`EventLog::note_load`]): requests then queue for CPU anyway, so a longer wait
    /// costs them nothing while fewer fsyncs leave them more of it.
    pub saturated_commit_interval: Duration,
}

impl Default for FileLogConfig {
    fn default() -> Self {
        FileLogConfig {
            segment_bytes: 64 * 1024 * 1024,
            max_group_bytes: 4 * 1024 * 1024,
            commit_interval: Duration::from_millis(1),
            saturated_commit_interval: Duration::from_millis(4),
        }
    }
}

struct Shared {
    dir: PathBuf,
    segments: RwLock<Vec<Segment>>,
    end: AtomicU64,
    failed: AtomicBool,
    /// Signalled after every commit, for [`EventLog::wait_beyond`].
    appended: (Mutex<()>, Condvar),
    /// Readers hold it shared while reading records; a redaction holds it exclusively
    /// while it rewrites one, so no reader sees a record half rewritten.
    rewriting: RwLock<()>,
    /// The commit interval in use, in microseconds: one of the two of [`Pacing`].
    commit_interval_us: AtomicU64,
    pacing: Pacing,
    /// Set while the next segment cannot be started (a full disk), with why: appends
    /// are refused, and the writer tries again until it can.
    is_stalled: AtomicBool,
    stalled_by: Mutex<String>,
}

impl Shared {
    fn new(dir: &Path, segments: Vec<Segment>, pacing: Pacing) -> Shared {
        Shared {
            commit_interval_us: AtomicU64::new(pacing.base.as_micros() as u64),
            pacing,
            dir: dir.to_path_buf(),
            end: AtomicU64::new(segments.last().map_or(0, Segment::end)),
            segments: RwLock::new(segments),
            failed: AtomicBool::new(false),
            appended: (Mutex::new(()), Condvar::new()),
            rewriting: RwLock::new(()),
            is_stalled: AtomicBool::new(false),
            stalled_by: Mutex::new(String::new()),
        }
    }

    fn stalled(&self) -> Option<String> {
        if !self.is_stalled.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.stalled_by
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }

    /// Marks the log stalled by `error`; returns why, as appends are told.
    fn stall(&self, error: &LogError) -> String {
        let reason = match error {
            LogError::Stalled(reason) => reason.clone(),
            other => other.to_string(),
        };
        reason.clone_into(
            &mut self
                .stalled_by
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if !self.is_stalled.swap(true, Ordering::AcqRel) {
            tracing::error!(
                %reason,
                "the log cannot start its next segment (a full disk?): appends are refused \
                 until it can; retrying every second"
            );
        }
        reason
    }

    fn read(&self, from: Position, max: usize) -> Result<Vec<Record>, LogError> {
        // Copy out what the read needs, so the writer is never held up by a reader's I/O.
        let views: Vec<(Position, SegmentView)> = {
            let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
            let first = segments.partition_point(|s| s.end() <= from);
            segments[first..]
                .iter()
                .map(|s| (s.base, s.view(from.max(s.base))))
                .collect()
        };
        let _no_rewrite = self
            .rewriting
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (base, view) in &views {
            if out.len() >= max {
                break;
            }
            read_segment(view, from.max(*base), max - out.len(), &mut out)?;
        }
        Ok(out)
    }

    fn end(&self) -> Position {
        self.end.load(Ordering::Acquire)
    }

    fn wait_beyond(&self, position: Position, timeout: Duration) -> Position {
        let (lock, appended) = &self.appended;
        let deadline = Instant::now() + timeout;
        let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let end = self.end();
            let now = Instant::now();
            if end > position || now >= deadline {
                return end;
            }
            guard = appended
                .wait_timeout(guard, deadline - now)
                .expect("append signal lock")
                .0;
        }
    }

    fn unstall(&self) {
        if self.is_stalled.load(Ordering::Acquire) {
            self.is_stalled.store(false, Ordering::Release);
            tracing::info!("the log started its next segment: appends are taken again");
        }
    }
}

/// The commit interval's two settings, and when to use which. When the appending threads
/// are busy nearly all the time, requests queue for CPU anyway: a longer wait costs them
/// nothing while fewer fsyncs leave them more CPU. When they have idle time, a longer wait
/// only adds latency, and with few concurrent clients it caps their throughput (each
/// waits a whole interval per event). A gap between the two thresholds keeps the interval
/// from flapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Pacing {
    base: Duration,
    saturated: Duration,
}

/// Share of the appending threads' time spent running at which they count as saturated.
const SATURATED_BUSY: f64 = 0.92;
/// Share below which they no longer do.
const RELAXED_BUSY: f64 = 0.85;

impl Pacing {
    /// The interval to use next, given the current one and the appenders' busy share.
    fn next(&self, current: Duration, busy: f64) -> Duration {
        if busy >= SATURATED_BUSY {
            self.saturated
        } else if busy < RELAXED_BUSY {
            self.base
        } else {
            current
        }
    }
}

/// A [`LogReader`] of the file log: reads the segments directly, waiting on the writer's
/// signal at the end.
struct FileLogReader {
    shared: Arc<Shared>,
    next: Position,
}

impl LogReader for FileLogReader {
    fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        if !wait.is_zero() && self.shared.end() <= self.next {
            self.shared.wait_beyond(self.next, wait);
        }
        let records = self.shared.read(self.next, max)?;
        if let Some(last) = records.last() {
            self.next = last.position + 1;
        }
        Ok(records)
    }

    fn position(&self) -> Position {
        self.next
    }
}

/// How often a stalled writer tries again to start its next segment.
const STALLED_RETRY: Duration = Duration::from_secs(1);

/// Why a group was not written.
enum WriteFailure {
    /// Before any of it reached the segment (its next segment could not be started):
    /// the log is as it was, and may take the next group.
    NotWritten(LogError),
    /// Part may have reached the segment, or a sync failed: the page cache can no longer
    /// be trusted to match the disk.
    Failed(LogError),
}

struct AppendRequest {
    records: Vec<Vec<u8>>,
    reply: Reply,
    /// Where the answer goes when the appending thread has a relay.
    relay: Option<Arc<Relay>>,
}

/// The embedded, file-backed [`EventLog`].
pub struct FileLog {
    /// Held while open for writing: one writer per directory.
    _lock: Option<File>,
    shared: Arc<Shared>,
    sender: Option<mpsc::Sender<AppendRequest>>,
    writer: Option<JoinHandle<()>>,
}

impl FileLog {
    /// Opens (creating if needed) the log in `dir` for appending, recovering from a crash.
    pub fn open(
        dir: &Path,
        config: FileLogConfig,
        observer: Option<CommitObserver>,
    ) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError::io(format!("create {}", dir.display()), e))?;
        let lock = lock_dir(dir)?;
        let redone = journal::redo(dir)?;
        if redone > 0 {
            tracing::warn!(
                records = redone,
                "a redaction was cut short by a stop: its rewrites were done again"
            );
        }
        let mut segments = recover(dir, true)?;
        if segments.is_empty() {
            segments.push(create_segment(dir, 0, config.segment_bytes, None)?);
        }
        let preparer = Preparer::start(dir, config.segment_bytes)?;
        preparer.request();
        let tail = segments.last().expect("at least one segment");
        let file = open_for_writing(&tail.path)?;
        let pacing = Pacing {
            base: config.commit_interval,
            saturated: config.saturated_commit_interval,
        };
        let shared = Arc::new(Shared::new(dir, segments, pacing));
        let (sender, receiver) = mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            file,
            config,
            observer,
            preparer,
            buf: Vec::new(),
        };
        let failed = shared.clone();
        let writer = std::thread::Builder::new()
            .name("spoor-log-writer".into())
            .spawn(move || {
                // A panic here would leave appends unanswered with the log still looking
                // healthy: it fails the log instead, as a failed write does (readiness
                // says so, appends are refused, a restart recovers).
                let ran =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.run(receiver)));
                if ran.is_err() {
                    failed.failed.store(true, Ordering::Release);
                    tracing::error!(
                        "the log writer panicked; the log refuses writes until a restart"
                    );
                }
            })
            .map_err(|e| LogError::io("start the log writer thread", e))?;
        Ok(FileLog {
            _lock: Some(lock),
            shared,
            sender: Some(sender),
            writer: Some(writer),
        })
    }

    /// Opens the log for reading only, alongside a server that may be appending to it.
    /// Nothing is repaired: a torn tail is simply where reading stops.
    pub fn open_read_only(dir: &Path) -> Result<Self, LogError> {
        // A rewrite under way may be read half done; a writer's open finishes it first.
        if journal::exists(dir) {
            return Err(LogError::RedactionUnfinished);
        }
        let segments = recover(dir, false)?;
        Ok(FileLog {
            _lock: None,
            shared: Arc::new(Shared::new(dir, segments, Pacing::default())),
            sender: None,
            writer: None,
        })
    }

    /// Where `replacement` goes and its bytes, once checked to be exactly as long as the
    /// record it replaces.
    fn rewrite_of(&self, replacement: &Record) -> Result<journal::Rewrite, LogError> {
        let position = replacement.position;
        let (base, path, offset) = {
            let segments = self
                .shared
                .segments
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let index = segments.partition_point(|s| s.end() <= position);
            let segment = segments
                .get(index)
                .filter(|s| s.base <= position && position < s.end())
                .ok_or_else(|| LogError::CannotRedact {
                    position,
                    reason: "no such record".into(),
                })?;
            (
                segment.base,
                segment.path.clone(),
                segment.offset_of(position)?,
            )
        };
        let len = segment::record_length(&path, offset)?;
        if len != replacement.payload.len() {
            return Err(LogError::CannotRedact {
                position,
                reason: format!(
                    "replacement is {} bytes, the record {len}",
                    replacement.payload.len()
                ),
            });
        }
        let mut record = Vec::with_capacity(HEADER_BYTES + len);
        record::encode_into(&mut record, position, &replacement.payload);
        Ok(journal::Rewrite {
            segment_base: base,
            offset,
            record,
        })
    }

    /// The commit interval in use (see [`EventLog::note_load`]).
    pub fn commit_interval(&self) -> Duration {
        Duration::from_micros(self.shared.commit_interval_us.load(Ordering::Relaxed))
    }

    /// Up to `max` records at or after `from`, in order; empty at the end of the log.
    pub fn read(&self, from: Position, max: usize) -> Result<Vec<Record>, LogError> {
        self.shared.read(from, max)
    }

    /// Blocks until the log holds a record at `position` (its end is beyond it) or
    /// `timeout` passes; returns the end.
    pub fn wait_beyond(&self, position: Position, timeout: Duration) -> Position {
        self.shared.wait_beyond(position, timeout)
    }

    /// Whether a write or fsync has failed (the log then refuses further appends).
    pub fn has_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Deletes the closed segments whose records all lie before `position`, oldest
    /// first, so a crash midway leaves the log contiguous; the segment being written is
    /// kept. For logs whose owner knows its old records are no longer needed (the
    /// triggers' outbox); the event log keeps everything. Returns the segments deleted.
    pub fn remove_before(&self, position: Position) -> Result<usize, LogError> {
        if self.sender.is_none() {
            return Err(LogError::ReadOnly);
        }
        let mut removed = 0;
        loop {
            let path = {
                let mut segments = self
                    .shared
                    .segments
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                match segments.first() {
                    Some(oldest) if segments.len() > 1 && oldest.end() <= position => {
                        segments.remove(0).path
                    }
                    _ => break,
                }
            };
            // Readers copied their views before; one may still hold the file open, which
            // keeps its bytes readable until it closes.
            let _no_rewrite = self
                .shared
                .rewriting
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            std::fs::remove_file(&path)
                .map_err(|e| LogError::io(format!("delete {}", path.display()), e))?;
            let _ = std::fs::remove_file(path.with_extension("idx"));
            // Each deletion durable before the next: a crash must never keep an older
            // segment whose successor is gone, which would leave a gap at the next open.
            segment::sync_dir(&self.shared.dir)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Stops the writer after it has finished every append already handed to it.
    pub fn close(&mut self) {
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }

    fn submit(
        &self,
        records: Vec<Vec<u8>>,
    ) -> Result<oneshot::Receiver<Result<Position, LogError>>, LogError> {
        let sender = self.sender.as_ref().ok_or(LogError::ReadOnly)?;
        if let Some(big) = records.iter().find(|r| r.len() > MAX_RECORD_BYTES) {
            return Err(LogError::RecordTooLarge(big.len()));
        }
        if self.has_failed() {
            return Err(LogError::Failed);
        }
        let (reply, receiver) = oneshot::channel();
        let relay = relay::current();
        sender
            .send(AppendRequest {
                records,
                reply,
                relay,
            })
            .map_err(|_| LogError::Closed)?;
        Ok(receiver)
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl EventLog for FileLog {
    fn append(&self, records: Vec<Vec<u8>>) -> AppendFuture {
        let submitted = self.submit(records);
        Box::pin(async move { submitted?.await.map_err(|_| LogError::Closed)? })
    }

    fn reader(&self, from: Position) -> Result<Box<dyn LogReader>, LogError> {
        Ok(Box::new(FileLogReader {
            shared: self.shared.clone(),
            next: from,
        }))
    }

    fn end(&self) -> Position {
        self.shared.end()
    }

    fn note_load(&self, busy: f64) {
        let current = self.commit_interval();
        let next = self.shared.pacing.next(current, busy);
        if next != current {
            tracing::debug!(
                busy,
                interval_us = next.as_micros() as u64,
                "log commit interval"
            );
            (self.shared.commit_interval_us).store(next.as_micros() as u64, Ordering::Relaxed);
        }
    }

    fn attach_appending_thread(&self) {
        relay::install();
    }

    fn can_redact(&self) -> bool {
        true
    }

    fn redact(&self, replacements: &[Record]) -> Result<(), LogError> {
        if self.sender.is_none() {
            return Err(LogError::ReadOnly);
        }
        if replacements.is_empty() {
            return Ok(());
        }
        let _exclusive = self
            .shared
            .rewriting
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let rewrites = replacements
            .iter()
            .map(|replacement| self.rewrite_of(replacement))
            .collect::<Result<Vec<_>, _>>()?;
        // Durable before the first rewrite, so that one cut short is redone at the next
        // open instead of read as a torn record.
        journal::write(&self.shared.dir, &rewrites)?;
        crate::fault::crash_point("redaction_journaled");
        if crate::fault::armed("redaction_half_rewritten") {
            journal::apply(&self.shared.dir, &rewrites[..rewrites.len() / 2])?;
            crate::fault::crash_point("redaction_half_rewritten");
        }
        journal::apply(&self.shared.dir, &rewrites)?;
        crate::fault::crash_point("redaction_rewritten");
        journal::clear(&self.shared.dir)
    }

    fn size_bytes(&self) -> Option<u64> {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Some(segments.iter().map(|s| s.len).sum())
    }

    fn health(&self) -> Result<(), LogError> {
        if self.sender.is_none() {
            return Err(LogError::ReadOnly);
        }
        if self.has_failed() {
            return Err(LogError::Failed);
        }
        match self.shared.stalled() {
            Some(reason) => Err(LogError::Stalled(reason)),
            None => Ok(()),
        }
    }
}

fn open_for_writing(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| LogError::io(format!("open {}", path.display()), e))
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    config: FileLogConfig,
    observer: Option<CommitObserver>,
    preparer: Preparer,
    buf: Vec<u8>,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<AppendRequest>) {
        let mut busy = false;
        let mut last_commit = Instant::now();
        loop {
            let first = if self.shared.is_stalled.load(Ordering::Acquire) {
                match receiver.recv_timeout(STALLED_RETRY) {
                    Ok(first) => first,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.retry_stalled();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match receiver.recv() {
                    Ok(first) => first,
                    Err(_) => break,
                }
            };
            let since = last_commit.elapsed();
            let interval =
                Duration::from_micros(self.shared.commit_interval_us.load(Ordering::Relaxed));
            if busy && since < interval {
                std::thread::sleep(interval - since);
            }
            last_commit = Instant::now();
            let mut group = vec![first];
            let mut bytes: usize = group[0].records.iter().map(Vec::len).sum();
            while bytes < self.config.max_group_bytes {
                let Ok(next) = receiver.try_recv() else { break };
                bytes += next.records.iter().map(Vec::len).sum::<usize>();
                group.push(next);
            }
            busy = group.len() >= BUSY_GROUP;
            self.commit(group);
        }
    }

    /// Writes and syncs one group, then answers every appender in it.
    fn commit(&mut self, group: Vec<AppendRequest>) {
        let mut answers = Answers::default();
        let written = if self.shared.failed.load(Ordering::Acquire) {
            Err(None)
        } else {
            let start = self.shared.end.load(Ordering::Acquire);
            match self.write_group(&group, start) {
                Ok(()) => Ok(start),
                Err(WriteFailure::NotWritten(error)) => Err(Some(self.shared.stall(&error))),
                Err(WriteFailure::Failed(error)) => {
                    // After a failed fsync the page cache can no longer be trusted to match
                    // the disk, so refuse all further writes; a restart recovers from what is
                    // on disk.
                    tracing::error!(%error, "log write failed; refusing further appends");
                    self.shared.failed.store(true, Ordering::Release);
                    Err(None)
                }
            }
        };
        let mut next = written;
        for request in group {
            let answer = match &mut next {
                Ok(position) => {
                    let first = *position;
                    *position += request.records.len() as u64;
                    Ok(first)
                }
                Err(Some(reason)) => Err(LogError::Stalled(reason.clone())),
                Err(None) => Err(LogError::Failed),
            };
            answers.answer(request.reply, request.relay, answer);
        }
        answers.deliver();
    }

    /// Tries again to start the next segment of a stalled log, once the disk has room
    /// for one (not before: a try writes zeros until the disk is full again).
    fn retry_stalled(&mut self) {
        let room = free_bytes(&self.shared.dir);
        if room.is_some_and(|room| room < self.config.segment_bytes) {
            return;
        }
        let (len, _) = self.tail_len_and_capacity();
        if len == 0 {
            self.shared.unstall();
            return;
        }
        match self.roll(self.shared.end.load(Ordering::Acquire)) {
            Ok(()) => {}
            Err(WriteFailure::NotWritten(error)) => {
                self.shared.stall(&error);
            }
            Err(WriteFailure::Failed(error)) => {
                tracing::error!(%error, "starting a log segment failed; refusing further appends");
                self.shared.failed.store(true, Ordering::Release);
            }
        }
    }

    fn write_group(
        &mut self,
        group: &[AppendRequest],
        start: Position,
    ) -> Result<(), WriteFailure> {
        let records = group.iter().flat_map(|r| r.records.iter());
        let count = group.iter().map(|r| r.records.len()).sum::<usize>();
        self.buf.clear();
        let mut layout = Vec::with_capacity(count);
        for (i, payload) in records.enumerate() {
            let offset = self.buf.len() as u64;
            record::encode_into(&mut self.buf, start + i as u64, payload);
            layout.push((offset, (HEADER_BYTES + payload.len()) as u64));
        }
        let (len, capacity) = self.tail_len_and_capacity();
        let (at, capacity) = if len > 0 && len + self.buf.len() as u64 > capacity {
            self.may_roll()?;
            self.roll(start)?;
            (0, self.tail_len_and_capacity().1)
        } else {
            (len, capacity)
        };
        pad_to_page_end(&mut self.buf, at, capacity);
        // Into space the segment's zeros already hold: a full disk does not fail it.
        self.file
            .write_all_at(&self.buf, at)
            .map_err(|e| WriteFailure::Failed(LogError::io("write to the log", e)))?;
        let sync_start = Instant::now();
        self.file
            .sync_data()
            .map_err(|e| WriteFailure::Failed(LogError::io("fsync the log", e)))?;
        if let Some(observer) = &self.observer {
            observer(sync_start.elapsed(), count);
        }
        let mut segments = self
            .shared
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let tail = segments.last_mut().expect("at least one segment");
        for (offset, len) in layout {
            tail.note_record(at + offset, len);
        }
        tail.capacity = tail.capacity.max(tail.len);
        self.shared
            .end
            .store(start + count as u64, Ordering::Release);
        drop(segments);
        let (lock, appended) = &self.shared.appended;
        // Taking the lock orders this signal after a waiter's check of `end`.
        drop(lock.lock().unwrap_or_else(PoisonError::into_inner));
        appended.notify_all();
        Ok(())
    }

    fn tail_len_and_capacity(&self) -> (u64, u64) {
        let segments = self
            .shared
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        segments.last().map_or((0, 0), |s| (s.len, s.capacity))
    }

    /// Starts a new segment at `base` and asks for the one after it to be prepared.
    ///
    /// Until the new segment's name is in place, a failure changes nothing: the log goes
    /// on in its current segment and tries again later ([`WriteFailure::NotWritten`]).
    /// Once it is, the log cannot go on writing in the old one (a start would take the
    /// new, empty segment for the last and lose what followed), so a failure is final.
    fn roll(&mut self, base: Position) -> Result<(), WriteFailure> {
        let dir = self.shared.dir.clone();
        let not_written = WriteFailure::NotWritten;
        let prepared = segment::prepare_file(&dir, self.config.segment_bytes, Some(&self.preparer))
            .map_err(not_written)?;
        let file = open_for_writing(&prepared).map_err(not_written)?;
        let segment = segment::install(&dir, base, &prepared).map_err(not_written)?;
        segment::sync_dir(&dir).map_err(WriteFailure::Failed)?;
        {
            // The segment being closed holds only durable records: index it, so a start
            // need not read it through.
            let segments = self
                .shared
                .segments
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let closing = segments.last().expect("at least one segment");
            if let Err(error) = segment::write_index(closing) {
                tracing::warn!(%error, "writing a segment index failed; the next start reads the segment");
            }
        }
        self.file = file;
        self.preparer.request();
        self.shared
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(segment);
        self.shared.unstall();
        Ok(())
    }

    /// Whether a roll is to be tried now: not while the log is stalled and the disk has
    /// no room for a segment (a try would write zeros until the disk is full, then delete
    /// them, for each group).
    fn may_roll(&self) -> Result<(), WriteFailure> {
        if !self.shared.is_stalled.load(Ordering::Acquire) {
            return Ok(());
        }
        match free_bytes(&self.shared.dir) {
            Some(room) if room < self.config.segment_bytes => {
                Err(WriteFailure::NotWritten(LogError::Stalled(format!(
                    "{room} bytes free on its disk, a segment needs {}",
                    self.config.segment_bytes
                ))))
            }
            _ => Ok(()),
        }
    }
}

/// Extends the write of `buf` at `at` with zeros up to the end of its last page, within
/// the segment's `capacity`. The file holds zeros there already, so nothing changes on
/// disk; but a write that ends mid-page into a page not in the cache makes the kernel read
/// that page from the disk first, and a prepared segment's pages are not in the cache
/// (its zeros were written by direct I/O). Whole pages are written without a read, and the
/// next group's first page is then the cached one this group wrote.
fn pad_to_page_end(buf: &mut Vec<u8>, at: u64, capacity: u64) {
    const PAGE: u64 = crate::stepped::DIRECT_IO_ALIGN as u64;
    let end = at + buf.len() as u64;
    let padded_end = end.next_multiple_of(PAGE).min(capacity.max(end));
    buf.resize(buf.len() + (padded_end - end) as usize, 0);
}

/// Takes the directory's writer lock, released when the process exits however it exits.
fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(format!("open {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::Locked(dir.display().to_string())),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(LogError::io(format!("lock {}", path.display()), e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segment::segment_path;
    use std::fs;

    fn segment_files(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log")
            })
            .count()
    }

    /// Byte length of the records in the first segment.
    fn data_len(dir: &Path) -> u64 {
        let log = FileLog::open_read_only(dir).unwrap();
        let segments = log.shared.segments.read().unwrap();
        segments[0].len
    }

    fn small_segments() -> FileLogConfig {
        FileLogConfig {
            segment_bytes: 256,
            max_group_bytes: 1024,
            commit_interval: Duration::from_millis(1),
            saturated_commit_interval: Duration::from_millis(4),
        }
    }

    fn payloads(log: &FileLog) -> Vec<String> {
        log.read(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.payload).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn appends_are_read_back_in_order_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let expected: Vec<String> = (0..100).map(|i| format!("record-{i}")).collect();
        {
            let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
            for chunk in expected.chunks(7) {
                let records = chunk.iter().map(|s| s.as_bytes().to_vec()).collect();
                log.append(records).await.unwrap();
            }
            assert_eq!(log.end(), 100);
            assert_eq!(payloads(&log), expected);
            assert!(segment_files(dir.path()) > 3);
        }
        let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
        assert_eq!(log.end(), 100);
        assert_eq!(payloads(&log), expected);
        let middle = log.read(42, 3).unwrap();
        assert_eq!(
            middle.iter().map(|r| r.position).collect::<Vec<_>>(),
            [42, 43, 44]
        );
        assert_eq!(log.append(vec![b"next".to_vec()]).await.unwrap(), 100);
    }

    #[tokio::test]
    async fn old_segments_can_be_deleted_and_the_log_reopens_from_the_first_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
        for chunk in (0..100).collect::<Vec<u32>>().chunks(7) {
            let records = chunk.iter().map(|i| format!("record-{i}").into_bytes());
            log.append(records.collect()).await.unwrap();
        }
        let before = segment_files(dir.path());
        assert!(log.remove_before(50).unwrap() > 0);
        assert!(segment_files(dir.path()) < before);
        let first = log.read(0, 1).unwrap()[0].position;
        assert!(first > 0 && first <= 50, "the first kept record is {first}");
        let left = segment_files(dir.path());
        assert_eq!(log.remove_before(u64::MAX).unwrap(), left - 1);
        assert_eq!(
            segment_files(dir.path()),
            1,
            "the segment being written stays"
        );
        drop(log);
        let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
        assert_eq!(log.end(), 100);
        assert_eq!(log.append(vec![b"next".to_vec()]).await.unwrap(), 100);
        let kept = log.read(0, 1_000).unwrap();
        assert_eq!(kept.last().unwrap().payload, b"next");
    }

    #[tokio::test]
    async fn concurrent_appends_share_fsyncs_and_get_distinct_positions() {
        let dir = tempfile::tempdir().unwrap();
        let groups = Arc::new(AtomicU64::new(0));
        let counter = groups.clone();
        let observer: CommitObserver = Box::new(move |_, _| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        let log = Arc::new(FileLog::open(dir.path(), small_segments(), Some(observer)).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(
                    async move { log.append(vec![format!("{i}").into_bytes()]).await.unwrap() },
                )
            })
            .collect();
        let mut positions = Vec::new();
        for task in tasks {
            positions.push(task.await.unwrap());
        }
        positions.sort_unstable();
        assert_eq!(positions, (0..200).collect::<Vec<_>>());
        assert!(groups.load(Ordering::Relaxed) <= 200);
    }

    #[tokio::test]
    async fn torn_tail_is_cleared_on_open_and_nothing_before_it_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
            log.append(vec![b"one".to_vec(), b"two".to_vec()])
                .await
                .unwrap();
        }
        let path = segment_path(dir.path(), 0);
        let capacity = fs::metadata(&path).unwrap().len();
        let end = data_len(dir.path());
        // A crash mid-write: half of a record that was never acknowledged.
        let mut torn = Vec::new();
        record::encode_into(&mut torn, 2, b"three-never-acknowledged");
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&torn[..torn.len() / 2], end).unwrap();
        drop(file);

        let reader = FileLog::open_read_only(dir.path()).unwrap();
        assert_eq!(payloads(&reader), ["one", "two"]);
        let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(
            bytes.len() as u64,
            capacity,
            "the preallocated size is kept"
        );
        assert!(
            bytes[end as usize..].iter().all(|b| *b == 0),
            "the torn write is cleared"
        );
        assert_eq!(log.append(vec![b"three".to_vec()]).await.unwrap(), 2);
        assert_eq!(payloads(&log), ["one", "two", "three"]);
    }

    #[tokio::test]
    async fn segments_are_preallocated_and_prepared_files_left_over_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
            log.append(vec![b"x".to_vec()]).await.unwrap();
        }
        let first = segment_path(dir.path(), 0);
        assert_eq!(
            fs::metadata(&first).unwrap().len(),
            small_segments().segment_bytes
        );
        fs::write(dir.path().join("prepared-7.tmp"), b"half made").unwrap();
        let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
        assert!(!dir.path().join("prepared-7.tmp").exists());
        assert_eq!(payloads(&log), ["x"]);
    }

    #[tokio::test]
    async fn damage_before_the_tail_is_reported_on_read_or_refuses_the_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
            for i in 0..40 {
                log.append(vec![format!("record-{i:04}").into_bytes()])
                    .await
                    .unwrap();
            }
        }
        let first = segment_path(dir.path(), 0);
        assert!(
            dir.path().join("00000000000000000000.idx").exists(),
            "a closed segment is indexed"
        );
        let mut bytes = fs::read(&first).unwrap();
        bytes[HEADER_BYTES + 2] ^= 0xFF;
        fs::write(&first, bytes).unwrap();

        // Indexed: the start does not read the closed segment, a read of it reports damage.
        let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
        assert_eq!(log.end(), 40);
        assert!(matches!(
            log.read(0, 1),
            Err(LogError::Corrupt { offset: 0, .. })
        ));
        drop(log);
        // Without its index file, the start reads the segment and refuses.
        fs::remove_file(dir.path().join("00000000000000000000.idx")).unwrap();
        let err = FileLog::open(dir.path(), small_segments(), None)
            .err()
            .unwrap();
        assert!(matches!(err, LogError::Corrupt { offset: 0, .. }), "{err}");
    }

    #[tokio::test]
    async fn index_files_give_the_same_log_as_reading_every_segment() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
            for i in 0..100 {
                log.append(vec![format!("record-{i}").into_bytes()])
                    .await
                    .unwrap();
            }
        }
        let indexed = FileLog::open_read_only(dir.path()).unwrap();
        let with_index = payloads(&indexed);
        let middle = indexed.read(57, 3).unwrap();
        drop(indexed);
        for entry in fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "idx") {
                fs::remove_file(path).unwrap();
            }
        }
        let scanned = FileLog::open_read_only(dir.path()).unwrap();
        assert_eq!(payloads(&scanned), with_index);
        assert_eq!(scanned.read(57, 3).unwrap(), middle);
        assert_eq!(with_index.len(), 100);
        // A writable open writes the missing index files again.
        drop(scanned);
        let _log = FileLog::open(dir.path(), small_segments(), None).unwrap();
        assert!(dir.path().join("00000000000000000000.idx").exists());
    }

    #[tokio::test]
    async fn a_record_is_redacted_in_place_and_reads_back_changed_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
            for i in 0..40 {
                log.append(vec![format!("record-{i:02}-secret").into_bytes()])
                    .await
                    .unwrap();
            }
            log.redact(&[replacement(3), replacement(17)]).unwrap();
            let too_long = log.redact(&[replacement(5), record(18, "a longer replacement")]);
            assert!(matches!(too_long, Err(LogError::CannotRedact { .. })));
            assert!(log.redact(&[record(99, "x")]).is_err());
        }
        let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
        let all = payloads(&log);
        assert_eq!(all.len(), 40);
        assert_eq!(all[3], "record-03-XXXXXX");
        assert_eq!(all[17], "record-17-XXXXXX");
        assert_eq!(all[5], "record-05-secret", "all or none: none");
        assert_eq!(all[18], "record-18-secret");
        let on_disk: Vec<u8> = fs::read_dir(dir.path())
            .unwrap()
            .flat_map(|e| fs::read(e.unwrap().path()).unwrap_or_default())
            .collect();
        assert!(!on_disk.windows(16).any(|w| w == b"record-17-secret"));
        assert!(!dir.path().join("redactions.journal").exists());
    }

    fn record(position: Position, payload: &str) -> Record {
        Record {
            position,
            payload: payload.as_bytes().to_vec(),
        }
    }

    /// Record `n` of the tests' logs with its secret overwritten.
    fn replacement(n: Position) -> Record {
        record(n, &format!("record-{n:02}-XXXXXX"))
    }

    /// A crash (power loss) in the middle of a redaction: its journal is written, and each
    /// rewrite reached the disk only in part.
    async fn log_with_torn_rewrites(dir: &Path, torn: &[Position]) {
        let log = FileLog::open(dir, small_segments(), None).unwrap();
        for i in 0..40 {
            log.append(vec![format!("record-{i:02}-secret").into_bytes()])
                .await
                .unwrap();
        }
        let replacements: Vec<Record> = torn.iter().map(|n| replacement(*n)).collect();
        let rewrites: Vec<journal::Rewrite> = (replacements.iter())
            .map(|r| log.rewrite_of(r).unwrap())
            .collect();
        journal::write(dir, &rewrites).unwrap();
        for rewrite in &rewrites {
            let file = open_for_writing(&segment::segment_path(dir, rewrite.segment_base)).unwrap();
            let half = &rewrite.record[..rewrite.record.len() / 2 + 3];
            file.write_all_at(half, rewrite.offset).unwrap();
        }
    }

    #[tokio::test]
    async fn a_torn_rewrite_is_redone_at_open_and_never_read_as_a_torn_tail() {
        // Records 37 and 38 lie in the last segment, before 39; 2 in the first.
        let torn = [2, 37, 38];
        let dir = tempfile::tempdir().unwrap();
        log_with_torn_rewrites(dir.path(), &torn).await;

        // Without its journal, the same bytes lose the records after the tear, or refuse
        // to open: what the journal is for.
        let copy = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() != "redactions.journal" && path.is_file() {
                fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        match FileLog::open(copy.path(), small_segments(), None) {
            Ok(log) => assert!(log.end() < 40, "without the journal a tail is lost"),
            Err(error) => assert!(matches!(error, LogError::Corrupt { .. }), "{error}"),
        }

        let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
        let all = payloads(&log);
        assert_eq!(all.len(), 40, "every record is still there");
        for (n, payload) in all.iter().enumerate() {
            if torn.contains(&(n as Position)) {
                assert_eq!(payload, &format!("record-{n:02}-XXXXXX"));
            } else {
                assert_eq!(payload, &format!("record-{n:02}-secret"));
            }
        }
        assert!(!dir.path().join("redactions.journal").exists());
        log.append(vec![b"after".to_vec()]).await.unwrap();
        assert_eq!(log.end(), 41);
    }

    #[tokio::test]
    async fn a_journal_cut_short_before_its_rename_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
            for i in 0..10 {
                log.append(vec![format!("record-{i:02}-secret").into_bytes()])
                    .await
                    .unwrap();
            }
        }
        fs::write(dir.path().join("redactions.journal.tmp"), b"SPOORRJ1\x01").unwrap();
        let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
        assert_eq!(payloads(&log)[4], "record-04-secret");
        assert!(!dir.path().join("redactions.journal.tmp").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_running_beside_appends_see_a_consistent_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(FileLog::open(dir.path(), small_segments(), None).unwrap());
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut longest = 0;
                while longest < 300 {
                    let records = log.read(0, usize::MAX).unwrap();
                    for (i, record) in records.iter().enumerate() {
                        assert_eq!(record.position, i as u64);
                        assert_eq!(record.payload, format!("record-{i}").into_bytes());
                    }
                    longest = longest.max(records.len());
                }
            })
        };
        for i in 0..300 {
            log.append(vec![format!("record-{i}").into_bytes()])
                .await
                .unwrap();
        }
        reader.join().unwrap();
        assert!(segment_files(dir.path()) > 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_follows_the_log_across_segments_and_waits_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = crate::open(
            &crate::LogSpec::File {
                dir: dir.path().to_path_buf(),
                config: small_segments(),
            },
            None,
        )
        .unwrap();
        for i in 0..40 {
            log.append(vec![format!("record-{i}").into_bytes()])
                .await
                .unwrap();
        }
        let mut reader = log.reader(35).unwrap();
        let tail = reader.next_batch(100, Duration::ZERO).unwrap();
        assert_eq!(
            tail.iter().map(|r| r.position).collect::<Vec<_>>(),
            [35, 36, 37, 38, 39]
        );
        assert_eq!(reader.position(), 40);
        assert!(reader.next_batch(100, Duration::ZERO).unwrap().is_empty());
        // A reader at the end waits for the next append, and returns it.
        let follower = std::thread::spawn(move || {
            let batch = reader.next_batch(100, Duration::from_secs(30)).unwrap();
            (batch, reader.position())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        log.append(vec![b"record-40".to_vec()]).await.unwrap();
        let (batch, position) = follower.join().unwrap();
        assert_eq!(batch[0].payload, b"record-40");
        assert_eq!(position, 41);
        // From the start, in small batches, across every segment.
        let mut reader = log.reader(0).unwrap();
        let mut all = Vec::new();
        loop {
            let batch = reader.next_batch(3, Duration::ZERO).unwrap();
            if batch.is_empty() {
                break;
            }
            all.extend(
                batch
                    .into_iter()
                    .map(|r| String::from_utf8(r.payload).unwrap()),
            );
        }
        assert_eq!(
            all,
            (0..41).map(|i| format!("record-{i}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_commit_interval_lengthens_only_while_the_appenders_are_saturated() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileLog::open(dir.path(), small_segments(), None).unwrap();
        let (base, long) = (Duration::from_millis(1), Duration::from_millis(4));
        assert_eq!(log.commit_interval(), base);
        for (busy, expected) in [
            (0.40, base),
            (0.95, long),
            // Between the thresholds it stays where it is, either way.
            (0.88, long),
            (0.60, base),
            (0.88, base),
        ] {
            log.note_load(busy);
            assert_eq!(
                log.commit_interval(),
                expected,
                "after a busy share of {busy}"
            );
        }
    }

    #[test]
    fn a_second_writer_is_refused_while_the_first_holds_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileLog::open(dir.path(), small_segments(), None).unwrap();
        let second = FileLog::open(dir.path(), small_segments(), None);
        assert!(matches!(second, Err(LogError::Locked(_))));
        assert!(FileLog::open_read_only(dir.path()).is_ok());
        drop(first);
        assert!(FileLog::open(dir.path(), small_segments(), None).is_ok());
    }

    #[tokio::test]
    async fn records_larger_than_a_read_window_and_records_across_windows_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileLogConfig {
            segment_bytes: 4 * 1024 * 1024,
            ..FileLogConfig::default()
        };
        let log = FileLog::open(dir.path(), config, None).unwrap();
        // Sizes around and far beyond the 256 KiB read window, so records straddle it.
        let sizes = [10, 100_000, 700_000, 5, 90_000, 90_000, 90_000, 300_000, 1];
        let expected: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| vec![b'a' + i as u8; *n])
            .collect();
        for record in &expected {
            log.append(vec![record.clone()]).await.unwrap();
        }
        let all: Vec<Vec<u8>> = log
            .read(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|r| r.payload)
            .collect();
        assert_eq!(all, expected);
        for from in 0..sizes.len() as u64 {
            let two = log.read(from, 2).unwrap();
            assert_eq!(two[0].position, from);
            assert_eq!(two[0].payload, expected[from as usize]);
            assert!(two.len() == 2 || from == sizes.len() as u64 - 1);
        }
    }

    #[test]
    fn writes_are_padded_with_zeros_to_a_page_end_within_the_segment() {
        let mut buf = vec![1u8; 100];
        pad_to_page_end(&mut buf, 4000, 64 * 1024);
        assert_eq!(buf.len(), 8192 - 4000);
        assert!(buf[100..].iter().all(|b| *b == 0));
        // Already at a page end: nothing added.
        let mut buf = vec![1u8; 96];
        pad_to_page_end(&mut buf, 4000, 64 * 1024);
        assert_eq!(buf.len(), 96);
        // Never past the segment's size, nor cut short when a group overflows it.
        let mut buf = vec![1u8; 10];
        pad_to_page_end(&mut buf, 200, 256);
        assert_eq!(buf.len(), 56);
        let mut buf = vec![1u8; 100];
        pad_to_page_end(&mut buf, 200, 256);
        assert_eq!(buf.len(), 100);
    }

    #[tokio::test]
    async fn read_only_log_refuses_appends() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileLog::open_read_only(dir.path()).unwrap();
        assert!(matches!(
            log.append(vec![vec![1]]).await,
            Err(LogError::ReadOnly)
        ));
        assert_eq!(log.end(), 0);
    }
}
